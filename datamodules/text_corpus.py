"""A plain-text corpus as skip-gram batches for word2vec (单词嵌入): the datamodule of the pieces below.

The treebank's pattern: ``datamodules.corpus.EncodedCorpus`` reads and tokenises the text once, counts
the vocabulary and caches the encoded corpus; ``datamodules.skipgram_sampling.SkipGramSampling`` holds
word2vec's subsampling, dynamic window and noise tables and turns a chunk of the corpus into batches;
``datamodules.skipgram_batches.SkipGramBatches`` streams a slice of the corpus epoch by epoch, a thread
making batches ahead. This module chooses the slices and builds the loaders.

Splits: the encoded corpus's last ``test_fraction`` is the test slice and the ``val_fraction`` before it
the validation slice (held-out loss, drawn with a fixed seed so epochs compare); training reads the rest
with a new draw of subsampling, windows and negatives every epoch (seeded by ``seed`` and the epoch).
``predict`` yields the vocabulary's ids, so a model returns every word's vector.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from core.domains import FolderPath, Fraction, NonNegativeInt, PositiveInt, Seed, require_at_least
from core.errors import DataConfigError, DataNotFoundError
from datamodules.corpus import EncodedCorpus, check_encoded, corpus_files
from datamodules.skipgram_batches import SkipGramBatches
from datamodules.skipgram_sampling import SkipGramSampling
from datamodules.tensors import TensorBatches, shard_arguments

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"


class TextCorpusDataModule(LightningDataModule):
    """A plain-text corpus (a file, or a folder of files) as skip-gram batches for word2vec.

    The corpus is checked once, when it is read (``check_data``): UTF-8 text, at least two words in the
    vocabulary, the encoded ids within it and consistent with its counts (a cache folder's files too),
    and a training slice that holds a pair of neighbouring words for the window.

    Args:
        path: The corpus: a UTF-8 text file, or a folder whose files are read in name order (either; it
            may be absent with ``download``). A line is a sentence; a one-line file (text8) is cut every
            ``max_sentence_length`` words.
        download: Fetch text8 (``http://mattmahoney.net/dc/text8.zip``, 100 MB of Wikipedia) into
            ``path`` when it is absent; needs the internet.
        min_count: Words seen fewer times are left out of the vocabulary (and of the windows) (>= 1).
        sample: Subsampling threshold of frequent words (word2vec's ``-sample``; in [0, 1)); 0 keeps every
            word.
        window: Largest distance between a center and a context word (>= 1); each center draws its own
            window in ``1..window``.
        negative: Noise words per window, drawn from the unigram^0.75 distribution (>= 1).
        batch_size: Center words per batch (>= 1; each brings up to ``2 * window`` context pairs).
        val_fraction: Share of the corpus's words held out (before the test slice) for ``val/loss`` (in
            [0, 1); with ``test_fraction``, below 1).
        test_fraction: Share of the corpus's words held out at its end for ``test/loss`` (in [0, 1)).
        lowercase: Lower-case the text before tokenising.
        max_sentence_length: Longest sentence in words (>= 1); longer lines are cut (gensim's 10,000).
        chunk_tokens: Words read from the encoded corpus at a time (>= 1); bounds the memory of batch
            making (windows do not reach across a chunk's edge).
        prefetch_batches: Batches a background thread makes ahead of training (>= 0; 0: made in the loop).
        cache_dir: Folder the token and encoded files go to (made if absent). Unset: a temporary folder
            removed when the process ends; set: kept, and reused by later runs over the same unchanged
            files.
        seed: Seeds subsampling, windows and negatives (0 to 2**32 - 1; a new draw each epoch).
    """

    #: What ``predict`` runs on, for the message that answers ``--data.predict_path`` (this data is made
    #: or named by its own arguments, not read from the user's files).
    predicts_on: ClassVar[str] = "no input: predict writes the learnt word vectors (vectors.txt)"

    #: Why ``fit`` refuses several processes (``setup``'s one-line error says it); tests expect that
    #: refusal and evaluate a checkpoint trained in one process instead (docs/architecture.md).
    single_process_fit: ClassVar[str] = (
        "its updates change the vectors in place, which DDP does not synchronise"
    )

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: a 400-line corpus of two topics, every word kept (no subsampling)."""
        from datamodules._samples import write_topics_corpus

        return {"path": str(write_topics_corpus(root / "topics.txt")), "min_count": 1, "sample": 0}

    def __init__(
        self,
        path: str = "data/text8",
        download: bool = False,
        min_count: PositiveInt = 5,
        sample: Fraction = 1e-3,
        window: PositiveInt = 5,
        negative: PositiveInt = 5,
        batch_size: PositiveInt = 1024,
        val_fraction: Fraction = 0.01,
        test_fraction: Fraction = 0.01,
        lowercase: bool = True,
        max_sentence_length: PositiveInt = 10_000,
        chunk_tokens: PositiveInt = 1 << 17,
        prefetch_batches: NonNegativeInt = 8,
        cache_dir: FolderPath | None = None,
        seed: Seed = 42,
    ) -> None:
        super().__init__()
        # The parser refuses these from the command line; the checks are for a caller in Python.
        require_at_least(
            "data",
            1,
            min_count=min_count,
            window=window,
            negative=negative,
            batch_size=batch_size,
            max_sentence_length=max_sentence_length,
            chunk_tokens=chunk_tokens,
        )
        require_at_least("data", 0, prefetch_batches=prefetch_batches)
        if not 0 <= sample < 1:
            raise DataConfigError(
                f"--data.sample must be in [0, 1) (word2vec uses 1e-3 to 1e-5), got {sample}"
            )
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise DataConfigError(
                f"--data.val_fraction={val_fraction} and --data.test_fraction={test_fraction} must be "
                "fractions in [0, 1) that leave part of the corpus for training"
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
        self.prefetch_batches = prefetch_batches
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed = seed
        self._corpus: EncodedCorpus | None = None
        self._sampling: SkipGramSampling | None = None
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

    def prepare(self) -> None:
        """Read the corpus (or find it in ``cache_dir``) and build the sampling tables, once."""
        _ = self.sampling

    @property
    def corpus(self) -> EncodedCorpus:
        """The corpus, read (or found in ``cache_dir``) and checked (``check_data``) on first use."""
        if self._corpus is None:
            corpus = EncodedCorpus(
                self._files(),
                name=str(self.path),
                lowercase=self.lowercase,
                min_count=self.min_count,
                max_sentence_length=self.max_sentence_length,
                chunk_tokens=self.chunk_tokens,
                cache_dir=self.cache_dir,
            )
            self.check_data(corpus)
            self._corpus = corpus
        return self._corpus

    def check_data(self, corpus: EncodedCorpus) -> None:
        """Check the encoded corpus once, when it is read (never per batch), with vectorised passes over
        its ids: each within the vocabulary, each word occurring as often as the vocabulary counts (a
        cache folder's files that disagree are stale or damaged), sentence numbers in order; and a
        training slice holding two neighbouring words of one sentence, without which no window has a
        pair. (Decoding errors and a vocabulary of fewer than two words are refused as it is read.)"""
        ids, sentences = corpus.encoded()
        check_encoded(corpus, ids, sentences)
        start, stop = self._bounds(corpus)["train"]
        train = sentences[start:stop]
        if not bool((train[1:] == train[:-1]).any()):
            raise DataConfigError(
                f"the corpus at path={self.path} leaves no pair of neighbouring words in one sentence for "
                f"training ({stop - start} words after --data.val_fraction={self.val_fraction} and "
                f"--data.test_fraction={self.test_fraction}): use a larger corpus or hold out less"
            )

    @property
    def sampling(self) -> SkipGramSampling:
        """word2vec's sampling tables for this corpus's vocabulary."""
        if self._sampling is None:
            self._sampling = SkipGramSampling.from_counts(
                self.corpus.counts, self.sample, self.window, self.negative, self.batch_size
            )
        return self._sampling

    # --- what the model and the callbacks read ----------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Words in the vocabulary; the model's ``vocab_size`` (linked by the CLI)."""
        return len(self.corpus.words)

    @property
    def words(self) -> list[str]:
        """The vocabulary, most frequent first: ``words[i]`` is the word of id ``i``."""
        return self.corpus.words

    @property
    def counts(self) -> Tensor:
        """How often each vocabulary word occurs in the corpus."""
        return self.corpus.counts

    # --- splits -----------------------------------------------------------------------------------
    def _bounds(self, corpus: EncodedCorpus | None = None) -> dict[str, tuple[int, int]]:
        n = (corpus or self.corpus).corpus_words
        test_start = n - round(n * self.test_fraction)
        val_start = test_start - round(n * self.val_fraction)
        return {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, n)}

    def _batches(self, split: str) -> SkipGramBatches:
        start, stop = self._bounds()[split]
        fixed = split != "train"
        last_epoch = -1  # no trainer: nothing is made ahead
        if not fixed and self.trainer is not None:
            max_epochs = self.trainer.max_epochs
            # -1 (or None): the run ends on max_steps or max_time instead
            last_epoch = max_epochs - 1 if max_epochs is not None and max_epochs >= 0 else sys.maxsize
        shards = shard_arguments(self.trainer if fixed else None, split)
        return SkipGramBatches(
            self.corpus,
            self.sampling,
            start,
            stop,
            self.seed + (7 if fixed else 0),
            fixed,
            chunk_tokens=self.chunk_tokens,
            prefetch_batches=self.prefetch_batches,
            last_epoch=last_epoch,
            rank=shards["rank"],
            num_replicas=shards["num_replicas"],
        )

    def setup(self, stage: str) -> None:
        self.prepare()
        if stage == "fit" and self.trainer is not None and self.trainer.world_size > 1:
            raise DataConfigError(
                f"word2vec trains in one process ({self.single_process_fit}): fit with --trainer.devices 1 "
                "--trainer.num_nodes 1; test, validate and predict run on several"
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
