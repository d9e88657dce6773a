"""Captions as token ids: the tokeniser, the vocabulary and the collation of (image, captions) samples
into the batches ``datamodules.coco_captions`` serves (its docstring describes a batch)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

_WORD = re.compile(r"\w+(?:'\w+)?")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers of ``text``; punctuation is dropped, "man's" stays one word."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Words by index: the four special tokens, then the words of the training captions.

    Args:
        words: Every token, index = id; must start with ``SPECIALS``.
    """

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[: len(self.SPECIALS)]) != self.SPECIALS:
            raise ValueError(f"a vocabulary starts with {' '.join(self.SPECIALS)}")
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}
        self.pad, self.bos, self.eos, self.unk = range(len(self.SPECIALS))

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The words of ``captions`` seen at least ``min_count`` times, most frequent first, ties by
        alphabet (so the same captions always give the same ids)."""
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*cls.SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str) -> list[int]:
        """``<bos>``, the caption's word ids (``<unk>`` for words not kept), ``<eos>``."""
        return [self.bos, *(self.index.get(w, self.unk) for w in tokenize(caption)), self.eos]

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` up to the first ``<eos>``, without ``<bos>`` and ``<pad>``."""
        words = []
        for i in ids:
            if i == self.eos:
                break
            if i not in (self.bos, self.pad):
                words.append(self.words[i])
        return " ".join(words)


class CaptionBatch:
    """The collate function: a list of samples -> the batch dict described in the module docstring.

    A class rather than a closure so that DataLoader workers can pickle it.
    """

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary

    def __call__(self, samples: list[tuple[Tensor, list[str], int]]) -> dict[str, Any]:
        encoded = [torch.tensor(self.vocabulary.encode(c)) for _, captions, _ in samples for c in captions]
        owner = [i for i, (_, captions, _) in enumerate(samples) for _ in captions]
        # Images to caption may come without any caption (predict).
        padded = (
            pad_sequence(encoded, batch_first=True, padding_value=self.vocabulary.pad)
            if encoded
            else torch.zeros(0, 2, dtype=torch.long)
        )
        return {
            "images": torch.stack([image for image, _, _ in samples]),
            "captions": padded,
            "lengths": torch.tensor([len(e) for e in encoded]),
            "caption_image": torch.tensor(owner, dtype=torch.long),
            "references": [[" ".join(tokenize(c)) for c in captions] for _, captions, _ in samples],
            "image_ids": torch.tensor([image_id for _, _, image_id in samples]),
        }
