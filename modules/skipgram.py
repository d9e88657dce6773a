"""Lesson 单词嵌入: the tutorial's skip-gram model with negative sampling, trained as word2vec.c trains it.

Run: ``python -m experiments fit --config configs/word2vec.yaml`` (then ``test`` / ``predict`` with
``--ckpt_path best``). Batches come from ``datamodules.TextCorpusDataModule``: ``(center, context,
negatives)``, where ``context`` holds the context ids of each center (-1: empty slot) and its
``negative`` noise words are shared by the center's context pairs.

The model is the tutorial's: input vectors ``u`` and output vectors ``v`` (``nn.Embedding``, ``sparse=True``),
``u`` uniform in ``±0.5 / dim`` and ``v`` zero, and the loss of a pair (input word ``a``, output word
``b``, noise words ``n_k``) ``-log σ(u_a·v_b) - Σ_k log σ(-u_a·v_{n_k})``, summed over the batch. As in
word2vec.c the context word is the input and the center word (with the noise words) the output; the
windows are symmetric, so over a corpus every pair is seen both ways.

Ways to train it:
- ``closed_form: true`` (default): word2vec.c's SGD step, computed directly (``modules.skipgram_updates``):
  on a CPU word2vec.c's own loop compiled by numba (``cpu_loop: true``), pair by pair in place; on a GPU
  (or without numba, or with bfloat16 weights) the same step as batched matrix products. On a CPU,
  ``workers`` background threads (``core.threads.Workers``) apply a batch's ``update_rows``-center slices
  while ``training_step`` returns to Lightning's loop, so the loop, the batch-making thread and the
  updates overlap; several threads update the tables at once, unlocked, as word2vec.c's and gensim's
  worker threads do. The queued updates are all applied before anything reads the weights: at the
  epoch's end, before validation, before a checkpoint is written and when a callback asks for
  ``embeddings()``.
- ``closed_form: false``: the tutorial's ``forward`` loss, ``manual_backward`` and the injected optimizer
  (which must take sparse gradients: SGD, SparseAdam), one step per batch. With SGD it is the matrix
  form's update of one slice (the tests check it to float precision), so give it batches of about
  ``update_rows`` centers (``--data.batch_size 1024``): SGD on the summed loss of a large batch diverges.

The learning rate falls linearly from the optimizer's (0.025, word2vec's for skip-gram) to ``min_lr``
over the run's batches, as word2vec.c and gensim decay ``alpha`` over its words; each slice of a batch
gets its own rate, and it is written into the optimizer's parameter groups, where the learning-rate
monitor reads it. How fast each form is, and how the defaults were chosen: benchmarks/RESULTS.md.

In the matrix form (and the autograd path), a word met several times in one update (a frequent word, a
common noise word) gets the sum of its updates, computed from the same old vectors: with too many
occurrences at once the sum overshoots where the sequential steps would not. ``update_rows`` keeps
updates small, and ``duplicate_cap`` bounds a row's summed step at ``duplicate_cap`` occurrences' worth.

Logged: ``train/loss``, ``val/loss``, ``test/loss``: the loss per (context, center) pair with its noise
words. ``predict`` returns each word's input vector (the embedding word2vec saves); the
``modules.word_embeddings.WordEmbeddings`` callback writes them in word2vec's text format, with their
nearest neighbours.

Departures from the tutorial:
- ``emb_size`` / ``emb_dimension`` are ``vocab_size`` (given by the datamodule through the CLI) and
  ``embedding_dim``; ``Variable`` is gone.
- ``forward``'s ``.squeeze()`` calls squeeze every size-1 dimension, so a batch of one pair or one noise
  word broke; it squeezes only the dimension it means.
- ``save_embedding`` wrote no newline after the header nor after any vector (the whole file one line),
  took an unused ``use_cuda``, and ``test()`` called it without a file name; it writes the word2vec text
  format (``count dim``, then ``word v1 ... vd`` per line) that ``gensim``'s
  ``KeyedVectors.load_word2vec_format`` reads, from whatever device the weights are on.
- The tutorial's chapter shows no training loop; this one is word2vec.c's (SGD, linear decay), with the
  negatives of a window shared by its pairs (as pWord2Vec, Ji et al. 2016) so that on a GPU a window's
  updates are matrix products.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from core.domains import NonNegativeFloat, NonNegativeInt, PositiveInt, ThreadCount
from core.errors import ExperimentError
from core.metrics import EpochMean, log_phase, phase_metrics
from core.optim import OptimizerCallable, build_optimizer
from core.threads import Workers
from modules.skipgram_updates import Batch, closed_form_update, compiled_loop, loop_applies


class SkipGramModel(LightningModule):
    """Skip-gram with negative sampling: the tutorial's ``u`` / ``v`` embeddings and log-sigmoid loss.

    Args:
        vocab_size: Words in the vocabulary (a count >= 1; the tutorial's ``emb_size``); the datamodule
            provides it.
        embedding_dim: Size of each word vector (a count >= 1; the tutorial's ``emb_dimension``).
        optimizer: Builds the optimizer; its learning rate is the starting one (word2vec's 0.025 for
            skip-gram). The closed-form step reads only the learning rate; the autograd path steps it
            and needs one that takes sparse gradients (SGD, SparseAdam).
        min_lr: The learning rate falls linearly from the optimizer's to this (a finite number >= 0) over
            the run.
        closed_form: Update with word2vec's closed-form gradient (fast); false: autograd on ``forward``.
        update_rows: Closed form: centers per update (a count >= 1); a batch is applied in slices of this
            many rows, each seeing the last's result (on a CPU, the unit of work the ``workers`` share).
        duplicate_cap: Matrix form (a count >= 0): a word met more often than this in one update gets
            this many occurrences' worth of update, shared by its occurrences; 0 sums them all. (The loop
            needs none: each step sees the last.)
        workers: Closed form on a CPU: background threads applying the slices (1 to 256). 1: one
            thread, in order, deterministic; more update the tables at once, unlocked (Hogwild, like
            word2vec.c's and gensim's workers): faster on a CPU with idle cores, not reproducible bit for
            bit.
        cpu_loop: Closed form on a CPU: run word2vec.c's loop compiled by numba (pair by pair, in
            place); false: the matrix form that a GPU runs (about 2x slower on a CPU).
    """

    #: Why ``--compile.enabled`` refuses this module (experiments/compile.py).
    compile_unsupported = "its training updates run in a numba-compiled loop, not in forward"
    #: Why ``python -m experiments export`` refuses it, and what it offers instead.
    export_unsupported = (
        "word2vec's product is its word vectors, not a network to run: fit writes them as vectors.txt "
        "(word2vec text format, which gensim and most tools read) in the run folder"
    )
    #: Arguments that make the model small enough for tests' few steps (docs/architecture.md).
    small_args: ClassVar[dict[str, Any]] = {"embedding_dim": 16}

    def __init__(
        self,
        vocab_size: PositiveInt,
        embedding_dim: PositiveInt = 100,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.025),
        min_lr: NonNegativeFloat = 0.0001,
        closed_form: bool = True,
        update_rows: PositiveInt = 1024,
        duplicate_cap: NonNegativeInt = 32,
        workers: ThreadCount = 1,
        cpu_loop: bool = True,
    ) -> None:
        super().__init__()
        if min(vocab_size, embedding_dim, update_rows, workers) < 1 or duplicate_cap < 0:
            raise ExperimentError(
                f"vocab_size, embedding_dim, update_rows and workers must be at least 1 and duplicate_cap at "
                f"least 0, got {vocab_size}, {embedding_dim}, {update_rows}, {workers} and {duplicate_cap}"
            )
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.min_lr = min_lr
        self.closed_form = closed_form
        self.update_rows = update_rows
        self.duplicate_cap = duplicate_cap
        self.workers = workers
        # Loaded (compiled on first use, then from numba's cache) with the model, not inside fit.
        self._loop = compiled_loop() if closed_form and cpu_loop else None
        self._updates: Workers | None = None  # background threads applying the slices (a CPU)
        self._total_steps: float | None = None
        self.emb_size = vocab_size
        self.emb_dimension = embedding_dim
        self.u_embeddings = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        self.v_embeddings = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        self.init_emb()
        # Both paths update inside training_step; Lightning only runs the loop.
        self.automatic_optimization = False
        self.train_loss, self.val_loss, self.test_loss = EpochMean(), EpochMean(), EpochMean()

    def init_emb(self) -> None:
        """The tutorial's (and word2vec.c's) initialisation: ``u`` uniform in ``±0.5 / dim``, ``v`` zero."""
        initrange = 0.5 / self.emb_dimension
        nn.init.uniform_(self.u_embeddings.weight, -initrange, initrange)
        nn.init.zeros_(self.v_embeddings.weight)

    # --- the tutorial's model ---------------------------------------------------------------------------
    def forward(self, pos_u: Tensor, pos_v: Tensor, neg_v: Tensor) -> Tensor:
        """Summed loss of pairs ``(pos_u[i], pos_v[i])`` with noise words ``neg_v[i]`` (N, K)."""
        emb_u = self.u_embeddings(pos_u)
        emb_v = self.v_embeddings(pos_v)
        score = F.logsigmoid(torch.sum(emb_u * emb_v, dim=1))
        neg_emb_v = self.v_embeddings(neg_v)
        neg_score = F.logsigmoid(-torch.bmm(neg_emb_v, emb_u.unsqueeze(2)).squeeze(2))
        return -(score.sum() + neg_score.sum())

    @staticmethod
    def pairs(batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """The batch as the tutorial's pairs ``(pos_u, pos_v, neg_v)``: one row per (context, center) pair,
        with the center's noise words."""
        center, context, negatives = batch
        valid = context >= 0
        row = valid.nonzero()[:, 0]
        return context[valid], center[row], negatives[row]

    def save_embedding(self, id2word: dict[int, str] | list[str], file_name: str | Path) -> None:
        """Write the input vectors in word2vec's text format: ``count dim``, then ``word v1 ... vd`` lines."""
        embedding = self.embeddings().cpu()
        words = id2word.items() if isinstance(id2word, dict) else enumerate(id2word)
        with open(file_name, "w", encoding="utf-8") as out:
            out.write(f"{len(id2word)} {self.emb_dimension}\n")
            for wid, word in words:
                out.write(f"{word} {' '.join(f'{x:.6g}' for x in embedding[wid].tolist())}\n")

    # --- what callbacks and predict read ------------------------------------------------------------
    def embeddings(self) -> Tensor:
        """The word vectors word2vec saves: the input embeddings ``u``, (vocab_size, embedding_dim)."""
        self._sync()  # a callback reading them mid-training sees every queued update applied
        return self.u_embeddings.weight.detach()

    def nearest(self, word_ids: Tensor, k: int = 10) -> tuple[Tensor, Tensor]:
        """Cosine similarities and ids of the ``k`` nearest other words of each of ``word_ids``."""
        vectors = F.normalize(self.embeddings(), dim=1)
        similarity = vectors[word_ids.to(vectors.device)] @ vectors.T
        similarity.scatter_(1, word_ids.to(vectors.device).unsqueeze(1), -2.0)  # not the word itself
        return similarity.topk(min(k, len(vectors) - 1), dim=1)

    # --- training -----------------------------------------------------------------------------------
    def closed_form_step(self, batch: Batch, lr: float) -> tuple[Tensor, int]:
        """word2vec's SGD update of the tables for a batch of windows (``modules.skipgram_updates``): the
        compiled loop on a CPU, else the matrix form; the summed loss before it and the pair count."""
        u, v = self.u_embeddings.weight, self.v_embeddings.weight
        return closed_form_update(u, v, batch, lr, self._loop, self.duplicate_cap)

    def uses_loop(self) -> bool:
        """Whether the closed form runs as the compiled loop (CPU tables of float32 or float64)."""
        return loop_applies(self._loop, self.u_embeddings.weight, self.v_embeddings.weight)

    def on_train_start(self) -> None:
        self._total_steps = None  # worked out again for this run
        if self.closed_form and self.trainer.world_size > 1:
            raise ExperimentError(
                "the closed-form word2vec step updates the weights in place, which DDP does not synchronise: "
                "train on one device or set --model.closed_form false"
            )
        if self.closed_form and self.device.type == "cpu":
            # On a GPU the kernels already run asynchronously; on a CPU threads do that job.
            self._stop_updates()
            self._updates = Workers(self.closed_form_step, self.workers, 8 * self.workers, "skipgram-update")

    def _sync(self) -> None:
        """Wait for the queued updates and count their loss into ``train/loss``."""
        if self._updates is None:
            return
        results = self._updates.drain()
        count = sum(pairs for _, pairs in results)
        if count:
            self.train_loss.update(torch.stack([loss for loss, _ in results]).sum() / count, weight=count)

    def _stop_updates(self) -> None:
        if self._updates is not None:
            updates, self._updates = self._updates, None
            updates.stop()

    def on_train_end(self) -> None:
        self._sync()
        self._stop_updates()

    def teardown(self, stage: str) -> None:
        self._stop_updates()  # also after an error, which skips on_train_end

    def on_validation_start(self) -> None:
        self._sync()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The checkpoint's state_dict holds the live tables, written after this hook returns.
        self._sync()

    def learning_rate(self, offset: float = 0.0) -> float:
        """word2vec's schedule (gensim's ``alpha - (alpha - min_alpha) * progress``), with progress the
        share of the run's batches done: from the optimizer's learning rate down to ``min_lr``.
        ``offset`` is the share of the current batch done: each slice of a batch gets its own rate, so the
        schedule is as smooth with large batches as with small ones."""
        if self._total_steps is None:
            self._total_steps = self.total_steps()
        total = self._total_steps
        progress = min((self.global_step + offset) / total, 1.0) if 0 < total < float("inf") else 0.0
        return self.start_lr - (self.start_lr - self.min_lr) * progress

    def total_steps(self) -> float:
        """The run's steps: Lightning's estimate for a loader with a length; for a streamed corpus, which
        has none (its epochs' lengths are drawn), the loader's ``operator.length_hint`` per epoch."""
        trainer = self.trainer
        if trainer.num_training_batches != float("inf"):
            return trainer.estimated_stepping_batches
        per_epoch = operator.length_hint(trainer.train_dataloader, 0)
        if per_epoch <= 0 or trainer.max_epochs is None or trainer.max_epochs < 0:
            return trainer.max_steps if trainer.max_steps > 0 else float("inf")
        steps = per_epoch * max(trainer.max_epochs, 1)
        return min(steps, trainer.max_steps) if trainer.max_steps > 0 else steps

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        lr = self.learning_rate()
        for group in optimizer.param_groups:  # where the learning-rate monitor reads it
            group["lr"] = lr
        if self.closed_form:
            # Updates of `update_rows` centers at a time: their tensors stay in the CPU's cache, and the
            # later rows see the earlier rows' updates, as in word2vec's sequential loop.
            slices = list(zip(*(t.split(self.update_rows) for t in batch), strict=True))
            rates = [self.learning_rate(i / len(slices)) for i in range(len(slices))]
            # No parameter has a gradient, so this changes nothing; it counts the step (global_step).
            optimizer.step()
            if self._updates is not None:
                for rows, rate in zip(slices, rates, strict=True):
                    self._updates.submit(rows, rate)
                if self.trainer.is_last_batch:
                    self._sync()  # the epoch's end (callbacks, logging) sees all its updates
                return
            results = [self.closed_form_step(rows, rate) for rows, rate in zip(slices, rates, strict=True)]
            loss = torch.stack([part_loss for part_loss, _ in results]).sum()
            count = sum(part_count for _, part_count in results)
        else:
            pos_u, pos_v, neg_v = self.pairs(batch)
            loss, count = self(pos_u, pos_v, neg_v), len(pos_u)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        if count:
            self.train_loss.update(loss.detach() / count, weight=count)

    def on_train_epoch_end(self) -> None:
        self._sync()
        self._log_phase("train")

    def _evaluate(self, batch: Batch, phase: str) -> None:
        pos_u, pos_v, neg_v = self.pairs(batch)
        if len(pos_u):
            getattr(self, f"{phase}_loss").update(self(pos_u, pos_v, neg_v) / len(pos_u), len(pos_u))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_phase("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_phase("test")

    def _log_phase(self, phase: str) -> None:
        # A split that gave no pairs this epoch has no loss to show.
        log_phase(self, phase, phase_metrics(self, phase, ("loss",)), optional=("loss",))

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.u_embeddings(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = build_optimizer(self.optimizer, self.parameters())
        self.start_lr = optimizer.param_groups[0]["lr"]
        return optimizer
