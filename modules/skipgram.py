"""Lesson 单词嵌入: the seed's skip-gram model with negative sampling, trained as word2vec.c trains it.

Run: ``python -m experiments fit --config configs/word2vec.yaml`` (then ``test`` / ``predict`` with
``--ckpt_path best``). Batches come from ``datamodules.TextCorpusDataModule``: ``(center, context,
negatives)``, where ``context`` holds the context ids of each center (-1: empty slot) and its
``negative`` noise words are shared by the center's context pairs.

The model is the seed's: input vectors ``u`` and output vectors ``v`` (``nn.Embedding``, ``sparse=True``),
``u`` uniform in ``±0.5 / dim`` and ``v`` zero, and the loss of a pair (input word ``a``, output word
``b``, noise words ``n_k``) ``-log σ(u_a·v_b) - Σ_k log σ(-u_a·v_{n_k})``, summed over the batch. As in
word2vec.c the context word is the input and the center word (with the noise words) the output; the
windows are symmetric, so over a corpus every pair is seen both ways.

Ways to train it:
- ``closed_form: true`` (default): word2vec.c's SGD step, computed directly: no autograd graph, no
  sparse gradient tensors, no optimizer state. Two forms of it:
  - on a CPU (``cpu_loop: true``, default): word2vec.c's own loop, compiled by numba
    (``modules._word2vec_loop``): for each context word and each of its center's targets, one dot
    product and two row updates in place, each step seeing the last, as word2vec.c and gensim's Cython
    loop compute it. PyTorch's eager CPU operations cannot fuse that gather-multiply-scatter; the
    loop updates 1.8-2.6x more pairs per second than the matrix form below (one thread, tinyshakespeare
    and the King James Bible: benchmarks/word2vec_update.py).
  - on a GPU (or ``cpu_loop: false``, or bfloat16 weights, or without numba): the matrix form. Per
    center, the ``m`` context rows ``U`` of ``u`` and the ``k + 1`` output rows ``V`` of ``v`` (center
    and noise) give scores ``S = U Vᵀ`` and ``G = (label - σ(S)) * lr``, then ``U += G V`` and
    ``V += Gᵀ U``: batched matrix products over ``update_rows`` centers at a time, added into the
    tables. Within one update every step is computed from the same old vectors (see below).
  On a CPU, ``workers`` background threads apply a batch's ``update_rows``-center slices
  (``BackgroundUpdates``) while ``training_step`` returns to Lightning's loop, so the loop, the
  batch-making thread and the updates overlap; more than one thread updates the tables at once,
  unlocked, as word2vec.c's and gensim's worker threads do. The queued updates are all applied before
  anything reads the weights: at the epoch's end, before validation, before a checkpoint is written
  and when a callback asks for ``embeddings()``.
- ``closed_form: false``: the seed's ``forward`` loss, ``manual_backward`` and the injected optimizer
  (which must take sparse gradients: SGD, SparseAdam), one step per batch. With SGD it is the matrix
  form's update of one slice (the tests check it to float precision), so give it batches of about
  ``update_rows`` centers (``--data.batch_size 1024``): SGD on the summed loss of a 4,096-center batch
  diverges.

The learning rate falls linearly from the optimizer's (0.025, word2vec's for skip-gram) to ``min_lr``
over the run's batches, as word2vec.c and gensim decay ``alpha`` over its words; it is written into the
optimizer's parameter groups, where the learning-rate monitor reads it.

In the matrix form (and the autograd path), a word met several times in one update (a frequent word, a
common noise word) gets the sum of its updates, as word2vec.c's sequential steps add up, but computed
from the same old vectors: with too many occurrences at once the sum overshoots where the sequential
steps would not (a 4,096-center update on tinyshakespeare diverged). ``update_rows`` keeps updates
small, and ``duplicate_cap`` bounds a row's summed step at ``duplicate_cap`` occurrences' worth (its
occurrences share that); at 32 it changed no measured result on tinyshakespeare, and it keeps tiny
vocabularies without subsampling from diverging.

Logged: ``train/loss``, ``val/loss``, ``test/loss``: the loss per (context, center) pair with its noise
words. ``predict`` returns each word's input vector (the embedding word2vec saves); the
``WordEmbeddings`` callback (below) writes them in word2vec's text format.

Departures from the seed:
- ``emb_size`` / ``emb_dimension`` are ``vocab_size`` (given by the datamodule through the CLI) and
  ``embedding_dim``; ``Variable`` is gone.
- ``forward``'s ``.squeeze()`` calls squeeze every size-1 dimension, so a batch of one pair or one noise
  word broke; it squeezes only the dimension it means.
- ``save_embedding`` wrote no newline after the header nor after any vector (the whole file one line),
  took an unused ``use_cuda``, and ``test()`` called it without a file name; it writes the word2vec text
  format (``count dim``, then ``word v1 ... vd`` per line) that ``gensim``'s
  ``KeyedVectors.load_word2vec_format`` reads, from whatever device the weights are on.
- The seed's chapter shows no training loop; this one is word2vec.c's (SGD, linear decay), with the
  negatives of a window shared by its pairs (as pWord2Vec, Ji et al. 2016) so that on a GPU a window's
  updates are matrix products.
"""

