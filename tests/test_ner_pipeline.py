"""NER end to end: learning, train -> save -> load -> predict round trips, windows, nested spans."""

import itertools
import json

import pytest
import torch
from util import SAMPLES, run_cli

from nlpcli import api
from nlpcli.tasks.ie.ner.pipeline import NerConfig, NerPipeline

NER = SAMPLES / "ner"
TINY = [
    "--hidden-size",
    "64",
    "--dilations",
    "1,2,4,1",
    "--head-size",
    "16",
    "--word-dim",
    "32",
    "--warmup-steps",
    "10",
    "--batch-size",
    "16",
    "--lr",
    "5e-3",
    "--seed",
    "1",
]
TINY_CFG = dict(hidden_size=64, dilations="1,2,4,1", head_size=16, word_dim=32)


def train_tiny(out, steps, *options):
    """`nlpcli train ner` on the samples with the tiny settings; returns the output directory."""
    train = ["--train", NER / "train.jsonl", "--dev", NER / "dev.jsonl", "--output", out, "--max-steps", str(steps)]
    run_cli("train", "ner", *train, *options, *TINY, check=True)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("ner") / "run", 120, "--eval-every", "40")


def test_overfits_one_batch():
    torch.manual_seed(0)
    examples, _ = NerPipeline.read(NER / "train.jsonl")
    batch_examples = examples[:8]
    cfg = NerConfig().updated(TINY_CFG | {"dropout": 0.0, "embed_dropout": 0.0})
    pipe = NerPipeline.create(cfg, batch_examples)
    opt = torch.optim.Adam(pipe.model.parameters(), lr=1e-2)
    batch = pipe.collate(batch_examples)
    losses = []
    for _ in range(80):
        pipe.model.train()
        loss = pipe.loss(pipe.model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    metrics = pipe.evaluate(batch_examples)
    assert metrics["f1"] == 1.0


def test_training_learns_and_keeps_best(trained):
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "step"]
    evals = [r["f1"] for r in log if r["event"] == "eval"]
    assert losses[-1] < losses[0] / 3
    assert evals[-1] > evals[0] and max(evals) > 0.8
    best = json.loads((trained / "best" / "metrics.json").read_text())
    assert best["f1"] == max(evals)
    proc = run_cli("evaluate", "ner", "--model", trained, "--data", NER / "dev.jsonl", "--json", check=True)
    metrics = json.loads(proc.stdout)
    assert metrics["f1"] == pytest.approx(best["f1"]) and set(metrics["per_type"]) >= {"name", "company"}


