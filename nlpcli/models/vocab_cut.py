"""Which SentencePiece pieces Chinese and ASCII text can use: the vocabulary cut for e5-small.

A piece is kept when every character in it is one that Chinese or ASCII text uses (after normalisation);
with those pieces the Unigram search over such text finds the same segmentation as over the full
vocabulary, since every piece it could use is still there. Text with other scripts (Cyrillic, Arabic,
Thai, ...) is where the cut differs: those characters become <unk>. `pull e5-small --full-vocab` keeps all.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

# Code point ranges (inclusive) of the characters Chinese text uses besides ASCII, chosen by counting the
# characters of the 303k texts in shared/data after normalisation: CJK ideographs and their punctuation,
# kana and bopomofo, Greek letters (medical text: β受体), and the symbol blocks news and web text mix in.
# Not included: accented Latin letters (92 of those texts), Cyrillic, Thai, Hangul, ... (under 100 texts
# together); they would bring some 16k European pieces for 0.03% of the text.
CHINESE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0391, 0x03C9),  # Greek letters
    (0x2000, 0x206F),  # general punctuation: — ‘ ’ “ ” … ‰ ※
    (0x2100, 0x214F),  # letterlike symbols: ℃ № ™
    (0x2150, 0x218F),  # number forms: Ⅰ Ⅱ
    (0x2190, 0x21FF),  # arrows
    (0x2200, 0x22FF),  # mathematical operators: ≤ ≥ ≠ ∶
    (0x2460, 0x24FF),  # enclosed alphanumerics: ① ⑴
    (0x2500, 0x257F),  # box drawing
    (0x25A0, 0x25FF),  # geometric shapes: ■ □ ▲ ● ○ ◆
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats: ★ ☆ ♀ ♂ ✓
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation: 。 、 《 》 「 」 〔 〕
    (0x3040, 0x30FF),  # hiragana, katakana (の in web text, Japanese names)
    (0x3100, 0x312F),  # bopomofo
    (0x31A0, 0x31BF),  # bopomofo extended
    (0x31C0, 0x31EF),  # CJK strokes
    (0x3200, 0x33FF),  # enclosed CJK, CJK compatibility
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE10, 0xFE1F),  # vertical forms
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # halfwidth and fullwidth forms (～ survives normalisation)
    (0x20000, 0x2FFFF),  # CJK extensions B-F, compatibility supplement
)
# Latin-1 symbols that Chinese text uses: · × ÷ ° ± ¥ £ © ® § (the accented letters are left out).
LATIN1_SYMBOLS = frozenset(chr(c) for c in range(0xA0, 0x100) if not unicodedata.category(chr(c)).startswith("L"))


def is_chinese_or_ascii(ch: str) -> bool:
    cp = ord(ch)
    return cp < 0x80 or ch == "\u2581" or ch in LATIN1_SYMBOLS or any(lo <= cp <= hi for lo, hi in CHINESE_RANGES)


def chinese_ascii_ids(pieces: list[str], special: Iterable[int]) -> list[int]:
    """Ascending ids of the kept pieces: the specials and every piece made only of Chinese/ASCII characters."""
    keep = set(special)
    keep.update(i for i, p in enumerate(pieces) if p and all(is_chinese_or_ascii(c) for c in p))
    return sorted(keep)