from __future__ import annotations

import functools
import operator
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from queue import Queue

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torchmetrics import MeanMetric

from core.distributed import run_dir
from core.errors import ExperimentError
from core.metrics import log_phase, phase_metrics
from core.optim import OptimizerCallable

Batch = tuple[Tensor, Tensor, Tensor]


class BackgroundUpdates:
    """Threads that apply closed-form updates while the training loop goes on (word2vec's worker threads).

    ``submit`` queues a batch's slices and returns at once (blocking only while ``depth`` slices wait),
    so Lightning's loop and the batch-making thread run beside the updates instead of between them.
    ``workers`` threads take slices from one queue in order and update the shared tables unlocked
    (Hogwild, as word2vec.c's and gensim's threads); with one thread the slices are applied in the
    order they were queued, as a synchronous loop would. ``drain`` waits until every queued slice is
    applied and returns their summed loss and pair count; an error in a thread is raised there (or at
    the next ``submit``) in the training loop's thread. ``close`` (or, after an error that skipped
    ``on_train_end``, the interpreter's exit, through ``weakref.finalize``) lets the threads finish the
    queued slices and stops them: a daemon thread cut off inside a torch operation aborts the process.
    """

    def __init__(self, step: Callable[[Batch, float], tuple[Tensor, int]], workers: int, depth: int) -> None:
        self.step = step
        self.queue: Queue = Queue(maxsize=max(depth, 1))
        self.lock = threading.Lock()
        self.losses: list[Tensor] = []
        self.count = 0
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._work, name=f"skipgram-update-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self.threads:
            thread.start()
        self._stop = weakref.finalize(self, _stop_threads, self.queue, self.threads)

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:  # after an error the rest is dropped; drain raises it
                    loss, count = self.step(*item)
                    with self.lock:
                        self.losses.append(loss)
                        self.count += count
            except BaseException as error:  # handed to the training loop's thread
                self.error = error
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def submit(self, slices: list[Batch], rates: list[float]) -> None:
        """Queue ``slices``, each to be applied with its learning rate in ``rates``."""
        self._raise()
        for item in zip(slices, rates, strict=True):
            self.queue.put(item)

    def drain(self) -> tuple[Tensor | None, int]:
        """Wait for the queued slices; their summed loss (None if there were none) and pair count."""
        self.queue.join()
        with self.lock:
            losses, count = self.losses, self.count
            self.losses, self.count = [], 0
        self._raise()
        return (torch.stack(losses).sum() if losses else None), count

    def close(self) -> None:
        """Stop the threads after the queued slices (once; later calls do nothing); a later ``drain``
        returns nothing."""
        self._stop()


def _add_rows(table: Tensor, index: Tensor, rows: Tensor) -> None:
    """``table[index[i]] += rows[i]``, summing repeated indices."""
    if table.is_cpu:
        # With an expanded index, scatter_add_ sorts it and adds each table row's updates in one pass,
        # where index_add_ pays a kernel call per row: 2.3x faster for 1,024-center updates.
        table.scatter_add_(0, index.unsqueeze(1).expand_as(rows), rows)
    else:
        table.index_add_(0, index, rows)