def test_predict_file_and_stdin_agree_and_keep_fields(trained, tmp_path):
    out = tmp_path / "out.jsonl"
    run_cli("predict", "ner", "--model", trained, "--input", NER / "input.jsonl", "--output", out, check=True)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    inputs = [json.loads(line) for line in (NER / "input.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in lines] == [r["id"] for r in inputs]
    assert sum(len(r["entities"]) for r in lines) >= len(lines)
    for r in lines:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]
    piped = run_cli(
        "predict", "ner", "--model", trained, input=(NER / "input.jsonl").read_text(encoding="utf-8"), check=True
    )
    assert [json.loads(line) for line in piped.stdout.splitlines()] == lines
    # A prediction file reads back as gold: evaluating the model on its own output gives F1 = 1.
    proc = run_cli("evaluate", "ner", "--model", trained, "--data", out, "--json", check=True)
    assert json.loads(proc.stdout)["f1"] == 1.0


def test_long_texts_are_windowed_not_cut(trained):
    examples, _ = NerPipeline.read(NER / "dev.jsonl")
    long_text = "".join(ex.text for ex in examples[:12])
    assert len(long_text) > 200
    whole = api.load(str(trained), task="ner", device="cpu", max_len=1000).pipeline
    windowed = api.load(str(trained), task="ner", device="cpu", max_len=40, window_overlap=20).pipeline
    spans_whole = whole.predict_spans([long_text])[0]
    spans_windowed = windowed.predict_spans([long_text])[0]
    assert spans_whole and spans_whole == spans_windowed
    assert max(s for s, _, _ in spans_windowed) > 160  # entities far past the first window


def test_nested_entities_come_out_nested(tmp_path):
    out = tmp_path / "nested"
    run_cli(
        "train",
        "ner",
        "--train",
        NER / "nested.json",
        "--output",
        out,
        "--max-steps",
        "100",
        "--eval-every",
        "50",
        "--dev-ratio",
        "0.2",
        *TINY,
        check=True,
    )
    proc = run_cli("evaluate", "ner", "--model", out, "--data", NER / "nested.json", "--json", check=True)
    metrics = json.loads(proc.stdout)
    assert metrics["nested"]["gold"] == 240
    assert metrics["nested"]["correct"] >= 0.9 * metrics["nested"]["gold"]


def test_standard_head_trains_too(tmp_path):
    out = train_tiny(tmp_path / "std", 80, "--head", "standard")
    cfg = json.loads((out / "best" / "config.json").read_text())["config"]
    assert cfg["model"]["head"] == "standard"
    assert json.loads((out / "best" / "metrics.json").read_text())["f1"] > 0.5


def test_bilstm_reads_each_sequence_as_a_packed_bidirectional_lstm():
    """The gather-reversed backward direction equals what pack_padded_sequence gives, on every real position,
    whatever the padding beside it; padding positions come out zero."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from nlpcli.nn.bilstm import BiLSTM

    torch.manual_seed(0)
    ours = BiLSTM(8, 12, dropout=0.0).eval()
    packed = torch.nn.LSTM(8, 6, batch_first=True, bidirectional=True)
    state = {k: v for k, v in ours.forward_lstm.state_dict().items()}
    state |= {f"{k}_reverse": v for k, v in ours.backward_lstm.state_dict().items()}
    packed.load_state_dict(state)
    lengths = torch.tensor([7, 3, 5, 1])
    x = torch.randn(4, 7, 8)
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    with torch.no_grad():
        out = ours(x, mask)
        ref, _ = pad_packed_sequence(
            packed(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))[0],
            batch_first=True,
            total_length=7,
        )
        noisy = ours(torch.where(mask[..., None].bool(), x, torch.randn_like(x) * 100), mask)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(noisy, out, atol=1e-6)  # what stands in the padding never reaches a real position
    assert out[mask == 0].abs().max() == 0


def test_bilstm_encoder_learns(tmp_path):
    out = train_tiny(tmp_path / "bilstm", 120, "--eval-every", "40", "--encoder", "bilstm")
    cfg = json.loads((out / "best" / "config.json").read_text())["config"]
    assert cfg["encoder"]["name"] == "bilstm"
    evals = [json.loads(line)["f1"] for line in (out / "train_log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals[-1] > evals[0] and max(evals) > 0.8


def test_char_bigrams_are_the_pair_each_char_starts_and_the_one_it_ends():
    from nlpcli.data.vocab import END, CharWordVocab, bigram_tokens
    from nlpcli.nn.dgcnn import CharWordEmbedding

    assert bigram_tokens(list("王平伍")) == ["王平", "平伍", "伍" + END]
    assets = CharWordVocab.build_assets(["王平伍", "王平"], 1, False, 1, 100, bigrams=(2, 100))
    assert assets["bigrams"][2:] == ["王平"]  # the only pair seen twice; the others are unknown
    ids = CharWordVocab(assets).encode("王平伍")["bigram_ids"]
    assert ids == [2, 1, 1]
    embed = CharWordEmbedding(5, 4, dropout=0.0, num_bigrams=3, bigram_dim=2)
    seen = []
    embed.bigram_proj.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    table = embed.bigrams.weight
    embed(torch.tensor([[2, 3, 4]]), bigram_ids=torch.tensor([[2, 1, 1]]))
    pairs = seen[0][0]  # [L, 2 * dim]: the pair a char ends, then the one it starts
    assert torch.equal(pairs[0], torch.cat([torch.zeros(2), table[2]]))  # nothing before the first char
    assert torch.equal(pairs[1], torch.cat([table[2], table[1]]))
    assert torch.equal(pairs[2], torch.cat([table[1], table[1]]))


def test_bilstm_with_bigrams_learns_and_predicts_flat_entities(tmp_path):
    out = train_tiny(tmp_path / "bigrams", 120, "--eval-every", "40", "--encoder", "bilstm", "--use-bigrams")
    assets = json.loads((out / "best" / "vocab.json").read_text())
    assert len(assets["bigrams"]) > 100 and assets["flat"] is True  # no two training entities overlap
    evals = [json.loads(line)["f1"] for line in (out / "train_log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals[-1] > evals[0] and max(evals) > 0.8
    texts = ["记者从西安获悉，徐明将加盟百度公司。", "张伟在北京的华为公司担任工程师。"]
    ner = api.load(out / "best", threshold=0.01)  # many candidates: they overlap unless decoding keeps them flat

    def overlaps() -> int:
        spans = [sorted((e["start"], e["end"]) for e in found) for found in ner(texts)]
        return sum(b[0] < a[1] for s in spans for a, b in itertools.pairwise(s))

    assert sum(map(len, ner(texts))) >= 2 and overlaps() == 0
    ner._pipeline.assets["flat"] = False  # as a model trained on nested entities decodes
    assert overlaps() > 0


def test_flat_decoding_keeps_the_higher_scoring_of_overlapping_spans():
    from nlpcli.tasks.ie.ner.pipeline import _flat, _overlapping

    found = {(0, 2, "PER"): 0.9, (2, 4, "PER"): 0.6, (3, 5, "LOC"): 0.8, (6, 6, "LOC"): 0.55, (0, 2, "ORG"): 0.7}
    assert _flat(found) == {(0, 2, "PER"): 0.9, (3, 5, "LOC"): 0.8, (6, 6, "LOC"): 0.55}
    assert _overlapping([(0, 2, "PER"), (2, 4, "LOC")]) and _overlapping([(0, 1, "A"), (0, 1, "B")])
    assert _overlapping([(0, 9, "ORG"), (3, 4, "LOC"), (6, 7, "PER")])  # nested
    assert not _overlapping([(0, 1, "A"), (2, 3, "B"), (5, 5, "A")])


def test_bigrams_are_refused_by_the_tasks_that_embed_chars_themselves(tmp_path):
    out = tmp_path / "ie"
    proc = run_cli("train", "ie", "--train", SAMPLES / "ie" / "train.jsonl", "--output", out, "--use-bigrams")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: use_bigrams is for ner only: this task's model embeds its characters itself"
    ]
    assert not out.exists()


def test_an_odd_bilstm_width_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "odd"
    proc = run_cli(
        "train", "ner", "--train", NER / "train.jsonl", "--output", out, "--encoder", "bilstm", "--hidden-size", "63"
    )
    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "error: encoder bilstm needs an even hidden_size (two directions of half), got 63"
    )
    assert not out.exists()


@pytest.mark.parametrize("task", ["ie", "qa"])
def test_bilstm_is_refused_by_the_tasks_not_built_for_it(tmp_path, task):
    """ie and qa add their own inputs at the DGCNN's width: one line naming what they take, and no output."""
    out = tmp_path / task
    proc = run_cli("train", task, "--train", SAMPLES / task / "train.jsonl", "--output", out, "--encoder", "bilstm")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: encoder bilstm is for ner only; this task takes dgcnn, auto, or a pretrained encoder"
    ]
    assert not out.exists()


