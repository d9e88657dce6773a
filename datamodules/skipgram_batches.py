"""The skip-gram batches of one slice of an encoded corpus, streamed epoch by epoch, made ahead by a thread.

Each epoch reads the slice of ``datamodules.corpus.EncodedCorpus`` ``chunk_tokens`` words at a time, so
a corpus larger than memory trains, and turns each chunk into batches with
``datamodules.skipgram_sampling.SkipGramSampling`` (a new draw of subsampling, windows and negatives every
epoch, seeded by the seed and the epoch; the same draw every epoch for evaluation). A background thread
makes the next batches while the model trains; a training loader's thread goes on to the next epoch as
soon as an epoch's batches are all made.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

from core.threads import Producer
from datamodules.corpus import EncodedCorpus
from datamodules.skipgram_sampling import SkipGramSampling


class SkipGramBatches:
    """Streams one slice of the encoded corpus as skip-gram batches (see the module docstring).

    It has no ``len()``: subsampling draws how many batches an epoch has, and Lightning, given a length,
    ends an epoch after that many batches (a short estimate drops the last ones) and validates only when
    the length is reached (a long one never validates). Unsized, Lightning reads each epoch to its end
    and knows its last batch. ``operator.length_hint()`` gives the expected count, from which
    ``SkipGramModel`` schedules its learning rate.

    With ``prefetch_batches``, a ``core.threads.Producer`` thread makes the batches ahead. A training loader's
    thread goes on to the next epoch as soon as this one's batches are all made (up to ``last_epoch``), so
    the epoch's end (the last updates, logging, the checkpoint) and the next epoch's first batches overlap
    instead of leaving the model waiting; ``prefetch()`` starts an epoch before Lightning asks for it.
    A prefetched epoch that Lightning does not ask for next (a resumed run) is dropped.
    """

    def __init__(
        self,
        corpus: EncodedCorpus,
        sampling: SkipGramSampling,
        start: int,
        stop: int,
        seed: int,
        fixed: bool,
        chunk_tokens: int = 1 << 17,
        prefetch_batches: int = 8,
        last_epoch: int = -1,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        self.corpus = corpus
        self.sampling = sampling
        self.chunk_tokens = chunk_tokens  # words read from the encoded corpus at a time
        self.prefetch_batches = prefetch_batches  # batches made ahead by a thread (0: in the loop)
        # An evaluation loader of a data-parallel run: every process makes the same batches and keeps every
        # num_replicas-th, from its rank; the loss metric adds the shares up.
        self.rank, self.num_replicas = rank, num_replicas
        self.start, self.stop = start, stop
        self.seed = seed
        self.fixed = fixed  # same draw every epoch (evaluation)
        self.last_epoch = last_epoch  # the last epoch worth prefetching (-1: none)
        self.epoch = 0
        self._next: tuple[int, Producer] | None = None  # an epoch made ahead, and its producer
        self._closed = False  # no more epochs made ahead
        self._lock = threading.Lock()  # _next and _closed: the producer thread starts the next epoch
        self._expected: int | None = None
        # Lightning calls set_epoch on a loader's `sampler` at each epoch start.
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self) -> range:
        return range(self.start, self.stop, self.chunk_tokens)

    def __length_hint__(self) -> int:
        """The expected number of batches of an epoch: per chunk, the words subsampling keeps on average
        (its exact mean over the chunk's words), in batches, rounded up."""
        if self._expected is None:
            words, _ = self.corpus.encoded()
            keep = self.sampling.keep.double()
            expected = 0
            for begin in self._chunks():
                kept = keep[words[begin : min(begin + self.chunk_tokens, self.stop)].long()].sum()
                expected += math.ceil(float(kept) / self.sampling.batch_size)
            self._expected = expected
        return self._expected

    def batches(self, epoch: int | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The batches of ``epoch`` (default: the current one), made in the calling thread."""
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed + (0 if self.fixed else 1_000_003 * epoch))
        words, sentences = self.corpus.encoded()
        made = (
            batch
            for begin in self._chunks()
            for batch in self.sampling.batches(
                words[begin : min(begin + self.chunk_tokens, self.stop)].long(),
                sentences[begin : min(begin + self.chunk_tokens, self.stop)].long(),
                generator,
            )
        )
        yield from itertools.islice(made, self.rank, None, self.num_replicas)

    def prefetch(self, epoch: int) -> None:
        """Start making ``epoch``'s batches in the background (training loaders, up to ``last_epoch``)."""
        with self._lock:
            if (
                self.prefetch_batches
                and not (self.fixed or self._closed)
                and epoch <= self.last_epoch
                and self._next is None
            ):
                self._next = (epoch, self._producer(epoch))

    def _producer(self, epoch: int) -> Producer:
        then = None if self.fixed else lambda: self.prefetch(epoch + 1)
        return Producer(self.batches(epoch), self.prefetch_batches, "skipgram-batches", then)

    def close(self) -> None:
        """Stop a prefetched epoch nobody will read, and make no more ahead."""
        with self._lock:
            self._closed = True
            ahead, self._next = self._next, None
        if ahead is not None:
            ahead[1].stop()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if not self.prefetch_batches:
            yield from self.batches()
            return
        with self._lock:
            ahead, self._next = self._next, None
        if ahead is not None and ahead[0] == self.epoch:
            producer = ahead[1]
        else:  # none made ahead, or another epoch's (a resumed run): dropped
            if ahead is not None:
                ahead[1].stop()
            producer = self._producer(self.epoch)
        try:
            yield from producer
        finally:  # also when Lightning stops early and drops the iterator
            producer.stop()
