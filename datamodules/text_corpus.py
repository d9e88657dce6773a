"""A plain-text corpus streamed as skip-gram batches (单词嵌入): word2vec's data pipeline in tensor ops.

What word2vec.c and gensim do to a corpus, in their order:
1. tokenise (here: lower-cased runs of letters and digits, with inner apostrophes: "don't"); a line is a
   sentence (windows never cross a line break), and a line longer than ``max_sentence_length`` words is
   cut, as gensim cuts text8's one 17-million-word line;
2. keep words seen at least ``min_count`` times; the others are dropped before windows are drawn;
3. frequent-word subsampling: a word of count ``c`` is kept with probability
   ``(sqrt(c / t) + 1) * t / c`` with ``t = sample * (words in the vocabulary's tokens)``;
4. dynamic window: each center word draws an effective window uniformly in ``1..window``; its contexts are
   the kept words at most that far on either side, in the same sentence;
5. negatives drawn from the unigram distribution raised to 0.75 (one equal to the center is drawn
   again, where word2vec.c skips it).

The corpus is read once (``prepare``): its text is tokenised and counted in one pass that writes the
token stream (int32 ids in order of first sight, line breaks marked) to a file; once the vocabulary is
known, a second pass over that file writes the encoded corpus, each in-vocabulary word as its vocabulary
id and sentence number. Epochs stream the encoded file, ``chunk_tokens`` words at a time, so a corpus
larger than memory trains, and each chunk becomes batches by tensor operations only: no Python loop over
words or pairs. A background thread makes the next batches while the model trains; in a training run it
starts when Lightning sets the datamodule up and goes on to the next epoch as soon as an epoch's batches
are all made, so from the second epoch on the model does not wait for its first batches.

A batch is ``(center (C,), context (C, m), negatives (C, negative))`` for ``C = batch_size`` center
words: ``context[i]`` holds the ids of center ``i``'s context words from column 0, -1 in the empty
slots after them (``m <= 2 * window``: centers with equally many contexts are batched together), and
``negatives[i]`` its ``negative`` noise words, shared by all its context pairs. Sharing the negatives of
one window (as Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory", and Intel's
pWord2Vec do) lets a window's updates be done together; word2vec.c draws them per pair.

Splits: the encoded corpus's last ``test_fraction`` is the test slice and the ``val_fraction`` before it
the validation slice (held-out loss, drawn with a fixed seed so epochs compare); training reads the rest
with a new draw of subsampling, windows and negatives every epoch (seeded by ``seed`` and the epoch).
``predict`` yields the vocabulary's ids, so a model returns every word's vector.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import shutil
import sys
import tempfile
import threading
import weakref
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Full, Queue

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from core.errors import DataConfigError, DataNotFoundError
from datamodules.tensors import TensorBatches, shard_arguments

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
#: the token stream's marker of a line break (a sentence end)
LINE_BREAK = -1
#: characters read at a time from a line: text8 is one line of 100 MB
BLOCK_CHARS = 1 << 22
_END = object()  # the batch thread's "no more batches"


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """The words of ``text``: runs of letters and digits, with apostrophes inside a word kept."""
    return TOKEN.findall(text.lower() if lowercase else text)


def corpus_files(path: Path) -> list[Path]:
    """``path`` itself, or the files under the folder ``path`` (sorted; hidden ones left out)."""
    if path.is_file():
        return [path]
    files = [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    return files


def read_pieces(file: Path) -> Iterator[tuple[str, bool]]:
    """``(text, ends_line)`` pieces of a file, at most ``BLOCK_CHARS`` long, never cutting a word."""
    carry = ""
    with open(file, encoding="utf-8") as handle:
        while piece := handle.readline(BLOCK_CHARS):
            text = carry + piece
            if piece.endswith("\n"):
                carry = ""
                yield text, True
                continue
            # A long line: the word at the end may go on in the next piece.
            cut = max(text.rfind(" "), text.rfind("\t"))
            carry, text = (text[cut + 1 :], text[: cut + 1]) if cut >= 0 else (text, "")
            if text:
                yield text, False
    yield carry, True  # the file's end ends a sentence, with or without a final newline


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


def sentence_ids(
    tokens: Tensor, max_sentence_length: int, last_break: int = -1, first: int = 0
) -> tuple[Tensor, int]:
    """A sentence number per token of a stream where ``LINE_BREAK`` ends a sentence, and a sentence is
    also cut after every ``max_sentence_length`` tokens (line breaks get numbers of their own).

    For a stream read in pieces: ``last_break`` is the position of the last line break before this
    piece, counted from the piece's start (so negative), and ``first`` the number its first sentence
    continues. Returns the numbers and the ``last_break`` for the next piece.
    """
    breaks = tokens == LINE_BREAK
    index = torch.arange(len(tokens))
    last = torch.cummax(torch.where(breaks, index, last_break), 0).values
    position = index - last - 1  # within the line
    cut = (position > 0) & (position % max_sentence_length == 0) & ~breaks
    numbers = first + torch.cumsum((breaks | cut).long(), 0)
    return numbers, (int(last[-1]) if len(tokens) else last_break) - len(tokens)


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


class BatchProducer:
    """A thread making one epoch's batches ahead of training, into a queue of ``prefetch_batches``.

    torch releases the GIL in its operations, so batch making overlaps the model's work (a DataLoader
    worker process would pickle every batch). ``stop()`` ends the thread early (when Lightning drops the
    iterator, or a prefetched epoch is not wanted) and waits for it; ``weakref.finalize`` does the same
    at the interpreter's exit for a producer still running, since a daemon thread cut off inside a torch
    operation aborts the process.
    """

    def __init__(
        self,
        batches: Iterator[tuple[Tensor, Tensor, Tensor]],
        size: int,
        epoch: int,
        then: Callable[[], None] | None = None,
    ) -> None:
        self.epoch = epoch
        self.queue: Queue = Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._batches = batches
        self._then = then  # called in the thread once every batch is queued
        self.thread = threading.Thread(target=self._produce, name="skipgram-batches", daemon=True)
        self.thread.start()
        self._finalizer = weakref.finalize(self, _stop_thread, self._stop, self.thread)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(batch):
                    return
            self._put(_END)
            if self._then is not None:
                self._then()
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        while (item := self.queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """End the thread at its next batch (a chunk in progress is finished first) and wait for it."""
        self._finalizer()


def _stop_thread(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    if threading.current_thread() is not thread:
        thread.join()


class SkipGramBatches:
    """Streams one slice of the encoded corpus as skip-gram batches (see the module docstring).

    It has no ``len()``: subsampling draws how many batches an epoch has, and Lightning, given a length,
    ends an epoch after that many batches (a short estimate drops the last ones) and validates only when
    the length is reached (a long one never validates). Unsized, Lightning reads each epoch to its end
    and knows its last batch. ``operator.length_hint()`` gives the expected count, from which
    ``SkipGramModel`` schedules its learning rate.

    With ``prefetch_batches``, a ``BatchProducer`` thread makes the batches ahead. A training loader's
    thread goes on to the next epoch as soon as this one's batches are all made (up to ``last_epoch``), so
    the epoch's end (the last updates, logging, the checkpoint) and the next epoch's first batches overlap
    instead of leaving the model waiting; ``prefetch()`` starts an epoch before Lightning asks for it.
    A prefetched epoch that Lightning does not ask for next (a resumed run) is dropped.
    """

    def __init__(
        self,
        data: TextCorpusDataModule,
        start: int,
        stop: int,
        seed: int,
        fixed: bool,
        last_epoch: int = -1,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        self.data = data
        # An evaluation loader of a data-parallel run: every process makes the same batches and keeps every
        # num_replicas-th, from its rank; the loss metric adds the shares up.
        self.rank, self.num_replicas = rank, num_replicas
        self.start, self.stop = start, stop
        self.seed = seed
        self.fixed = fixed  # same draw every epoch (evaluation)
        self.last_epoch = last_epoch  # the last epoch worth prefetching (-1: none)
        self.epoch = 0
        self._next: BatchProducer | None = None
        self._closed = False  # no more epochs made ahead
        self._lock = threading.Lock()  # _next and _closed: the producer thread starts the next epoch
        self._expected: int | None = None
        # Lightning calls set_epoch on a loader's `sampler` at each epoch start.
        self.sampler = self
        self.batch_sampler = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self) -> range:
        return range(self.start, self.stop, self.data.chunk_tokens)

    def __length_hint__(self) -> int:
        """The expected number of batches of an epoch: per chunk, the words subsampling keeps on average
        (its exact mean over the chunk's words), in batches, rounded up."""
        if self._expected is None:
            data = self.data
            words, _ = data.encoded_corpus()
            keep = data.keep_probability.double()
            expected = 0
            for begin in self._chunks():
                kept = keep[words[begin : min(begin + data.chunk_tokens, self.stop)].long()].sum()
                expected += math.ceil(float(kept) / data.batch_size)
            self._expected = expected
        return self._expected

    def batches(self, epoch: int | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The batches of ``epoch`` (default: the current one), made in the calling thread."""
        data = self.data
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed + (0 if self.fixed else 1_000_003 * epoch))
        words, sentences = data.encoded_corpus()
        made = (
            batch
            for begin in self._chunks()
            for batch in chunk_batches(
                data,
                words[begin : min(begin + data.chunk_tokens, self.stop)].long(),
                sentences[begin : min(begin + data.chunk_tokens, self.stop)].long(),
                generator,
            )
        )
        yield from itertools.islice(made, self.rank, None, self.num_replicas)

    def prefetch(self, epoch: int) -> None:
        """Start making ``epoch``'s batches in the background (training loaders, up to ``last_epoch``)."""
        with self._lock:
            if (
                self.data.prefetch_batches
                and not (self.fixed or self._closed)
                and epoch <= self.last_epoch
                and self._next is None
            ):
                self._next = self._producer(epoch)

    def _producer(self, epoch: int) -> BatchProducer:
        then = None if self.fixed else lambda: self.prefetch(epoch + 1)
        return BatchProducer(self.batches(epoch), self.data.prefetch_batches, epoch, then)

    def close(self) -> None:
        """Stop a prefetched epoch nobody will read, and make no more ahead."""
        with self._lock:
            self._closed = True
            producer, self._next = self._next, None
        if producer is not None:
            producer.stop()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if not self.data.prefetch_batches:
            yield from self.batches()
            return
        with self._lock:
            producer, self._next = self._next, None
        if producer is None or producer.epoch != self.epoch:
            if producer is not None:
                producer.stop()
            producer = self._producer(self.epoch)
        try:
            yield from producer
        finally:  # also when Lightning stops early and drops the iterator
            producer.stop()


def chunk_batches(
    data: TextCorpusDataModule, words: Tensor, sentences: Tensor, generator: torch.Generator
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
    kept = torch.rand(len(words), generator=generator) < data.keep_probability[words]
    words, sentences = words[kept], sentences[kept]
    reduced = torch.randint(1, data.window + 1, (len(words),), generator=generator)
    left, right = window_reach(sentences, reduced)
    count = left + right
    order = torch.argsort(count, stable=True)
    order = order[count[order] > 0]  # a word alone in its sentence has no pair
    centers, left, count = words[order], left[order], count[order]
    noise = data.noise_table.sample((len(centers), data.negative), generator)
    # word2vec.c skips a noise word equal to the center; redrawing it keeps `negative` of them per pair
    # and spares the model a mask. (A one-word vocabulary has nothing else to draw.)
    while data.vocab_size > 1 and (same := noise == centers.unsqueeze(1)).any():
        noise[same] = data.noise_table.sample((int(same.sum()),), generator)
    size = data.batch_size
    starts = torch.arange(0, len(centers), size)
    for start in starts[torch.randperm(len(starts), generator=generator)].tolist():
        rows = slice(start, start + size)
        reach, n = left[rows].unsqueeze(1), count[rows].unsqueeze(1)
        column = torch.arange(int(n.max()))
        # Column j holds the word j places after the window's first, skipping the center itself.
        position = order[rows].unsqueeze(1) - reach + column + (column >= reach)
        contexts = words[position.clamp_(max=len(words) - 1)].masked_fill_(column >= n, -1)
        yield centers[rows], contexts, noise[rows]


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


class TextCorpusDataModule(LightningDataModule):
    """A plain-text corpus (a file, or a folder of files) as skip-gram batches for word2vec.

    Args:
        path: The corpus: a UTF-8 text file, or a folder whose files are read in name order. A line is a
            sentence; a one-line file (text8) is cut every ``max_sentence_length`` words.
        download: Fetch text8 (``http://mattmahoney.net/dc/text8.zip``, 100 MB of Wikipedia) into
            ``path`` when it is absent; needs the internet.
        min_count: Words seen fewer times are left out of the vocabulary (and of the windows).
        sample: Subsampling threshold of frequent words (word2vec's ``-sample``); 0 keeps every word.
        window: Largest distance between a center and a context word; each center draws its own window
            in ``1..window``.
        negative: Noise words per window, drawn from the unigram^0.75 distribution.
        batch_size: Center words per batch (each brings up to ``2 * window`` context pairs).
        val_fraction: Share of the corpus's words held out (before the test slice) for ``val/loss``.
        test_fraction: Share of the corpus's words held out at its end for ``test/loss``.
        lowercase: Lower-case the text before tokenising.
        max_sentence_length: Longest sentence in words; longer lines are cut (gensim's 10,000).
        chunk_tokens: Words read from the encoded corpus at a time; bounds the memory of batch making
            (windows do not reach across a chunk's edge).
        prefetch_batches: Batches a background thread makes ahead of training (0: made in the loop).
        cache_dir: Where the token and encoded files go. Unset: a temporary folder removed when the
            process ends; set: kept, and reused by later runs over the same unchanged files.
        seed: Seeds subsampling, windows and negatives (a new draw each epoch).
    """

    def __init__(
        self,
        path: str = "data/text8",
        download: bool = False,
        min_count: int = 5,
        sample: float = 1e-3,
        window: int = 5,
        negative: int = 5,
        batch_size: int = 1024,
        val_fraction: float = 0.01,
        test_fraction: float = 0.01,
        lowercase: bool = True,
        max_sentence_length: int = 10_000,
        chunk_tokens: int = 1 << 17,
        prefetch_batches: int = 8,
        cache_dir: str | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        checks = {
            "min_count": min_count >= 1,
            "window": window >= 1,
            "negative": negative >= 1,
            "batch_size": batch_size >= 1,
            "max_sentence_length": max_sentence_length >= 1,
            "chunk_tokens": chunk_tokens >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise DataConfigError(f"{name} must be at least 1, got {locals()[name]}")
        if not 0 <= sample < 1:
            raise DataConfigError(f"sample must be in [0, 1) (word2vec uses 1e-3 to 1e-5), got {sample}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise DataConfigError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be fractions in [0, 1) "
                "that leave part of the corpus for training"
            )
        self.path = Path(path)
        self.download = download
        self.min_count = min_count
        self.sample = sample
        self.window = window
        self.negative = negative
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.lowercase = lowercase
        self.max_sentence_length = max_sentence_length
        self.chunk_tokens = chunk_tokens
        self.prefetch_batches = max(prefetch_batches, 0)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed = seed
        self._prepared = False
        self._train: SkipGramBatches | None = None  # the training loader setup("fit") started
        self._train_handed_over = False  # to Lightning, by train_dataloader()

    # --- reading the corpus once ------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Lightning calls this before setup, on one process per node: the place to download.
        if self.download and not self.path.exists():
            from torchvision.datasets.utils import download_and_extract_archive

            if self.path.name != "text8":
                raise DataConfigError(
                    f"download fetches text8 only: set --data.path to a path ending in text8, not {self.path}"
                )
            download_and_extract_archive(TEXT8_URL, download_root=str(self.path.parent))

    def _files(self) -> list[Path]:
        if not self.path.exists():
            hint = "" if self.download else "; pass --data.download true to fetch text8 (needs the internet)"
            raise DataNotFoundError(
                f"corpus not found: path={self.path} is neither a text file nor a folder of text files "
                f"(text8 is one file, {TEXT8_URL}){hint}, or point --data.path at your corpus"
            )
        files = corpus_files(self.path)
        if not files:
            raise DataNotFoundError(f"corpus folder path={self.path} holds no files: put text files in it")
        return files

    def _cache_key(self, files: list[Path]) -> str:
        """Names the token file after what determines it: the files (name, size, time) and tokenising."""
        digest = hashlib.sha256(f"v1 lowercase={self.lowercase}".encode())
        for file in files:
            stat = file.stat()
            digest.update(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:20]

    def _token_file(self, files: list[Path]) -> tuple[Path, Path]:
        if self.cache_dir is None:
            folder = Path(tempfile.mkdtemp(prefix="text_corpus_"))
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = self.cache_dir
            folder.mkdir(parents=True, exist_ok=True)
        key = self._cache_key(files)
        return folder / f"{key}.tokens", folder / f"{key}.words.tsv"

    def prepare(self) -> None:
        """Read the corpus once: count the words, write the token stream, build the vocabulary, encode."""
        if self._prepared:
            return
        files = self._files()
        tokens_path, words_path = self._token_file(files)
        if tokens_path.is_file() and words_path.is_file():
            seen, seen_counts = [], []
            for line in words_path.read_text(encoding="utf-8").splitlines():
                word, count = line.rsplit("\t", 1)
                seen.append(word)
                seen_counts.append(int(count))
        else:
            seen, seen_counts = self._write_token_file(files, tokens_path)
            partial = words_path.with_suffix(".partial")
            partial.write_text(
                "".join(f"{w}\t{c}\n" for w, c in zip(seen, seen_counts, strict=True)), encoding="utf-8"
            )
            partial.replace(words_path)  # complete or absent, for a later run that reuses it
        self.raw_tokens = tokens_path.stat().st_size // 4  # words and line breaks
        self._tokens_path = tokens_path
        self._build_vocabulary(seen, torch.tensor(seen_counts, dtype=torch.long))
        self._encoded_path = tokens_path.with_name(
            f"{tokens_path.stem}.min{self.min_count}.len{self.max_sentence_length}.encoded"
        )
        if not self._encoded_path.is_file():
            self._encode(tokens_path)
        # In-vocabulary words, each stored with its sentence number.
        self.corpus_words = self._encoded_path.stat().st_size // 8
        self._prepared = True

    def _encode(self, tokens_path: Path) -> None:
        """The token file as vocabulary ids and sentence numbers, rare words and line breaks left out:
        what every epoch starts from, computed once. Written as int32 pairs, a chunk at a time."""
        stream = self._token_stream()
        partial = self._encoded_path.with_suffix(".partial")
        last_break, first = -1, 0
        with open(partial, "wb") as out:
            for begin in range(0, len(stream), self.chunk_tokens):
                chunk = stream[begin : begin + self.chunk_tokens].long()
                sentences, last_break = sentence_ids(chunk, self.max_sentence_length, last_break, first)
                first = int(sentences[-1])
                words = self._vocab_of[chunk.clamp(min=0)]
                kept = (words >= 0) & (chunk != LINE_BREAK)
                pairs = torch.stack([words[kept], sentences[kept]], dim=1).to(torch.int32)
                out.write(pairs.numpy().tobytes())
        partial.replace(self._encoded_path)

    def _write_token_file(self, files: list[Path], tokens_path: Path) -> tuple[list[str], list[int]]:
        """One pass: every word gets an id in order of first sight; the ids go to ``tokens_path``."""
        index: dict[str, int] = {}
        counts: Counter[str] = Counter()
        partial = tokens_path.with_suffix(".partial")
        with open(partial, "wb") as out:
            for file in files:
                try:
                    for text, ends_line in read_pieces(file):
                        words = tokenize(text, self.lowercase)
                        counts.update(words)
                        for word in words:
                            if word not in index:
                                index[word] = len(index)
                        ids = array("i", map(index.__getitem__, words))
                        if ends_line:
                            ids.append(LINE_BREAK)
                        ids.tofile(out)
                except UnicodeDecodeError as error:
                    raise DataConfigError(
                        f"{file} is not UTF-8 text ({error.reason} at byte {error.start}): "
                        "convert it or leave it out of the corpus"
                    ) from error
        partial.replace(tokens_path)
        seen = list(index)
        return seen, [counts[w] for w in seen]

    def _build_vocabulary(self, seen: list[str], seen_counts: Tensor) -> None:
        if int(seen_counts.sum()) == 0:
            raise DataConfigError(f"the corpus at path={self.path} holds no words: give it some text")
        # Most frequent first (ties: first seen first), as gensim sorts; rare words dropped.
        order = sorted(range(len(seen)), key=lambda i: (-int(seen_counts[i]), i))
        order = [i for i in order if seen_counts[i] >= self.min_count]
        if not order:
            raise DataConfigError(
                f"min_count={self.min_count} leaves no word in the vocabulary (the most frequent word occurs "
                f"{int(seen_counts.max())} times): lower --data.min_count or use a larger corpus"
            )
        self._words = [seen[i] for i in order]
        self._counts = seen_counts[order]
        # Token file ids (order of first sight) -> vocabulary ids; -1 for words left out.
        self._vocab_of = torch.full((len(seen),), -1, dtype=torch.long)
        self._vocab_of[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        self._keep = keep_probability(self._counts, self.sample)
        self._noise = AliasTable(noise_distribution(self._counts))

    # --- what the model and the callbacks read ----------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Words in the vocabulary; the model's ``vocab_size`` (linked by the CLI)."""
        self.prepare()
        return len(self._words)

    @property
    def words(self) -> list[str]:
        """The vocabulary, most frequent first: ``words[i]`` is the word of id ``i``."""
        self.prepare()
        return self._words

    @property
    def counts(self) -> Tensor:
        """How often each vocabulary word occurs in the corpus."""
        self.prepare()
        return self._counts

    @property
    def keep_probability(self) -> Tensor:
        """Per word, the probability that subsampling keeps an occurrence."""
        self.prepare()
        return self._keep

    @property
    def noise_table(self) -> AliasTable:
        """Draws negatives from the vocabulary's unigram^0.75 distribution."""
        self.prepare()
        return self._noise

    def token_stream(self) -> Tensor:
        """The corpus as int32 ids in order of first sight, ``LINE_BREAK`` between lines; mapped from the
        token file, not read into memory."""
        self.prepare()
        return self._token_stream()

    def _token_stream(self) -> Tensor:
        if self.raw_tokens == 0:
            return torch.empty(0, dtype=torch.int32)
        return torch.from_file(str(self._tokens_path), shared=False, size=self.raw_tokens, dtype=torch.int32)

    def encoded_corpus(self) -> tuple[Tensor, Tensor]:
        """The corpus's in-vocabulary words as vocabulary ids, and their sentence numbers (int32 views of
        the encoded file, mapped, not read into memory)."""
        self.prepare()
        if self.corpus_words == 0:
            empty = torch.empty(0, dtype=torch.int32)
            return empty, empty
        pairs = torch.from_file(
            str(self._encoded_path), shared=False, size=2 * self.corpus_words, dtype=torch.int32
        ).view(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    # --- splits -----------------------------------------------------------------------------------
    def _bounds(self) -> dict[str, tuple[int, int]]:
        self.prepare()
        n = self.corpus_words
        test_start = n - round(n * self.test_fraction)
        val_start = test_start - round(n * self.val_fraction)
        return {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, n)}

    def _batches(self, split: str) -> SkipGramBatches:
        self.prepare()
        start, stop = self._bounds()[split]
        fixed = split != "train"
        last_epoch = -1  # no trainer: nothing is made ahead
        if not fixed and self.trainer is not None:
            max_epochs = self.trainer.max_epochs
            # -1 (or None): the run ends on max_steps or max_time instead
            last_epoch = max_epochs - 1 if max_epochs is not None and max_epochs >= 0 else sys.maxsize
        shards = shard_arguments(self.trainer if fixed else None, split)
        return SkipGramBatches(
            self,
            start,
            stop,
            self.seed + (7 if fixed else 0),
            fixed,
            last_epoch,
            rank=shards["rank"],
            num_replicas=shards["num_replicas"],
        )

    def setup(self, stage: str) -> None:
        self.prepare()
        if stage == "fit" and self.trainer is not None and self.trainer.world_size > 1:
            raise DataConfigError(
                "word2vec trains in one process (its updates change the vectors in place, which DDP does "
                "not synchronise): fit with --trainer.devices 1 --trainer.num_nodes 1; test, validate and "
                "predict run on several"
            )
        if stage == "test" and self.test_fraction == 0:
            raise DataConfigError("test needs a held-out slice: set --data.test_fraction above 0")
        if stage == "fit":
            # The first epoch's batches are made while Lightning sets up the rest of the run (logger,
            # callbacks, optimizer): train_dataloader() hands over this loader.
            self._train = self._started_train_loader()
            self._train_handed_over = False

    def _started_train_loader(self) -> SkipGramBatches:
        self._close_train()
        loader = self._batches("train")
        loader.prefetch(self.trainer.current_epoch if self.trainer is not None else 0)
        return loader

    def train_dataloader(self) -> SkipGramBatches:
        if self._train is None or self._train_handed_over:
            self._train = self._started_train_loader()
        self._train_handed_over = True
        return self._train

    def _close_train(self) -> None:
        if self._train is not None:
            self._train.close()
            self._train = None

    def teardown(self, stage: str) -> None:
        self._close_train()  # an epoch prefetched past an early stop

    def val_dataloader(self) -> SkipGramBatches:
        return self._batches("val")

    def test_dataloader(self) -> SkipGramBatches:
        return self._batches("test")

    def predict_dataloader(self) -> TensorBatches:
        return TensorBatches(
            torch.arange(self.vocab_size),
            batch_size=max(self.batch_size, 1024),
            **shard_arguments(self.trainer, "predict"),
        )