@functools.cache
def compiled_loop() -> Callable | None:
    """``modules._word2vec_loop.skipgram_loop``, or None (with a warning) when numba cannot import or
    compile it: training goes on with the matrix form."""
    try:
        from modules._word2vec_loop import skipgram_loop
    except ImportError as error:
        problem = f"needs numba>=0.60 ({error}); fix: pip install 'numba>=0.60'"
    except Exception as error:  # a numba that cannot compile it: training need not stop for that
        problem = f"could not be compiled by numba ({type(error).__name__}: {error})"
    else:
        return skipgram_loop
    warnings.warn(f"the word2vec CPU loop {problem}; using the matrix form, about 2x slower", stacklevel=3)
    return None


def _stop_threads(queue: Queue, threads: list[threading.Thread]) -> None:
    """One ``None`` per thread after the queued items, then wait for them (``BackgroundUpdates.close``)."""
    for _ in threads:
        queue.put(None)
    for thread in threads:
        thread.join()


class SkipGramModel(LightningModule):
    """Skip-gram with negative sampling: the seed's ``u`` / ``v`` embeddings and log-sigmoid loss.

    Args:
        vocab_size: Words in the vocabulary (the seed's ``emb_size``); the datamodule provides it.
        embedding_dim: Size of each word vector (the seed's ``emb_dimension``).
        optimizer: Builds the optimizer; its learning rate is the starting one (word2vec's 0.025 for
            skip-gram). The closed-form step reads only the learning rate; the autograd path steps it
            and needs one that takes sparse gradients (SGD, SparseAdam).
        min_lr: The learning rate falls linearly from the optimizer's to this over the run.
        closed_form: Update with word2vec's closed-form gradient (fast); false: autograd on ``forward``.
        update_rows: Closed form: centers per update; a batch is applied in slices of this many rows,
            each seeing the last's result (on a CPU, the unit of work the ``workers`` share). In the
            matrix form larger slices cost less per pair (King James Bible, one thread: 1,024 rows
            updated 10 % more pairs per second than 512 and 16 % more than 2,048) but sum more updates
            of the same word from the same old vectors (see the module docstring): at 1,024 the
            held-out loss equalled 512's; at 2,048 it was 0.4 % worse on tinyshakespeare.
        duplicate_cap: Matrix form: a word met more often than this in one update gets this many
            occurrences' worth of update, shared by its occurrences; 0 sums them all. (The loop needs
            none: each step sees the last.)
        workers: Closed form on a CPU: background threads applying the slices. 1: one thread, in
            order, deterministic; more update the tables at once, unlocked (Hogwild, like word2vec.c's
            and gensim's workers): faster on a CPU with idle cores, not reproducible bit for bit.
        cpu_loop: Closed form on a CPU: run word2vec.c's loop compiled by numba (pair by pair, in
            place); false: the matrix form that a GPU runs (1.8-2.6x slower on a CPU).
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 100,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.025),
        min_lr: float = 0.0001,
        closed_form: bool = True,
        update_rows: int = 1024,
        duplicate_cap: int = 32,
        workers: int = 1,
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
        self._updates: BackgroundUpdates | None = None
        self._total_steps: float | None = None
        self.emb_size = vocab_size
        self.emb_dimension = embedding_dim
        self.u_embeddings = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        self.v_embeddings = nn.Embedding(vocab_size, embedding_dim, sparse=True)
        self.init_emb()
        # Both paths update inside training_step; Lightning only runs the loop.
        self.automatic_optimization = False
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()

    def init_emb(self) -> None:
        """The seed's (and word2vec.c's) initialisation: ``u`` uniform in ``±0.5 / dim``, ``v`` zero."""
        initrange = 0.5 / self.emb_dimension
        nn.init.uniform_(self.u_embeddings.weight, -initrange, initrange)
        nn.init.zeros_(self.v_embeddings.weight)

    # --- the seed's model ---------------------------------------------------------------------------
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
        """The batch as the seed's pairs ``(pos_u, pos_v, neg_v)``: one row per (context, center) pair,
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
    @torch.no_grad()
    def closed_form_step(self, batch: Batch, lr: float) -> tuple[Tensor, int]:
        """word2vec's SGD update for a batch of windows; returns the summed loss before it and the pair count.

        On a CPU (with ``cpu_loop``) word2vec.c's own loop, compiled: pair by pair, each step seeing the
        last (``modules._word2vec_loop``). Otherwise the matrix form, per center: inputs ``U`` = ``u`` rows
        of its ``m`` context words, outputs ``V`` = ``v`` rows of the center and its ``k`` noise words,
        scores ``S = U Vᵀ`` (m x k+1), ``G = (label - σ(S)) * lr`` (label 1 for the center, 0 for noise;
        0 for empty context slots). Then ``U += G V`` and ``V += Gᵀ U``, both from the old values, as
        word2vec.c computes ``neu1e`` before updating ``syn1neg``; a word that occurs more than once in
        the batch gets the sum of its updates (``duplicate_cap`` bounds that sum).
        """
        if self._uses_loop():
            return self._loop_update(batch, lr)
        # In the weights' precision: under autocast (bf16-mixed) bmm would compute in bfloat16, whose
        # 8-bit mantissa loses updates of lr * 1e-3, and adding rows into the tables takes their dtype.
        if torch.is_autocast_enabled(self.device.type):
            with torch.autocast(self.device.type, enabled=False):
                return self._matrix_update(batch, lr)
        return self._matrix_update(batch, lr)

    def _uses_loop(self) -> bool:
        """Whether the closed form runs as the compiled loop: on a CPU, for the precisions it is compiled for
        (not bfloat16 or float16 weights, which take the matrix form)."""
        u, v = self.u_embeddings.weight, self.v_embeddings.weight
        return (
            self._loop is not None
            and u.is_cpu
            and u.dtype == v.dtype
            and u.dtype in (torch.float32, torch.float64)
            and u.is_contiguous()
            and v.is_contiguous()
        )

    def _loop_update(self, batch: Batch, lr: float) -> tuple[Tensor, int]:
        center, context, negatives = (t.long().contiguous().numpy() for t in batch)
        # numpy views of the tables: the loop updates the parameters' memory in place.
        u, v = (e.weight.detach().numpy() for e in (self.u_embeddings, self.v_embeddings))
        loss, pairs = self._loop(u, v, center, context, negatives, float(lr))
        return torch.tensor(loss, dtype=self.u_embeddings.weight.dtype), pairs

    def _matrix_update(self, batch: Batch, lr: float) -> tuple[Tensor, int]:
        center, context, negatives = batch
        u, v = self.u_embeddings.weight, self.v_embeddings.weight
        (n, m), d = context.shape, u.shape[1]
        valid = (context >= 0).unsqueeze(2)  # (C, m, 1)
        context = context.clamp(min=0)  # empty slots read row 0 and add exactly 0 to it
        outputs_idx = torch.cat([center.unsqueeze(1), negatives], dim=1)  # (C, k + 1)
        flat_in, flat_out = context.view(-1), outputs_idx.view(-1)
        inputs = u.index_select(0, flat_in).view(n, m, d)
        outputs = v.index_select(0, flat_out).view(n, -1, d)
        # z = -s for the center (label 1) and s for noise (label 0): the loss is softplus(z) and
        # label - σ(s) is σ(z) for the center and -σ(z) for noise.
        z = torch.bmm(inputs, outputs.transpose(1, 2))  # (C, m, k + 1)
        z[:, :, 0].neg_()
        loss = F.softplus(z).masked_fill_(~valid, 0.0).sum()
        grad = torch.sigmoid(z).mul_(torch.where(valid, lr, 0.0))
        grad[:, :, 1:].neg_()
        # A row met n > cap times in this update gets cap/n of each occurrence's update: its summed step
        # is at most cap occurrences' worth, where word2vec's sequential steps, each seeing the last,
        # would not overshoot.
        share_in = self._share(context, u.shape[0])
        share_out = self._share(outputs_idx, v.shape[0])
        grad_in = grad if share_in is None else grad * share_in.unsqueeze(2)
        grad_out = grad if share_out is None else grad * share_out.unsqueeze(1)
        grad_inputs = torch.bmm(grad_in, outputs)  # (C, m, d)
        grad_outputs = torch.bmm(grad_out.transpose(1, 2), inputs)  # (C, k + 1, d)
        _add_rows(u, flat_in, grad_inputs.view(-1, d))
        _add_rows(v, flat_out, grad_outputs.view(-1, d))
        return loss, int(valid.sum())

    def _share(self, rows: Tensor, size: int) -> Tensor | None:
        """Per entry of ``rows``: ``min(1, cap / n)``, n = how often its row occurs in ``rows``; None when
        no row occurs more than ``duplicate_cap`` times (or the cap is off)."""
        if not self.duplicate_cap:
            return None
        counts = torch.bincount(rows.view(-1), minlength=size)
        # On a CPU the check costs less than the multiplication it saves (in 512-row updates on
        # tinyshakespeare, 54 % of the input sides needed none); elsewhere it would wait for the device.
        if rows.is_cpu and int(counts.max()) <= self.duplicate_cap:
            return None
        return (self.duplicate_cap / counts.clamp_(min=self.duplicate_cap).to(torch.float32))[rows]

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
            self._updates = BackgroundUpdates(self.closed_form_step, self.workers, depth=8 * self.workers)

    def _sync(self) -> None:
        """Wait for the queued updates and count their loss into ``train/loss``."""
        if self._updates is None:
            return
        loss, count = self._updates.drain()
        if count:
            self.train_loss.update(loss / count, weight=count)

    def _stop_updates(self) -> None:
        if self._updates is not None:
            updates, self._updates = self._updates, None
            updates.close()

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
                self._updates.submit(slices, rates)
                if self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
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
        optimizer = self.optimizer(self.parameters())
        self.start_lr = optimizer.param_groups[0]["lr"]
        return optimizer


