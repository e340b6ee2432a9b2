"""Readers, windows, batching and metrics: the shared data layer."""

import json
import zipfile
from array import array

import pytest
import torch
from util import SAMPLES

from nlpcli.data.batching import bucket_batches, pad_ids, windows
from nlpcli.errors import DataError
from nlpcli.metrics import set_prf
from nlpcli.tasks.ie.ner.data import detect_format, read_ner


def test_windows_cover_and_own_every_position_once():
    for length, size, overlap in [(10, 10, 3), (100, 32, 8), (257, 64, 16), (65, 64, 16)]:
        ws = windows(length, size, overlap)
        owned = [0] * length
        for w in ws:
            assert 0 <= w.start <= w.own_start <= w.own_end <= w.end <= length
            assert w.end - w.start == min(size, length)
            for i in range(w.own_start, w.own_end):
                owned[i] += 1
        assert owned == [1] * length


def test_bucket_batches_partition_and_group_lengths():
    lengths = [5, 50, 6, 49, 7, 48, 8, 47]
    batches = bucket_batches(lengths, 2, shuffle=True, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs(lengths[b[0]] - lengths[b[-1]]) <= 3 for b in batches)
    assert batches == bucket_batches(lengths, 2, shuffle=True, seed=1)


def test_pad_ids_pads_lists_arrays_and_tensors_alike():
    # The encoders cache ids as int arrays; tensors and lists pad the same way.
    for seqs, min_len in [([[3, 1, 4], [1], []], 1), ([[5, 9], [2, 6]], 1), ([[7], [8, 8]], 5), ([[], []], 1)]:
        want = torch.full((len(seqs), max([min_len] + [len(s) for s in seqs])), -1, dtype=torch.long)
        for i, s in enumerate(seqs):
            want[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        for form in (list, lambda s: array("i", s), lambda s: torch.tensor(s, dtype=torch.int32)):
            got = pad_ids([form(s) for s in seqs], pad=-1, min_len=min_len)
            assert got.dtype == torch.long
            assert torch.equal(got, want), (seqs, got, want)


def test_text_encoder_caches_a_large_training_set_compactly():
    from nlpcli.nn.encoder import TextEncoder

    encode = TextEncoder({"chars": ["<pad>", "<unk>", "北", "京"], "bigrams": ["<pad>", "<unk>", "北京"]})
    first = encode("北京北")
    assert encode("北京北") is first  # cached: not encoded again
    # One int array per field, not a list of Python ints (a tenth of the memory with a lexicon's 16 ids a char)
    assert isinstance(first.ids["char_ids"], array) and first.ids["char_ids"].itemsize == 4
    assert list(first.ids["char_ids"]) == [2, 3, 2]
    # An epoch of an MSRA-sized set (60,000 windows) must not clear the cache halfway through.
    assert TextEncoder.CACHE_SIZE >= 60_000


def test_set_prf_hand_computed():
    gold = [[(0, 1, "a"), (2, 3, "b")], [(0, 0, "a")]]
    pred = [[(0, 1, "a"), (2, 4, "b")], [(0, 0, "a"), (1, 1, "b")]]
    m = set_prf(gold, pred, type_of=lambda x: x[2])
    assert (m["tp"], m["predicted"], m["gold"]) == (2, 4, 3)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["per_type"]["a"]["f1"] == pytest.approx(1.0)
    assert m["per_type"]["b"]["f1"] == 0.0


def test_readers_sniff_and_parse_all_formats(tmp_path):
    ner = SAMPLES / "ner"
    assert detect_format(ner / "train.jsonl") == "cluener"
    assert detect_format(ner / "nested.json") == "cmeee"
    assert detect_format(ner / "bio.txt") == "bio"
    ex, _ = read_ner(ner / "nested.json")
    assert ex[0].spans[0][2] == "bod" and len(ex[0].spans) == 2
    ex, _ = read_ner(ner / "bio.txt")
    first = ex[0]
    assert [first.text[s : e + 1] for s, e, _ in first.spans] and all(t in ("PER", "LOC") for *_, t in first.spans)
    zpath = tmp_path / "bio.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(ner / "bio.txt", "data.txt")
    zex, _ = read_ner(zpath)
    assert [e.text for e in zex] == [e.text for e in ex] and zex[3].spans == ex[3].spans


def test_bio_tags_to_spans(tmp_path):
    p = tmp_path / "t.bio"
    p.write_text("张 B-PER\n三 I-PER\n在 O\n北 B-LOC\n京 E-LOC\n和 O\n沪 S-LOC\n去 I-ORG\n\n", encoding="utf-8")
    (ex,), _ = read_ner(p)
    assert ex.text == "张三在北京和沪去"
    assert ex.spans == [(0, 1, "PER"), (3, 4, "LOC"), (6, 6, "LOC"), (7, 7, "ORG")]


def test_cluener_offsets_and_bom(tmp_path):
    p = tmp_path / "c.json"
    row = {"text": "叶老桂认为叶老桂", "label": {"name": {"叶老桂": [[0, 2], [5, 7]]}}}
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(row, ensure_ascii=False).encode())
    (ex,), _ = read_ner(p)
    assert ex.spans == [(0, 2, "name"), (5, 7, "name")]