def _partial_copy(path, out, annotated: bool):
    """The samples' training records, the last three quarters annotated for `name` only (their other entities
    dropped), saying so with `annotated_types` or not."""
    lines = path.read_text(encoding="utf-8").splitlines()
    with open(out, "w", encoding="utf-8") as f:
        for i, line in enumerate(lines):
            record = json.loads(line)
            if i >= len(lines) // 4:
                record["label"] = {k: v for k, v in record["label"].items() if k == "name"}
                if annotated:
                    record["annotated_types"] = ["name"]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


def test_partially_annotated_texts_teach_only_their_types(tmp_path):
    """Texts annotated for people only must not teach that their companies are no entities: with
    `annotated_types` the model still finds companies (learnt from the quarter annotated for all types);
    the same records without it teach the model to leave companies out."""
    found = {}
    for annotated in (True, False):
        train = _partial_copy(NER / "train.jsonl", tmp_path / f"train_{annotated}.jsonl", annotated)
        out = tmp_path / f"run_{annotated}"
        run_cli(
            "train",
            "ner",
            "--train",
            train,
            "--dev",
            NER / "dev.jsonl",
            "--output",
            out,
            "--max-steps",
            "120",
            "--eval-every",
            "40",
            *TINY,
            check=True,
        )
        metrics = json.loads(
            run_cli("evaluate", "ner", "--model", out, "--data", NER / "dev.jsonl", "--json", check=True).stdout
        )
        found[annotated] = metrics["per_type"]["company"]["recall"]
        assert metrics["per_type"]["name"]["f1"] > 0.8
    assert found[True] > 0.8 and found[True] > found[False] + 0.15, found