def neighbour_lines(pl_module: LightningModule, words: list[str], probes: list[str], k: int) -> list[str]:
    """One line per probe word in the vocabulary: ``word: neighbour (cosine), ...``."""
    index = {w: i for i, w in enumerate(words)}
    present = [w for w in probes if w in index]
    if not present:
        return []
    similarity, ids = pl_module.nearest(torch.tensor([index[w] for w in present]), k)
    lines = []
    for word, sims, nbrs in zip(present, similarity.tolist(), ids.tolist(), strict=True):
        lines.append(
            f"{word}: " + ", ".join(f"{words[j]} ({s:.2f})" for j, s in zip(nbrs, sims, strict=True))
        )
    return lines


class WordEmbeddings(Callback):
    """Nearest neighbours of probe words in TensorBoard (text) after each validation; at the end of
    training the most frequent words' vectors in TensorBoard's projector and, in the run folder,
    ``vectors.txt`` (word2vec text format) and ``neighbours.txt``; ``predict`` writes the same two files.

    Args:
        probes: Words whose neighbours are shown; unset: eight words of frequency ranks 100 to 800.
        neighbours: Neighbours per probe word.
        projector_words: The most frequent words whose vectors go to the projector (0: none).
    """

    def __init__(
        self, probes: list[str] | None = None, neighbours: int = 10, projector_words: int = 2000
    ) -> None:
        self.probes = probes
        self.neighbours = neighbours
        self.projector_words = projector_words

    @staticmethod
    def _words(trainer: Trainer) -> list[str]:
        words = getattr(trainer.datamodule, "words", None)
        if words is None:
            raise ExperimentError(
                "WordEmbeddings needs a datamodule with a vocabulary (words), such as TextCorpusDataModule"
            )
        return words

    def _probes(self, words: list[str]) -> list[str]:
        if self.probes is not None:
            return self.probes
        # Frequent enough to have learnt something, rare enough not to be "the", "and", "of".
        return [words[r] for r in range(100, min(len(words), 900), 100)] or words[:8]

    def _text(self, trainer: Trainer, pl_module: LightningModule) -> str:
        words = self._words(trainer)
        return "\n".join(neighbour_lines(pl_module, words, self._probes(words), self.neighbours))

    @staticmethod
    def _tensorboard(trainer: Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if trainer.sanity_checking or logger is None:
            return
        # Two spaces before each newline: TensorBoard renders text as Markdown.
        text = self._text(trainer, pl_module).replace("\n", "  \n")
        logger.experiment.add_text("embeddings/neighbours", text, global_step=trainer.global_step)

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._tensorboard(trainer)
        words = self._words(trainer)
        if logger is not None and self.projector_words:
            n = min(self.projector_words, len(words))
            logger.experiment.add_embedding(
                pl_module.embeddings()[:n].cpu(),
                metadata=words[:n],
                global_step=trainer.global_step,
                tag="words",
            )
        self._write(trainer, pl_module)

    @rank_zero_only
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module)

    def _write(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = run_dir(trainer)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.save_embedding(self._words(trainer), folder / "vectors.txt")
        (folder / "neighbours.txt").write_text(self._text(trainer, pl_module) + "\n", encoding="utf-8")
        rank_zero_info(f"Word vectors written to {Path(folder) / 'vectors.txt'}")