@pytest.mark.parametrize(
    "content, fmt, message, line",
    [
        ('{"text": "ab"}\n{"text": "cd"\n', None, "malformed JSON", 2),
        ('{"text": "ab"}\n{"txt": "cd"}\n', None, "missing string field 'text'", 2),
        ('{"text": "ab", "label": {"x": {"ab": [[0, 5]]}}}\n', None, "outside the text", 1),
        ('{"text": "ab", "label": {"x": {"ba": [[0, 1]]}}}\n', None, "does not match", 1),
        ("张 B-PER\n三 X-PER\n", "bio", "unknown tag", 2),
        ("张 B-PER\n三\n", "bio", "expected 'char tag'", 2),
        ('[{"text": "ab", "entities": []},\n {"text": 3}]', None, "missing string field 'text'", 2),
        ('[{"text": "ab"},\n {"text": ', None, "malformed JSON", 2),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, content, fmt, message, line):
    p = tmp_path / "bad.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_ner(p, fmt)
    assert message in str(err.value) and err.value.line == line and str(p) in str(err.value)


def test_skip_bad_counts_instead_of_failing(tmp_path):
    p = tmp_path / "mixed.jsonl"
    p.write_text('{"text": "ab"}\nnot json\n{"text": "cd", "label": 5}\n{"text": "ef"}\n', encoding="utf-8")
    ex, stats = read_ner(p, skip_bad=True)
    assert [e.text for e in ex] == ["ab", "ef"] and stats.skipped == 2


def test_empty_missing_and_non_utf8_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_ner(empty)
    with pytest.raises(DataError, match="no such file"):
        read_ner(tmp_path / "nope.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8") as err:
        read_ner(latin)
    assert err.value.line == 2


def test_traditional_chars_fold_to_simplified_with_offsets_kept():
    from nlpcli.data import vocab as V

    trad = "臺灣大學的學生於乾隆年間"
    assert V.to_simplified(trad) == "台湾大学的学生于乾隆年间"  # phrase-aware: 乾隆 keeps its 乾
    assert len(V.char_tokens(trad)) == len(trad) and V.char_tokens("ＡＢ臺") == ["a", "b", "台"]
    cw = V.CharWordVocab({"chars": ["[PAD]", "[UNK]", "台", "湾"], "words": ["[PAD]", "[UNK]", "台湾"]})
    assert cw.encode("臺灣") == cw.encode("台湾") == {"char_ids": [2, 3], "word_ids": [2, 2]}


def test_char_tokens_fold_each_character_and_keep_one_token_per_character():
    from nlpcli.data.vocab import char_tokens, normalize_char, to_simplified

    for text in ["ＡＢＣ１２３　中文Ab", "İstanbul 張三", "".join(map(chr, range(0x20, 0x3100)))]:
        tokens = char_tokens(text)
        assert len(tokens) == len(text)
        assert tokens == [normalize_char(c) for c in to_simplified(text)]
    assert char_tokens("ＡＢ　İ") == ["a", "b", " ", "i̇"]