def test_a_partially_annotated_text_is_scored_on_its_types_only(trained):
    from nlpcli.tasks.ie.ner.data import read_ner

    pipe = api.load(trained / "best")._pipeline
    examples, _ = read_ner(NER / "dev.jsonl")
    full = pipe.evaluate(examples)
    for ex in examples:
        ex.spans = [s for s in ex.spans if s[2] == "name"]
        ex.types = ("name",)
    names = pipe.evaluate(examples)
    assert set(names["per_type"]) == {"name"} and names["per_type"]["name"] == full["per_type"]["name"]
    assert names["precision"] == full["per_type"]["name"]["precision"]  # other types' finds are not errors here


def test_annotated_types_must_cover_the_records_entities(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {"text": "王芳在西安。", "label": {"address": {"西安": [[3, 4]]}}, "annotated_types": ["name"]},
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    proc = run_cli("train", "ner", "--train", bad, "--output", tmp_path / "out", *TINY)
    assert proc.returncode == 1 and "not in 'annotated_types'" in proc.stderr and not (tmp_path / "out").exists()


def test_the_loss_ignores_the_scores_of_unannotated_types():
    from nlpcli.nn.globalpointer import globalpointer_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 5, 5), torch.rand(2, 3, 5, 5) > 0.9
    mask = torch.tensor([[True, True, True], [True, False, False]])
    changed = logits.clone()
    changed[1, 1:] += 10.0  # the second text's unannotated types
    assert globalpointer_loss(logits, labels, mask) == pytest.approx(globalpointer_loss(changed, labels, mask).item())
    assert globalpointer_loss(logits, labels) != pytest.approx(globalpointer_loss(changed, labels).item())
    kept = globalpointer_loss(logits[:1], labels[:1]) * 3 + globalpointer_loss(logits[1:, :1], labels[1:, :1])
    assert globalpointer_loss(logits, labels, mask).item() == pytest.approx(kept.item() / 4)


def test_lexicon_matches_give_each_char_the_words_it_begins_is_inside_ends_and_is():
    from nlpcli.data.lexicon import PER_ROLE, SLOTS, Lexicon
    from nlpcli.data.vocab import normalized_words

    words, rows = normalized_words(["北京", "北京大学", "大学", "京", "Ｘ光", "北京", "a b"])
    assert words == ["北京", "北京大学", "大学", "京", "x光"] and rows == [0, 1, 2, 3, 4]  # folded, once, no spaces
    lex = Lexicon(words)
    ids = lex.match(list("在北京大学"))
    assert len(ids) == 5 * SLOTS and sorted(set(ids)) == [0, 1, 2, 3, 4]  # word k is id k + 1; 0: empty; no x光

    def roles(i: int) -> list[list[str]]:
        row = ids[i * SLOTS : (i + 1) * SLOTS]
        return [[words[k - 1] for k in row[r * PER_ROLE : (r + 1) * PER_ROLE] if k] for r in range(4)]

    assert roles(0) == [[], [], [], []]  # 在: no word
    assert roles(1) == [["北京大学", "北京"], [], [], []]  # 北 begins both, longest first
    assert roles(2) == [[], ["北京大学"], ["北京"], ["京"]]  # 京 is a word alone too
    assert roles(3) == [["大学"], ["北京大学"], [], []]
    assert roles(4) == [[], [], ["北京大学", "大学"], []]


