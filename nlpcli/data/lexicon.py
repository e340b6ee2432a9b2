"""Lexicon matches of each character, the inputs of SoftLexicon (Ma et al., 2020, "Simplify the Usage of
Lexicon in Chinese NER").

A character learns little from its neighbours about where a name it has never seen begins and ends; a word
list of millions of running words' worth (Wikipedia's) has seen many of them. Every word of the list found in
the text gives each character it covers one of four roles: the word begins there (B), runs through it (M),
ends there (E), or is that character alone (S). The model averages the word vectors of each role, so no
segmenter decides between overlapping words: all matches are kept.

A character's matches are `SLOTS` ids into the word list (id k + 1 for word k; 0 is empty), four roles of
`PER_ROLE` slots each, longest words first; a text of n characters gives n * SLOTS ids, in character order.
"""

from __future__ import annotations

from collections.abc import Sequence

ROLES = 4  # B, M, E, S
# Words kept per role and character. With word2vec-zhwiki's words, a role of a character in MSRA news holds more
# than 4 words about twice in a million; were it to, the longest are kept.
PER_ROLE = 4
SLOTS = ROLES * PER_ROLE


class Lexicon:
    """Finds the words of a word list in texts (as normalised characters, as the char vocabulary reads them)."""

    def __init__(self, words: Sequence[str]):
        self.ids = {w: i + 1 for i, w in enumerate(words)}
        # Every proper prefix of a word of two or more characters, as the id of the word it is (0: none):
        # a search from a character stops at the first substring that no word begins with.
        self.prefixes: dict[str, int] = {}
        for w in words:
            for k in range(2, len(w)):
                self.prefixes.setdefault(w[:k], 0)
        for w, i in self.ids.items():
            if len(w) > 1:
                self.prefixes[w] = i

    def match(self, chars: Sequence[str]) -> list[int]:
        """The ids of the words each character begins, is inside, ends and is: len(chars) * SLOTS of them."""
        # A token of two characters (a rare lower-casing) stands as one that begins no word: offsets stay.
        text = "".join(c if len(c) == 1 else "\0" for c in chars)
        n = len(text)
        out = [0] * (n * SLOTS)
        filled = [0] * (n * 3)  # per character: words kept as B, M, E
        word_id, prefix = self.ids.get, self.prefixes.get
        # Written out role by role, with no tuples or generators per word: it runs for every text predicted.
        for i, ch in enumerate(text):
            single = word_id(ch)
            if single is not None:
                out[i * SLOTS + 3 * PER_ROLE] = single
            found = prefix(text[i : i + 2])
            if found is None:  # most characters begin no word of two or more
                continue
            words: list[tuple[int, int]] = []
            j = i + 2
            while True:
                if found:
                    words.append((j, found))
                j += 1
                if j > n:
                    break
                found = prefix(text[i:j])
                if found is None:
                    break
            # Longest first; and words ending at a character are found from the earliest start: each role keeps
            # its longest words.
            for j, found in reversed(words):
                f = filled[i * 3]
                if f < PER_ROLE:
                    out[i * SLOTS + f] = found
                    filled[i * 3] = f + 1
                end = j - 1
                f = filled[end * 3 + 2]
                if f < PER_ROLE:
                    out[end * SLOTS + 2 * PER_ROLE + f] = found
                    filled[end * 3 + 2] = f + 1
                for m in range(i + 1, end):
                    f = filled[m * 3 + 1]
                    if f < PER_ROLE:
                        out[m * SLOTS + PER_ROLE + f] = found
                        filled[m * 3 + 1] = f + 1
        return out
