"""Small plain-text corpora written by the tests, so the real tokenising and streaming code runs.

``write_topics_corpus`` writes lines drawn from two disjoint "topics" (``sun sky light ...`` and
``fish sea boat ...``) plus common words; a skip-gram model learns in a few epochs that words of one
topic are each other's neighbours.
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = (
    ["sun", "sky", "light", "day", "cloud", "bright", "warm", "morning"],
    ["fish", "sea", "boat", "wave", "salt", "net", "shore", "deep"],
)
COMMON = ["the", "a", "and", "of", "is"]


def write_topics_corpus(path: Path, lines: int = 400, words_per_line: int = 12, seed: int = 0) -> Path:
    """Lines of one topic's words mixed with common words; Zipf-like word frequencies within a topic."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        topic = TOPICS[i % 2]
        words = []
        for _ in range(words_per_line):
            if rng.random() < 0.3:
                words.append(rng.choice(COMMON))
            else:
                # Earlier words of a topic are more frequent, so frequencies differ.
                words.append(topic[min(int(rng.expovariate(0.4)), len(topic) - 1)])
        out.append(" ".join(words).capitalize() + ".")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
