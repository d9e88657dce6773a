"""Small sentiment treebanks in the SST format (one PTB-bracketed binary tree a line, a label 0-4 on
every node), written by the tests themselves.

The trees are random binary bracketings of random sentences over a tiny lexicon whose sentiment is
known, so a network can learn them: a phrase's label follows the sum of its words' polarities. The
lexicon holds the SST's awkward tokens: brackets written ``-LRB-``/``-RRB-``, an escaped slash, a
non-breaking space inside a token, accented letters.
"""

from __future__ import annotations

import random
from pathlib import Path

NBSP = "\xa0"
# word -> polarity
LEXICON = {
    "good": 2,
    "great": 2,
    "fun": 1,
    "café": 1,
    f"8{NBSP}1\\/2": 1,
    "bad": -2,
    "awful": -2,
    "dull": -1,
    "the": 0,
    "movie": 0,
    "-LRB-": 0,
    "-RRB-": 0,
    "is": 0,
    ",": 0,
}


def label(polarity: int) -> int:
    """Sum of polarities -> SST label: 0 (very negative) .. 4 (very positive)."""
    return 0 if polarity <= -2 else 1 if polarity == -1 else 2 if polarity == 0 else 3 if polarity == 1 else 4


def random_tree(rng: random.Random, words: list[str]) -> tuple[str, int]:
    """A random binary bracketing of ``words`` as PTB text, and its polarity."""
    if len(words) == 1:
        polarity = LEXICON[words[0]]
        return f"({label(polarity)} {words[0]})", polarity
    split = rng.randint(1, len(words) - 1)
    left, p_left = random_tree(rng, words[:split])
    right, p_right = random_tree(rng, words[split:])
    polarity = p_left + p_right
    return f"({label(polarity)} {left} {right})", polarity


def treebank_lines(n: int, seed: int, max_words: int = 7) -> list[str]:
    rng = random.Random(seed)
    vocabulary = sorted(LEXICON)
    return [random_tree(rng, rng.choices(vocabulary, k=rng.randint(1, max_words)))[0] for _ in range(n)]


def write_treebank(
    folder: Path, sizes: dict[str, int] | None = None, seed: int = 0, max_words: int = 7
) -> Path:
    """``folder`` with ``train.txt``, ``dev.txt`` and ``test.txt`` (``sizes`` trees each; a split of size
    0 is not written)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": 60, "dev": 20, "test": 20} if sizes is None else sizes
    for offset, (split, n) in enumerate(sizes.items()):
        if n:
            lines = treebank_lines(n, seed + offset, max_words)
            (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
