"""The Python API: `nlpcli.load / train / evaluate`, and each task's one-liner, equal to what `predict` writes."""

from __future__ import annotations

import copy
import itertools
import json
import pickle
import subprocess
import sys

import pytest
import torch
from util import ROOT, SAMPLES, cli_env, run_cli

import nlpcli
from nlpcli.device import choose_precision, precision_name
from nlpcli.errors import CheckpointError, ConfigError, DataError

TRAIN = {"ner": "train.jsonl", "ie": "train.jsonl", "qa": "train.jsonl", "lm": "train.txt", "chat": "train.json"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny trained model per task, each trained through `nlpcli.train`."""
    root = tmp_path_factory.mktemp("api")
    out = {}
    for task, train in TRAIN.items():
        report = nlpcli.train(
            task,
            train=SAMPLES / task / train,
            output=root / task,
            config=ROOT / "configs" / "tiny" / f"{task}.toml",
            max_steps=30,
            epochs=100,
        )
        assert report["steps"] == 30 and (root / task / "best" / "config.json").is_file()
        out[task] = root / task
    return out


def _predict_cli(task: str, model, records: list[dict]) -> list[dict]:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    proc = run_cli("predict", task, "--model", model, input=lines, check=True)
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_import_is_light_and_exports_only_the_api():
    code = "import sys, nlpcli; print('torch' in sys.modules, sorted(nlpcli.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=ROOT)
    assert out.stdout.split(maxsplit=1) == ["False", "['Predictor', '__version__', 'evaluate', 'load', 'train']\n"]


def test_ner_one_liner(models):
    ner = nlpcli.load(models["ner"], threshold=0.2)  # inference overrides as keywords
    texts = ["张伟在北京的华为公司担任工程师。", "上海浦东的游客很多。"]
    one = ner(texts[0])
    assert one and all(set(e) == {"type", "start", "end", "text", "score"} for e in one)
    assert all(texts[0][e["start"] : e["end"]] == e["text"] and 0 < e["score"] < 1 for e in one)
    assert ner(texts) == [ner(t) for t in texts]  # a list is batched, with the same results
    cli = _predict_cli("ner", models["ner"], [{"text": t} for t in texts])
    default = nlpcli.load(models["ner"])  # the CLI ran with the checkpoint's own threshold
    assert [r["entities"] for r in cli] == default(texts)
    assert min(e["score"] for e in one) < 0.5 <= min((e["score"] for e in default(texts[0])), default=0.5)


def test_ie_one_liner(models):
    ie = nlpcli.load(models["ie"])
    text = "《星河夜话》是孙雨桐创作的长篇小说，由东海出版社出版"
    triples = ie(text)
    assert triples == _predict_cli("ie", models["ie"], [{"text": text}])[0]["spo_list"]
    assert ie([text, text]) == [triples, triples]


def test_qa_one_liner(models):
    qa = nlpcli.load(models["qa"], task="qa")
    q, ps = "熊猫主要吃什么？", ["老虎是肉食动物，主要捕食鹿和野猪。", "大熊猫主要以竹子为食，每天要吃大量的竹子。"]
    ans = qa(question=q, passages=ps)
    assert set(ans) == {"answer", "score", "passage_index", "start", "end"}
    cli = _predict_cli("qa", models["qa"], [{"question": q, "passages": ps}])[0]
    assert ans == {k: cli[k] for k in ans}
    assert qa([{"question": q, "passages": ps}] * 2) == [ans, ans]
    if ans["answer"]:
        assert ps[ans["passage_index"]][ans["start"] : ans["end"]] == ans["answer"]
    with pytest.raises(ConfigError):
        qa(passages=ps)


def test_lm_and_chat_one_liners(models):
    lm = nlpcli.load(models["lm"])
    sentences = lm.generate(["北京", "游客"], num=2, steps=20)
    assert 1 <= len(sentences) <= 2 and all("北京" in s["text"] and "游客" in s["text"] for s in sentences)
    many = lm.generate([["北京"], ["天安门"]], num=1, steps=10)
    assert len(many) == 2 and "天安门" in many[1][0]["text"]
    chat = nlpcli.load(models["chat"])
    history = ["你好"]
    reply = chat.reply(history)
    assert isinstance(reply, str) and reply == _predict_cli("chat", models["chat"], [{"history": history}])[0]["reply"]
    session = chat.session()
    first = session.say("你好")
    session.say("晚上吃什么？")
    assert session.history[:2] == ["你好", first] and len(session.history) >= 3


def test_evaluate_takes_a_directory_or_a_loaded_model(models):
    dev = SAMPLES / "ner" / "dev.jsonl"
    from_dir = nlpcli.evaluate(models["ner"], dev)
    loaded = nlpcli.load(models["ner"])
    assert nlpcli.evaluate(loaded, dev) == from_dir
    proc = run_cli("evaluate", "ner", "--model", models["ner"], "--data", dev, "--json", check=True)
    assert json.loads(proc.stdout)["f1"] == pytest.approx(from_dir["f1"])


def test_api_errors_are_clear(models):
    with pytest.raises(CheckpointError, match="'ner' checkpoint, not 'qa'"):
        nlpcli.load(models["ner"], task="qa")
    with pytest.raises(ConfigError, match="did you mean --threshold"):
        nlpcli.load(models["ner"], treshold=0.5)
    with pytest.raises(ConfigError, match="cannot change"):
        nlpcli.load(models["ner"], hidden_size=8)
    ner = nlpcli.load(models["ner"])
    with pytest.raises(TypeError, match=r"inputs\[1\]: expected a text \(str\), got int 3"):
        ner(["好", 3])


def test_cli_inference_options_with_input_and_usage_errors(models, tmp_path):
    inp = SAMPLES / "ner" / "input.jsonl"
    low = run_cli("predict", "ner", "--model", models["ner"], "--input", inp, "--threshold", "0.1", check=True)
    high = run_cli("predict", "ner", "--model", models["ner"], "--input", inp, "--threshold", "0.9", check=True)
    count = [sum(len(json.loads(x)["entities"]) for x in p.stdout.splitlines()) for p in (low, high)]
    assert count[0] > count[1]
    bad = run_cli("predict", "ner", "--model", models["ner"], "--input", inp, "--hiden-size", "3")
    assert bad.returncode == 2 and "unknown option --hiden-size" in bad.stderr
    typo = run_cli("predict", "qa", "--model", models["qa"], "--qustion", "谁？", "--passage", "张三。")
    assert typo.returncode == 2 and "did you mean --question?" in typo.stderr
    one = run_cli(
        "predict",
        "qa",
        "--model",
        models["qa"],
        "--question",
        "谁？",
        "--passage",
        "张三。",
        "--passage",
        "李四。",
        check=True,
    )
    assert json.loads(one.stdout)["passages"] == ["张三。", "李四。"]


def test_evaluate_thresholds(models):
    dev = SAMPLES / "ner" / "dev.jsonl"
    proc = run_cli(
        "evaluate", "ner", "--model", models["ner"], "--data", dev, "--thresholds", "0.2,0.5,0.9", "--json", check=True
    )
    rows = json.loads(proc.stdout)["thresholds"]
    assert [r["threshold"] for r in rows] == [0.2, 0.5, 0.9]
    assert rows[0]["predicted"] >= rows[1]["predicted"] >= rows[2]["predicted"]  # a higher bar keeps fewer
    assert rows[1]["f1"] == pytest.approx(nlpcli.evaluate(models["ner"], dev)["f1"])  # 0.5 is the default
    table = run_cli("evaluate", "ner", "--model", models["ner"], "--data", dev, "--thresholds", "0.5", check=True)
    assert "threshold" in table.stdout and "recall" in table.stdout
    none = run_cli(
        "evaluate", "lm", "--model", models["lm"], "--data", SAMPLES / "lm" / "train.txt", "--thresholds", "0.5"
    )
    assert none.returncode == 1 and "no threshold" in none.stderr


def test_quantized_prediction_is_close(models):
    import torch

    plain = nlpcli.load(models["ie"], start_threshold=0.02, end_threshold=0.02)
    quick = nlpcli.load(models["ie"], quantize=True, start_threshold=0.02, end_threshold=0.02)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quick.pipeline.model.modules())
    text = "《星河夜话》是孙雨桐创作的长篇小说，由东海出版社出版"
    a, b = plain(text), quick(text)
    keys = {(t["subject"], t["predicate"], t["object"]) for t in a}
    assert a and len(keys & {(t["subject"], t["predicate"], t["object"]) for t in b}) >= 0.8 * len(keys)


def test_bf16_prediction_where_the_cpu_has_it_or_when_asked(models, monkeypatch):
    import torch

    from nlpcli import device

    monkeypatch.setattr(device, "native_bf16_feature", lambda: None)  # bf16 emulated: auto is fp32
    assert nlpcli.load(models["ner"], device="cpu").precision == "fp32"
    fast = nlpcli.load(models["ner"], device="cpu", precision="bf16")
    assert fast.precision == "bf16" and fast.pipeline.precision == torch.bfloat16
    text = "张伟在北京的华为公司担任工程师。"
    assert all(0 < e["score"] < 1 for e in fast(text))
    with pytest.raises(ConfigError, match="unknown precision"):
        nlpcli.load(models["ner"], device="cpu", precision="fp8")


def _sliced(text: str, start: int, end: int) -> str:
    assert 0 <= start < end <= len(text)
    return text[start:end]


def test_offsets_are_exclusive_in_the_api_and_predict(models):
    """`text[start:end]` is the predicted text (Hugging Face, spaCy and Python slices count this way)."""
    texts = ["张伟在北京的华为公司担任工程师。", "上海浦东的游客很多。"]
    ner = nlpcli.load(models["ner"], threshold=0.2)
    found = ner(texts)
    assert any(found) and all(_sliced(t, e["start"], e["end"]) == e["text"] for t, es in zip(texts, found) for e in es)
    cli = _predict_cli("ner", models["ner"], [{"text": t} for t in texts])
    assert all(_sliced(r["text"], e["start"], e["end"]) == e["text"] for r in cli for e in r["entities"])
    assert any(r["entities"] for r in cli)

    ie = nlpcli.load(models["ie"], start_threshold=0.02, end_threshold=0.02)
    text = "《星河夜话》是孙雨桐创作的长篇小说，由东海出版社出版"
    triples = ie(text)
    assert triples and all(
        _sliced(text, t["subject_start"], t["subject_end"]) == t["subject"]
        and _sliced(text, t["object_start"], t["object_end"]) == t["object"]
        for t in triples
    )

    qa = nlpcli.load(models["qa"], threshold=0.0)
    questions = [json.loads(x) for x in (SAMPLES / "qa" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:8]]
    answers = qa([{"question": q["question"], "passages": q["passages"]} for q in questions])
    answered = [(q, a) for q, a in zip(questions, answers) if a["answer"]]
    assert answered and all(
        _sliced(_passage(q["passages"][a["passage_index"]]), a["start"], a["end"]) == a["answer"] for q, a in answered
    )


def _passage(p: str | dict) -> str:
    return p if isinstance(p, str) else p["passage"]


def test_a_prediction_file_reads_back_with_its_exclusive_ends(tmp_path):
    from nlpcli.tasks.ie.ner.data import parse_record

    text = "张伟在北京工作"
    ours = {"text": text, "entities": [{"type": "loc", "start": 3, "end": 5, "text": "北京"}]}
    cmeee = {"text": text, "entities": [{"type": "loc", "start_idx": 3, "end_idx": 4, "entity": "北京"}]}
    cluener = {"text": text, "label": {"loc": {"北京": [[3, 4]]}}}
    assert [parse_record(r, "x", 1).spans for r in (ours, cmeee, cluener)] == [[(3, 4, "loc")]] * 3
    with pytest.raises(DataError, match="does not match"):
        parse_record({"text": text, "entities": [{"type": "loc", "start": 3, "end": 4, "text": "北京"}]}, "x", 1)


def test_predictor_describes_itself_and_keeps_its_surface_small(models):
    ner = nlpcli.load(models["ner"], device="cpu")
    assert isinstance(ner, nlpcli.Predictor) and ner.task == "ner" and ner.path == models["ner"]
    text = repr(ner)
    assert text.startswith("Predictor(task='ner', labels=[") and f"path='{models['ner']}'" in text
    # what precision auto takes on this CPU: bf16 where it multiplies bf16 natively, fp32 elsewhere
    auto = precision_name(choose_precision(torch.device("cpu")).dtype)
    assert "device='cpu'" in text and f"precision='{auto}'" in text and " at 0x" not in text
    assert set(ner.labels) <= set(ner.pipeline.types) and ner.labels
    public = [n for n in dir(ner) if not n.startswith("_")]
    assert public == ["config", "device", "labels", "path", "pipe", "pipeline", "precision", "task"]
    assert ner.config["inference"]["threshold"] == ner.pipeline.config.inference.threshold
    with pytest.raises(TypeError):
        ner.config["inference"]["threshold"] = 0.1  # type: ignore[index]
    with pytest.raises(AttributeError, match="no attribute 'generate'"):
        ner.generate  # noqa: B018
    lm, chat = nlpcli.load(models["lm"]), nlpcli.load(models["chat"])
    assert "generate" in dir(lm) and {"reply", "session"} <= set(dir(chat)) and "reply" not in dir(lm)
    assert repr(lm).startswith("Predictor(task='lm', path=")  # no labels to show
    dev = SAMPLES / "ner" / "dev.jsonl"
    assert nlpcli.evaluate(ner, dev) == nlpcli.evaluate(ner.pipeline, dev)


def test_wrong_argument_types_are_a_clear_type_error(models):
    ner = nlpcli.load(models["ner"])
    for bad, message in [
        (None, r"inputs: expected a text \(str\) or a list of texts, got None"),
        (3, r"inputs: expected a text \(str\) or a list of texts, got int 3"),
        ([1, 2], r"inputs\[0\]: expected a text \(str\), got int 1"),
    ]:
        with pytest.raises(TypeError, match=message):
            ner(bad)
    with pytest.raises(TypeError, match=r"inputs: expected an iterable of inputs, got int"):
        ner.pipe(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"inputs\[1\]: expected a text \(str\), got None"):
        next(ner.pipe(["好", None]))
    qa = nlpcli.load(models["qa"])
    with pytest.raises(TypeError, match=r"question: expected a text \(str\)"):
        qa(question=3, passages=["张三。"])
    with pytest.raises(TypeError, match=r"passages: expected a list of texts"):
        qa(question="谁？", passages="张三。")
    with pytest.raises(TypeError, match=r"inputs\[0\]: expected a record \(dict\)"):
        qa(["谁？"])
    with pytest.raises(TypeError, match=r"words: expected a list of words \(list\[str\]\), got str"):
        nlpcli.load(models["lm"]).generate("北京")
    chat = nlpcli.load(models["chat"])
    with pytest.raises(TypeError, match=r"history\[0\]: expected a list of texts"):
        chat.reply([1])
    with pytest.raises(DataError, match="input:1: missing field 'history'"):
        chat([{"turns": ["你好"]}])  # a record of the wrong shape is still the task's DataError


def test_pipe_streams_an_endless_iterable_a_chunk_at_a_time(models):
    ner = nlpcli.load(models["ner"], threshold=0.2)
    texts = ["张伟在北京的华为公司担任工程师。", "上海浦东的游客很多。", "李明去了杭州。"]
    pulled = 0

    def endless():
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield texts[i % len(texts)]

    first = list(itertools.islice(ner.pipe(endless(), batch_size=2, chunk_size=4), 5))
    assert first == ner([texts[i % 3] for i in range(5)]) and pulled == 8  # two chunks of 4, no more
    qa = nlpcli.load(models["qa"])
    q = {"question": "熊猫主要吃什么？", "passages": ["大熊猫主要以竹子为食。"]}
    assert list(qa.pipe(iter([q, q]))) == qa([q, q])
    chat = nlpcli.load(models["chat"])
    assert list(chat.pipe(iter([["你好"]]))) == [chat.reply(["你好"])]
    assert copy.copy(ner).task == "ner" and pickle.loads(pickle.dumps(nlpcli.Predictor(None, "x"))).path.name == "x"


def test_train_and_evaluate_reports_are_plain_json(models, tmp_path):
    report = nlpcli.train(
        "ner",
        train=SAMPLES / "ner" / "train.jsonl",
        output=tmp_path / "run",
        config=ROOT / "configs" / "tiny" / "ner.toml",
        max_steps=4,
        epochs=100,
    )
    assert json.loads(json.dumps(report)) == report
    assert report["task"] == "ner" and report["steps"] == 4 and report["metric"] == "f1"
    assert report["config"]["trainer"]["max_steps"] == 4
    metrics = nlpcli.evaluate(models["ner"], SAMPLES / "ner" / "dev.jsonl")
    assert json.loads(json.dumps(metrics)) == metrics
