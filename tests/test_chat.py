"""chat: input construction, overfitting, KV-cache generation, CLI train -> predict -> evaluate -> chat."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from util import SAMPLES, run_cli, shared_data

from nlpcli import api
from nlpcli.errors import ConfigError, DataError
from nlpcli.tasks.gen.chat.config import ChatConfig
from nlpcli.tasks.gen.chat.data import Dialogue, read_dialogues
from nlpcli.tasks.gen.chat.decode import Decoding, generate
from nlpcli.tasks.gen.chat.inputs import build_input, fit_latest_turns
from nlpcli.tasks.gen.chat.metrics import bigram_nll, distinct_n
from nlpcli.tasks.gen.chat.pipeline import ChatPipeline
from nlpcli.tasks.gen.chat.session import ChatSession
from nlpcli.tasks.gen.lm.data import Sentence
from nlpcli.tasks.gen.lm.pipeline import LmConfig, LmPipeline

TINY = {
    "hidden_size": 64,
    "layers": 2,
    "heads": 2,
    "dropout": 0.0,
    "char_min_count": 1,
    "max_len": 64,
    "max_new_tokens": 16,
    "loss": "responses",  # the tests below reason about response-only training
}
TRAIN_ARGS = [
    "--hidden-size",
    "64",
    "--layers",
    "2",
    "--heads",
    "2",
    "--dropout",
    "0",
    "--char-min-count",
    "1",
    "--max-steps",
    "120",
    "--batch-size",
    "8",
    "--lr",
    "3e-3",
    "--warmup-steps",
    "10",
    "--epochs",
    "100",
    "--eval-every",
    "60",
    "--eval-samples",
    "4",
    "--log-every",
    "10",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: a second thread mostly spin-waits (7x slower, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # for the CLI subprocesses
        yield
    torch.set_num_threads(before)


def tiny_pipe(dialogues: list[Dialogue], **cfg) -> ChatPipeline:
    torch.manual_seed(0)
    return ChatPipeline.create(ChatConfig().updated(TINY | cfg), dialogues)


def sample_dialogues() -> list[Dialogue]:
    return read_dialogues(SAMPLES / "chat" / "train.json")[0]


# --- input construction ---------------------------------------------------------------------------


def test_input_has_speaker_ids_and_response_loss_mask():
    enc = build_input([[10, 11], [12], [13, 14]], cls_id=2, sep_id=3, loss="responses")
    assert enc.ids == [2, 10, 11, 3, 12, 3, 13, 14, 3]
    assert enc.speakers == [0, 0, 0, 0, 1, 1, 0, 0, 0]
    # scored[t]: is ids[t + 1] a target? Only the responses (turns 2 and 3) and their [SEP].
    assert enc.scored == [False, False, False, True, True, True, True, True]
    assert build_input([[10, 11], [12]], 2, 3, loss="all").scored == [True] * 5


def test_history_longer_than_context_keeps_latest_turns():
    turns = [[5] * 10, [6] * 10, [7] * 10]
    kept, n = fit_latest_turns(turns, 25)
    assert n == 2 and kept == turns[1:]  # 1 + 11 + 11 = 23 <= 25; a third turn would not fit
    kept, n = fit_latest_turns([list(range(40))], 12)  # one turn too long: its last tokens stay
    assert n == 1 and kept == [list(range(30, 40))]


def test_windows_score_every_response_once():
    pipe = tiny_pipe(sample_dialogues(), max_len=16, max_turn_len=6, max_new_tokens=8)
    d = Dialogue(["一二三四五", "六七八九", "十一二", "三四五六", "七八"])
    windows = pipe.windows([d], "responses")
    assert len(windows) > 1
    assert all(pipe.example_length(w) <= 16 for w in windows)
    responses = [tuple(t) for w in windows for t in w.turns[1:]]
    expected = [tuple(pipe.tokenizer.encode(t)) for t in d.turns[1:]]
    assert sorted(responses) == sorted(expected)


def test_reader_formats_and_bad_input(tmp_path):
    toy = tmp_path / "toy.json"
    toy.write_text(json.dumps({"train": [["你 好", "嗯"]], "valid": [["a", "b"]]}), encoding="utf-8")
    assert [d.turns for d in read_dialogues(f"{toy}#train")[0]] == [["你好", "嗯"]]
    with pytest.raises(DataError, match="splits: train, valid"):
        read_dialogues(toy)
    tsv = tmp_path / "pairs.txt"
    tsv.write_text("早 上 好\t早\n", encoding="utf-8")
    assert read_dialogues(tsv)[0][0].turns == ["早上好", "早"]
    jsonl = tmp_path / "h.jsonl"
    jsonl.write_text('{"history": ["a"], "reply": "b"}\n["c", "d"]\n', encoding="utf-8")
    assert [d.turns for d in read_dialogues(jsonl)[0]] == [["a", "b"], ["c", "d"]]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n["好", "好"],\n["你 好", "  "],\n["x", 3]\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json:3: turn 1 is empty"):
        read_dialogues(bad)
    dialogues, stats = read_dialogues(bad, skip_bad=True)
    assert len(dialogues) == 1 and stats.skipped == 2 and "turn 1 is int" in stats.reasons[1]


# --- learning and generation ------------------------------------------------------------------------


def test_overfit_one_batch_reaches_near_zero_loss():
    dialogues = sample_dialogues()[:4]
    pipe = tiny_pipe(dialogues)
    batch = pipe.collate(pipe.training_examples(dialogues))
    opt = torch.optim.Adam(pipe.model.parameters(), lr=3e-3)
    pipe.model.train()
    losses = []
    for _ in range(150):
        loss = pipe.loss(pipe.model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 3.0 and losses[-1] < 0.05
    replies = pipe.replies([d.turns[:1] for d in dialogues], dec=Decoding(16, temperature=0))
    assert replies == [d.turns[1] for d in dialogues]


def test_kv_cache_equals_no_cache_under_greedy():
    pipe = tiny_pipe(sample_dialogues())
    torch.manual_seed(1)
    for p in pipe.model.parameters():  # large random weights: clear argmax margins, no near-ties
        torch.nn.init.normal_(p, std=0.3)
    pipe.model.eval()
    histories = [["你好"], ["晚上吃什么？", "火锅吧", "好啊，我请客"], ["下雨了", "记得带伞哦"]]
    prompts = [pipe.prompt(h)[0] for h in histories]  # different lengths: left padding is exercised
    args = pipe._gen_args()
    for dec in (Decoding(16, temperature=0), Decoding(16, temperature=0, repetition_penalty=1.5)):
        with torch.no_grad():
            cached = generate(pipe.model, prompts, dec=dec, use_cache=True, **args)
            plain = generate(pipe.model, prompts, dec=dec, use_cache=False, **args)
            alone = [generate(pipe.model, [p], dec=dec, use_cache=True, **args)[0] for p in prompts]
        assert cached == plain == alone
        assert sum(map(len, cached)) > 10


def test_sampling_options_and_seed():
    pipe = tiny_pipe(sample_dialogues())
    h = [["你好"], ["下雨了"]]
    greedy = pipe.reply_ids(h, dec=Decoding(12, temperature=0))
    assert pipe.reply_ids(h, dec=Decoding(12, temperature=1.0, top_k=1, top_p=1.0)) == greedy
    assert pipe.reply_ids(h, dec=Decoding(12, temperature=1.0, top_p=1e-6)) == greedy
    wide = Decoding(12, temperature=1.5, top_p=1.0)
    a = pipe.reply_ids(h, dec=wide, generator=pipe.seeded_generator(7))
    b = pipe.reply_ids(h, dec=wide, generator=pipe.seeded_generator(7))
    c = pipe.reply_ids(h, dec=wide, generator=pipe.seeded_generator(8))
    assert a == b and a != c
    assert all(1 <= len(r) <= 12 for r in a + c)  # never empty, never past max_new_tokens


def test_session_keeps_a_bounded_history():
    pipe = tiny_pipe(sample_dialogues(), max_new_tokens=4)
    session = ChatSession(pipe, max_turns=3, dec=Decoding(4, temperature=0))
    for text in ("你好", "今天天气真好", "好累啊"):
        reply = "".join(session.send(text))
        assert reply and session.history[-1] == reply
    assert len(session.history) == 3 and session.history[0] != "你好"
    session.reset()
    assert session.history == []
    with pytest.raises(DataError):
        list(session.send("   "))


def test_metrics():
    assert distinct_n(["abab"], 1) == 0.5 and distinct_n(["abab"], 2) == pytest.approx(2 / 3)
    train = np.array([[0, 1], [0, 1], [0, 2], [1, 2]])
    # P(. | 0) sums to one over the vocabulary, and seen pairs cost less than unseen ones.
    probs = [math.exp(-bigram_nll(train, np.array([[0, w]]), 4)) for w in range(4)]
    assert sum(probs) == pytest.approx(1.0) and probs[1] > probs[2] > probs[3]


# --- command line ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("chat") / "run"
    run_cli(
        "train",
        "chat",
        "--train",
        SAMPLES / "chat" / "train.json",
        "--dev",
        SAMPLES / "chat" / "dev.json",
        "--output",
        out,
        *TRAIN_ARGS,
        check=True,
    )
    return out


def test_cli_train_predict_evaluate(trained, tmp_path):
    log = [json.loads(x) for x in (trained / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "step"]
    dev = [r["ppl"] for r in log if r["event"] == "eval"]
    assert losses[0] > 3 * losses[-1] and dev[-1] < dev[0]
    out = tmp_path / "replies.jsonl"
    run_cli(
        "predict", "chat", "--model", trained, "--input", SAMPLES / "chat" / "input.jsonl", "--output", out, check=True
    )
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and rows[2]["id"] == 3 and all(r["reply"] for r in rows)
    assert rows[1]["reply"] == "火锅吧"  # learned from the training dialogue
    proc = run_cli(
        "evaluate", "chat", "--model", trained, "--data", SAMPLES / "chat" / "dev.json", "--json", check=True
    )
    metrics = json.loads(proc.stdout)
    assert metrics["ppl"] < 3.0 and metrics["scored_chars"] == 26
    assert 0 < metrics["distinct_1"] <= 1 and metrics["gen_tokens_per_s"] > 0
    # a prediction file reads back as dialogues (history + reply)
    assert len(read_dialogues(out)[0]) == 4


def test_cli_predict_bad_input_and_long_history(trained, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"history": ["你好"]}\n{"history": []}\n{"history": ["好", ""]}\n{"history": [1]}\n{"text": "x"}\n',
        encoding="utf-8",
    )
    proc = run_cli("predict", "chat", "--model", trained, "--input", bad)
    assert proc.returncode == 1 and "bad.jsonl:2: history is empty" in proc.stderr
    proc = run_cli("predict", "chat", "--model", trained, "--input", bad, "--skip-bad", check=True)
    assert len(proc.stdout.splitlines()) == 1 and "skipped 4" in proc.stderr
    history = ["很长的一句话" * 5] * 6 + ["晚上吃什么？"]
    pipe = api.load(str(trained), task="chat", device="cpu").pipeline
    line = json.dumps({"history": history}, ensure_ascii=False)
    row = next(api.predict(pipe, [line], "long.jsonl"))
    assert row["history"] == history and 1 <= row["turns_used"] < len(history) and row["reply"]


def test_cli_interactive_chat_through_stdin(trained):
    proc = run_cli(
        "chat",
        "--model",
        trained,
        "--temperature",
        "0",
        "--max-turns",
        "4",
        input="你好\n/reset\n晚上吃什么？\n\n/exit\n下雨了\n",
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines == ["bot> 你好，很高兴认识你", "(conversation reset)", "bot> 火锅吧"]


def test_cli_toy_data_end_to_end(tmp_path):
    toy = shared_data("lccc", "cdial_gpt_toy", "toy_data.json")
    out = tmp_path / "toy"
    run_cli(
        "train",
        "chat",
        "--train",
        f"{toy}#train",
        "--dev",
        f"{toy}#valid",
        "--output",
        out,
        "--hidden-size",
        "64",
        "--layers",
        "2",
        "--heads",
        "2",
        "--max-steps",
        "40",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "10",
        "--eval-samples",
        "8",
        "--dev-max",
        "30",
        check=True,
    )
    hist = tmp_path / "h.jsonl"
    hist.write_text('{"history": ["你 好 呀"]}\n{"history": ["今 天 去 哪 ？", "不 知 道"]}\n', encoding="utf-8")
    rows = run_cli("predict", "chat", "--model", out, "--input", hist, check=True).stdout.splitlines()
    assert len(rows) == 2 and all(json.loads(r)["reply"] for r in rows)
    metrics = json.loads(
        run_cli("evaluate", "chat", "--model", out, "--data", f"{toy}#test", "--json", check=True).stdout
    )
    vocab = len(json.loads((out / "best" / "vocab.json").read_text(encoding="utf-8"))["chars"])
    assert metrics["ppl"] < vocab / 4  # far below a uniform guess over the vocabulary


def tiny_gpt2(tmp_path) -> Path:
    """A tiny Hugging Face GPT-2 with a char vocabulary (as CDial-GPT uses), saved under tmp_path."""
    transformers = pytest.importorskip("transformers")
    chars = sorted({c for d in sample_dialogues() for t in d.turns for c in t})
    gpt = tmp_path / "gpt2"
    gpt.mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (gpt / "vocab.txt").write_text("\n".join(specials + chars) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast.from_pretrained(gpt)
    assert len(tok) == len(specials) + len(chars)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(gpt)
    tok.save_pretrained(gpt)
    return gpt


def test_hf_model_steps_with_its_cache_under_the_current_argument_name(tmp_path):
    """Decoding one token on the cache equals the full forward, and passes the cache by the name this
    transformers version takes (the deprecated one warns, and goes away in a later version)."""
    import warnings

    from nlpcli.tasks.gen.chat.model import HFCausalLM

    transformers = pytest.importorskip("transformers")
    model = HFCausalLM(transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2(tmp_path)), [5, 6], 64).eval()
    ids = torch.tensor([[7, 8, 9, 10]])
    speakers = torch.tensor([[0, 0, 1, 1]])
    positions = torch.arange(4)[None]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        full, _ = model(ids, speakers, torch.ones(1, 4), positions)
        _, cache = model(ids[:, :3], speakers[:, :3], torch.ones(1, 3), positions[:, :3])
        assert cache is not None
        step, _ = model(ids[:, 3:], speakers[:, 3:], torch.ones(1, 4), positions[:, 3:], cache)
    assert torch.allclose(step[0, -1], full[0, -1], atol=1e-5)


def test_cli_init_from_tiny_local_gpt2(tmp_path):
    gpt = tiny_gpt2(tmp_path)
    out = tmp_path / "run"
    run_cli(
        "train",
        "chat",
        "--train",
        SAMPLES / "chat" / "train.json",
        "--dev",
        SAMPLES / "chat" / "dev.json",
        "--output",
        out,
        "--init",
        gpt,
        "--init-lr",
        "5e-3",
        "--loss",
        "responses",
        "--max-steps",
        "60",
        "--batch-size",
        "8",
        "--warmup-steps",
        "5",
        "--epochs",
        "100",
        "--eval-every",
        "30",
        "--eval-samples",
        "4",
        "--log-every",
        "10",
        "--max-new-tokens",
        "12",
        check=True,
    )
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "step"]
    assert losses[-1] < 0.7 * losses[0]
    assert (out / "best" / "encoder" / "tokenizer.json").exists()
    rows = run_cli(
        "predict", "chat", "--model", out, "--input", SAMPLES / "chat" / "input.jsonl", check=True
    ).stdout.splitlines()
    assert len(rows) == 4 and all(isinstance(json.loads(r)["reply"], str) for r in rows)
    pipe = api.load(str(out), task="chat", device="cpu").pipeline  # rebuilt offline from the checkpoint's own files
    metrics = pipe.evaluate(read_dialogues(SAMPLES / "chat" / "dev.json")[0])
    assert metrics["ppl"] < 10 and metrics["scored_chars"] == 26
    prompts = [pipe.prompt(h)[0] for h in (["你好"], ["早上好", "早，吃早饭了吗？"])]
    dec = Decoding(8, temperature=0)
    with torch.no_grad():  # the Hugging Face cache, left padding and position ids agree with full recompute
        cached = generate(pipe.model, prompts, dec=dec, use_cache=True, **pipe._gen_args())
        plain = generate(pipe.model, prompts, dec=dec, use_cache=False, **pipe._gen_args())
    assert cached == plain and all(cached)


# --- starting from an lm checkpoint (nlpcli train lm --arch transformer --unit char) ----------------


def tiny_lm(tmp_path, **fields) -> Path:
    """A saved char GPT lm over the sample dialogues' characters, with large random weights (peaked logits)."""
    cfg = LmConfig().updated(
        {"arch": "transformer", "unit": "char", "hidden_size": 32, "num_layers": 2, "heads": 2, "min_count": 1}
        | {"positions": 66, "dropout": 0.0}
        | fields
    )
    torch.manual_seed(0)
    lm = LmPipeline.create(cfg, [Sentence(t) for d in sample_dialogues() for t in d.turns])
    for p in lm.model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return lm.save(tmp_path / "lm")


