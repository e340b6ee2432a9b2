#!/bin/bash
# The GPU paths (CUDA training and prediction, bf16 autocast, a torchrun launch over nccl), timed on a lent
# GPU machine. Run from the repository root, with a copy of the data and of the m3e-small cache entry:
#   NLPCLI_SHARED_DATA=DIR NLPCLI_HOME=DIR bash benchmarks/device_check.sh [MINUTES]
# Each step writes benchmarks/results/gpu_*.json; a failing step is reported and the next one still runs.
MIN=${1:-1}
DEV=${DEV:-cuda}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
step() { echo "=== $*"; "$@" || echo "=== FAILED ($?): $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
B="benchmarks/ner_benchmark.py cluener --device $DEV --time-budget $MIN --threads 4"
step $PY $B --precision fp32 --result gpu_ner_cluener_dgcnn_fp32 --run /tmp/gpu-dgcnn
step $PY $B --precision bf16 --result gpu_ner_cluener_dgcnn_bf16 --run /tmp/gpu-dgcnn-bf16
step $PY $B --encoder m3e-small --precision fp32 --result gpu_ner_cluener_m3e-small_fp32 --run /tmp/gpu-m3e
step $PY $B --encoder m3e-small --precision bf16 --result gpu_ner_cluener_m3e-small_bf16 --run /tmp/gpu-m3e-bf16
# torchrun over nccl: the sharded predict path (one GPU: world size 1, the process group still forms).
$PY -c 'import json, os, sys
for line in open(os.environ["NLPCLI_SHARED_DATA"] + "/cluener2020/test.json", encoding="utf-8"):
    print(json.dumps({"text": json.loads(line)["text"]}, ensure_ascii=False))' > /tmp/gpu-input.jsonl
step $PY -m torch.distributed.run --nproc-per-node 1 -m nlpcli.cli predict ner --model /tmp/gpu-m3e --device $DEV \
  --input /tmp/gpu-input.jsonl --output /tmp/gpu-pred.jsonl
wc -l /tmp/gpu-input.jsonl /tmp/gpu-pred.jsonl
