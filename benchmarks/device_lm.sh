#!/bin/bash
# Issue 15 on a lent GPU: three causal LMs pretrained side by side on one GPU, each through
# benchmarks/lm_pretrain.py (held-out per-char perplexity, open-vocabulary figures included):
#   lm-char   char GPT on the sampler half of the corpus: the LM under CGMH and `chat --init`
#   lm-judge  the same model on the judge half: scores generated sentences it never trained on
#   lm-word   a word GPT (30k words) on the sampler half: the --unit word measurement
# CORPUS is an lm_corpus.py --judge-split output. The char checkpoints come back in bf16 (the loader casts
# them back to fp32), tarred with the result files and cut into pieces of 15 MB under OUT.
#   CORPUS=DIR OUT=DIR bash benchmarks/device_lm.sh [MINUTES]
MIN=${1:-4}
C=${CORPUS:-/tmp/nlpcli-lm-corpus}
OUT=${OUT:-/tmp/device-lm-out}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
common=(--minutes "$MIN" --device cuda --threads 4 --precision fp32 --pack true --overwrite)
$PY benchmarks/lm_pretrain.py --corpus "$C/split-sampler" --run /tmp/lm-char "${common[@]}" \
  --result lm_pretrain_sampler_gpu >/tmp/lm-char.log 2>&1 &
pids=($!)
$PY benchmarks/lm_pretrain.py --corpus "$C/split-judge" --run /tmp/lm-judge "${common[@]}" \
  --result lm_pretrain_judge_gpu >/tmp/lm-judge.log 2>&1 &
pids+=($!)
$PY benchmarks/lm_pretrain.py --corpus "$C/split-sampler" --run /tmp/lm-word "${common[@]}" \
  --unit word --vocab-size 30000 --result lm_pretrain_word_gpu >/tmp/lm-word.log 2>&1 &
pids+=($!)
word=$!
# The two char models first: their checkpoints come back even if the word model runs past the call's limit.
failed=0
for p in "${pids[@]:0:2}"; do wait "$p" || failed=$((failed + 1)); done
tail -n 4 /tmp/lm-char.log /tmp/lm-judge.log
mkdir -p /tmp/pack "$OUT"
for m in char judge; do
  rm -rf "/tmp/pack/lm-$m" && cp -r "/tmp/lm-$m/best" "/tmp/pack/lm-$m" || continue
  $PY - "/tmp/pack/lm-$m/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
p = sys.argv[1]
state = load_file(p)
save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in state.items()}, p)
PY
done
cp /tmp/lm-char.log /tmp/lm-judge.log benchmarks/results/lm_pretrain_*_gpu.json /tmp/pack/ 2>/dev/null
tar -C /tmp/pack -czf /tmp/pack.tgz . && split -b 15M -d /tmp/pack.tgz "$OUT/pack.tgz."
wait "$word" || failed=$((failed + 1))
tail -n 4 /tmp/lm-word.log
cp /tmp/lm-word.log benchmarks/results/lm_pretrain_word_gpu.json "$OUT/" 2>/dev/null
ls -la "$OUT"
[ "$failed" = 0 ] || { echo "$failed of 3 trainings failed"; exit 1; }