def test_chat_from_lm_computes_the_lm_distribution_at_step_0(tmp_path):
    directory = tiny_lm(tmp_path)
    lm = api.load(str(directory), task="lm", device="cpu").pipeline
    pipe = tiny_pipe(sample_dialogues(), init=str(directory), hidden_size=64, layers=1)
    assert (pipe.config.model.hidden_size, pipe.config.model.layers, pipe.config.model.context_len) == (32, 2, 66)
    assert pipe.tokenizer.vocab.itos == lm.vocab.itos and not pipe.model.speaker.weight.any()
    pipe.model.eval()
    # A dialogue reads as the lm's packed stream: <s> u1 <s> u2 <s> (full-width commas folded as the lm does).
    turns = ["晚上吃什么？", "火锅吧，好不好", "好啊"]
    enc = build_input(pipe.encode_turns(turns), pipe.tokenizer.cls_id, pipe.tokenizer.sep_id)
    assert enc.ids == [
        2,
        *lm.encode(Sentence(turns[0])),
        2,
        *lm.encode(Sentence(turns[1])),
        2,
        *lm.encode(Sentence(turns[2])),
        2,
    ]
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        logits, _ = pipe.model(
            ids, torch.tensor([enc.speakers]), torch.ones_like(ids, dtype=torch.bool), torch.arange(ids.shape[1])[None]
        )
        expected = lm.model.fwd.logits(lm.model.fwd.hidden(ids))
    assert torch.allclose(logits, expected, atol=1e-5)
    assert pipe.replies([["你好"]], dec=Decoding(6, temperature=0))  # it decodes (the boundary token ends a reply)