def _lexicon_data(tmp_path):
    """Names of three random characters inside random characters: nothing in the text tells a name's edges,
    but a word list that holds the names (and as many other words, which do occur) does. The test names never
    occur in training."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = [chr(0x4E00 + i) for i in rng.choice(2000, 300, replace=False)]

    def word() -> str:
        return "".join(rng.choice(pool, 3))

    names = [word() for _ in range(300)]
    others = [word() for _ in range(300)]

    def filler() -> str:
        n = int(rng.integers(2, 6))
        return "".join(rng.choice(pool, n)) + (others[int(rng.integers(300))] if rng.random() < 0.5 else "")

    def records(chosen, n):
        out = []
        for _ in range(n):
            name = chosen[int(rng.integers(len(chosen)))]
            left = filler()
            text = left + name + filler() + "。"
            out.append({"text": text, "label": {"name": {name: [[len(left), len(left) + 2]]}}})
        return out

    files = {}
    for split, chosen, n in (("train", names[:200], 600), ("dev", names[200:], 100)):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(chosen, n)), "utf-8")
    # Names near one point of the vector space, the other words near another (as word2vec places them).
    centres = rng.normal(size=(2, 16))
    vectors = np.concatenate(
        [centres[0] + 0.3 * rng.normal(size=(300, 16)), centres[1] + 0.3 * rng.normal(size=(300, 16))]
    )
    lines = ["600 16"] + [w + " " + " ".join(f"{x:.5f}" for x in v) for w, v in zip(names + others, vectors)]
    files["lexicon"] = tmp_path / "lexicon.txt"
    files["lexicon"].write_text("\n".join(lines) + "\n", "utf-8")
    return files


def test_a_lexicon_finds_names_never_seen_in_training(tmp_path):
    files = _lexicon_data(tmp_path)
    f1 = {}
    # With pretrained word vectors too, the lexicon's words join the assets of an encoder built another way.
    lexicon = ["--lexicon", files["lexicon"]]
    runs = {"lexicon": lexicon, "none": [], "with_vectors": [*lexicon, "--word-vectors", files["lexicon"]]}
    for name, options in runs.items():
        out = tmp_path / f"run_{name}"
        run_cli(
            "train",
            "ner",
            "--train",
            files["train"],
            "--dev",
            files["dev"],
            "--output",
            out,
            "--encoder",
            "bilstm",
            "--use-words",
            "false",
            "--max-steps",
            "150",
            "--eval-every",
            "50",
            *options,
            *TINY,
            check=True,
        )
        f1[name] = json.loads(
            run_cli("evaluate", "ner", "--model", out, "--data", files["dev"], "--json", check=True).stdout
        )["f1"]
    assert f1["lexicon"] > 0.8 and f1["lexicon"] > f1["none"] + 0.3, f1
    assert f1["with_vectors"] > f1["none"] + 0.3, f1
    # The words and their vectors are in the model: it predicts with the word list gone.
    files["lexicon"].unlink()
    found = api.load(tmp_path / "run_lexicon")(json.loads(files["dev"].read_text("utf-8").splitlines()[0])["text"])
    assert [e["type"] for e in found] == ["name"]


def test_a_lexicon_is_refused_by_the_tasks_that_embed_chars_themselves(tmp_path):
    out = tmp_path / "ie"
    proc = run_cli("train", "ie", "--train", SAMPLES / "ie" / "train.jsonl", "--output", out, "--lexicon", "x.vec")
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [
        "error: lexicon is for ner only: this task's model embeds its characters itself"
    ]
