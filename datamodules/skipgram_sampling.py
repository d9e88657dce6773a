"""word2vec's sampling: which words a pass keeps, their windows, their noise words, and the batches.

What word2vec.c and gensim do to an encoded corpus (``datamodules.corpus``) at every epoch:
1. frequent-word subsampling: a word of count ``c`` is kept with probability
   ``(sqrt(c / t) + 1) * t / c`` with ``t = sample * (words in the vocabulary's tokens)``;
2. dynamic window: each center word draws an effective window uniformly in ``1..window``; its contexts are
   the kept words at most that far on either side, in the same sentence;
3. negatives drawn from the unigram distribution raised to 0.75 (one equal to the center is drawn
   again, where word2vec.c skips it).

Each chunk of the corpus becomes batches by tensor operations only: no Python loop over words or pairs.
A batch is ``(center (C,), context (C, m), negatives (C, negative))`` for ``C = batch_size`` center
words: ``context[i]`` holds the ids of center ``i``'s context words from column 0, -1 in the empty slots
after them (``m <= 2 * window``: centers with equally many contexts are batched together), and
``negatives[i]`` its ``negative`` noise words, shared by all its context pairs. Sharing the negatives of
one window (as Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory", and Intel's
pWord2Vec do) lets a window's updates be done together; word2vec.c draws them per pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


def keep_probability(counts: Tensor, sample: float) -> Tensor:
    """Mikolov's subsampling as word2vec.c and gensim compute it: the probability of keeping each word.

    ``(sqrt(c / t) + 1) * t / c`` for a word seen ``c`` times, ``t = sample * counts.sum()``, capped at 1;
    ``sample = 0`` keeps every word.
    """
    if sample <= 0:
        return torch.ones(len(counts), dtype=torch.float32)
    counts = counts.double()
    threshold = sample * counts.sum()
    return ((torch.sqrt(counts / threshold) + 1) * threshold / counts).clamp(max=1).float()


def noise_distribution(counts: Tensor, power: float = 0.75) -> Tensor:
    """word2vec's noise distribution: each word's count raised to 0.75, normalised."""
    weights = counts.double() ** power
    return weights / weights.sum()


class AliasTable:
    """Draws from a discrete distribution in O(1) per draw (Walker's alias method, Vose's construction).

    word2vec.c fills a table of 10^8 word ids and gensim binary-searches a cumulative table; an alias
    table is exact like the second and costs two random numbers and two lookups per draw, like the
    first, with two entries per word.
    """

    def __init__(self, probabilities: Tensor) -> None:
        n = len(probabilities)
        scaled = (probabilities.double() * n / probabilities.sum()).tolist()
        alias = list(range(n))
        small = [i for i, p in enumerate(scaled) if p < 1]
        large = [i for i, p in enumerate(scaled) if p >= 1]
        while small and large:
            lo, hi = small.pop(), large[-1]
            alias[lo] = hi
            scaled[hi] -= 1 - scaled[lo]
            if scaled[hi] < 1:
                small.append(large.pop())
        for i in small + large:  # left over only through rounding: their own column, full
            scaled[i] = 1.0
        self.threshold = torch.tensor(scaled, dtype=torch.float32)
        self.alias = torch.tensor(alias, dtype=torch.long)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        column = torch.randint(len(self.alias), shape, generator=generator)
        own = torch.rand(shape, generator=generator) < self.threshold[column]
        return torch.where(own, column, self.alias[column])


def window_reach(sentences: Tensor, reduced: Tensor) -> tuple[Tensor, Tensor]:
    """How many context words each word has before it and after it: ``reduced`` (its window), cut at the
    first and last word of its sentence (``sentences``: non-decreasing sentence numbers)."""
    n = len(sentences)
    index = torch.arange(n)
    first = torch.ones(n, dtype=torch.bool)
    first[1:] = sentences[1:] != sentences[:-1]
    last = torch.ones(n, dtype=torch.bool)
    last[:-1] = first[1:]
    start = torch.cummax(torch.where(first, index, 0), 0).values
    end = torch.cummin(torch.where(last, index, n).flip(0), 0).values.flip(0)
    return torch.minimum(reduced, index - start), torch.minimum(reduced, end - index)


def skipgram_contexts(words: Tensor, sentences: Tensor, reduced: Tensor, window: int) -> Tensor:
    """Context ids ``(n, 2 * window)`` of each of ``n`` words: the words at offsets ``-reduced[i]..-1`` and
    ``1..reduced[i]`` in the same sentence (one column per offset, ``-window..-1, 1..window``), -1 where
    there is none."""
    n = len(words)
    left, right = window_reach(sentences, reduced)
    offsets = torch.tensor([*range(-window, 0), *range(1, window + 1)])
    valid = (offsets >= -left.unsqueeze(1)) & (offsets <= right.unsqueeze(1))
    position = (torch.arange(n).unsqueeze(1) + offsets).clamp_(0, max(n - 1, 0))
    return words[position].masked_fill_(~valid, -1) if n else torch.full((0, 2 * window), -1)


@dataclass(frozen=True)
class SkipGramSampling:
    """How a pass over the corpus samples it: ``keep`` (per word, subsampling's probability of keeping an
    occurrence), ``noise`` (draws negatives), the largest ``window``, ``negative`` words per window and
    ``batch_size`` centers per batch."""

    keep: Tensor
    noise: AliasTable
    window: int
    negative: int
    batch_size: int

    @classmethod
    def from_counts(
        cls, counts: Tensor, sample: float, window: int, negative: int, batch_size: int
    ) -> SkipGramSampling:
        """word2vec's tables for a vocabulary's ``counts``, with subsampling threshold ``sample``."""
        return cls(
            keep_probability(counts, sample),
            AliasTable(noise_distribution(counts)),
            window,
            negative,
            batch_size,
        )

    def batches(
        self, words: Tensor, sentences: Tensor, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The batches of one chunk of the corpus (vocabulary ids and their sentence numbers): subsampling,
        windows, negatives, then bucketing.

        A center's contexts are the kept words ``left`` before it and ``right`` after it (its window cut at
        its sentence's ends), in text order from column 0, -1 after them. The centers are sorted by how many
        they have (stable: text order within a count), so a batch's rows have (nearly) equal counts and its
        ``context`` is as wide as its longest row: no compute on empty slots, which in a corpus of short
        lines are most of the ``2 * window``. Each batch's contexts are gathered when it is yielded, from
        the positions its rows' reaches give. The batches then come in a random order.
        """
        kept = torch.rand(len(words), generator=generator) < self.keep[words]
        words, sentences = words[kept], sentences[kept]
        reduced = torch.randint(1, self.window + 1, (len(words),), generator=generator)
        left, right = window_reach(sentences, reduced)
        count = left + right
        order = torch.argsort(count, stable=True)
        order = order[count[order] > 0]  # a word alone in its sentence has no pair
        centers, left, count = words[order], left[order], count[order]
        noise = self.noise.sample((len(centers), self.negative), generator)
        # word2vec.c skips a noise word equal to the center; redrawing it keeps `negative` of them per pair
        # and spares the model a mask. (A one-word vocabulary has nothing else to draw.)
        while len(self.keep) > 1 and (same := noise == centers.unsqueeze(1)).any():
            noise[same] = self.noise.sample((int(same.sum()),), generator)
        size = self.batch_size
        starts = torch.arange(0, len(centers), size)
        for start in starts[torch.randperm(len(starts), generator=generator)].tolist():
            rows = slice(start, start + size)
            reach, n = left[rows].unsqueeze(1), count[rows].unsqueeze(1)
            column = torch.arange(int(n.max()))
            # Column j holds the word j places after the window's first, skipping the center itself.
            position = order[rows].unsqueeze(1) - reach + column + (column >= reach)
            contexts = words[position.clamp_(max=len(words) - 1)].masked_fill_(column >= n, -1)
            yield centers[rows], contexts, noise[rows]