def test_the_init_learning_rate_defaults_by_what_the_model_starts_from(tmp_path):
    directory = str(tiny_lm(tmp_path))
    assert tiny_pipe(sample_dialogues(), init=directory).config.model.init_lr == 1e-3  # an nlpcli lm
    assert tiny_pipe(sample_dialogues(), init=directory, init_lr=3e-4).config.model.init_lr == 3e-4  # given
    pipe = tiny_pipe(sample_dialogues(), init=directory, lr=2e-3)
    assert [g["lr_scale"] for g in pipe.param_groups() or []] == [0.5, 0.5]  # the groups train at init_lr
    assert tiny_pipe(sample_dialogues(), init=str(tiny_gpt2(tmp_path))).config.model.init_lr == 5e-5  # HF


def test_chat_init_refuses_word_or_lstm_lm(tmp_path):
    with pytest.raises(ConfigError, match=r"arch lstm.*char transformer"):
        tiny_pipe(sample_dialogues(), init=str(tiny_lm(tmp_path / "a", arch="lstm", embed_dim=32)))
    with pytest.raises(ConfigError, match=r"unit word.*char transformer"):
        tiny_pipe(sample_dialogues(), init=str(tiny_lm(tmp_path / "b", unit="word")))


def test_cli_train_chat_from_lm_and_reload(tmp_path):
    directory = tiny_lm(tmp_path)
    out = tmp_path / "run"
    args = ["--init", directory, "--init-lr", "3e-3", "--max-steps", "20", "--batch-size", "8", "--warmup-steps", "5"]
    args += ["--epochs", "100", "--eval-samples", "2", "--max-new-tokens", "8", "--threads", "1", "--log-every", "5"]
    run_cli("train", "chat", "--train", SAMPLES / "chat" / "train.json", "--output", out, *args, check=True)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "step"]
    assert losses[-1] < losses[0]
    pipe = api.load(str(out), task="chat", device="cpu").pipeline  # rebuilt from the checkpoint alone
    assert pipe.tokenizer.cls_id == pipe.tokenizer.sep_id == 2 and pipe.config.model.hidden_size == 32
    rows = run_cli("predict", "chat", "--model", out, "--input", SAMPLES / "chat" / "input.jsonl", check=True)
    assert len(rows.stdout.splitlines()) == 4
