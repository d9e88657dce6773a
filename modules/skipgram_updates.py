"""word2vec's closed-form update of the skip-gram tables, as functions of ``(tables, batch, lr)``.

``SkipGramModel`` trains with these instead of autograd: no graph, no sparse gradient tensors, no
optimizer state. Two forms of the same SGD step (see docs in ``modules/skipgram.py``):

- ``loop_update``: word2vec.c's own loop, compiled by numba (``modules._word2vec_loop``): for each context
  word and each of its center's targets, one dot product and two row updates in place, each step seeing
  the last. For CPUs, with float32 or float64 tables.
- ``matrix_update``: batched matrix products over a slice of centers, every step computed from the same
  old vectors: the form a GPU runs (and a CPU without numba, or with bfloat16 tables).

A batch is ``(center (C,), context (C, m), negatives (C, k))`` with -1 in empty context slots; each
function updates ``u`` (input vectors) and ``v`` (output vectors) in place and returns the summed loss
before the update and the number of (context, center) pairs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Batch = tuple[Tensor, Tensor, Tensor]


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


def loop_applies(loop: Callable | None, u: Tensor, v: Tensor) -> bool:
    """Whether ``loop`` (``compiled_loop()``) can update these tables: CPU tables, both float32 or both
    float64 (what it is compiled for), contiguous."""
    return (
        loop is not None
        and u.is_cpu
        and u.dtype == v.dtype
        and u.dtype in (torch.float32, torch.float64)
        and u.is_contiguous()
        and v.is_contiguous()
    )


def loop_update(loop: Callable, u: Tensor, v: Tensor, batch: Batch, lr: float) -> tuple[Tensor, int]:
    """word2vec.c's SGD on the batch's pairs, in order, by the compiled ``loop``; in place on ``u``, ``v``."""
    center, context, negatives = (t.long().contiguous().numpy() for t in batch)
    # numpy views of the tables: the loop updates their memory in place.
    loss, pairs = loop(u.detach().numpy(), v.detach().numpy(), center, context, negatives, float(lr))
    return torch.tensor(loss, dtype=u.dtype), pairs


def add_rows(table: Tensor, index: Tensor, rows: Tensor) -> None:
    """``table[index[i]] += rows[i]``, summing repeated indices."""
    if table.is_cpu:
        # With an expanded index, scatter_add_ sorts it and adds each table row's updates in one pass,
        # where index_add_ pays a kernel call per row (benchmarks/RESULTS.md, word2vec).
        table.scatter_add_(0, index.unsqueeze(1).expand_as(rows), rows)
    else:
        table.index_add_(0, index, rows)


def capped_share(rows: Tensor, size: int, cap: int) -> Tensor | None:
    """Per entry of ``rows``: ``min(1, cap / n)``, n = how often its row occurs in ``rows``; None when no
    row occurs more than ``cap`` times (or ``cap`` is 0: no cap)."""
    if not cap:
        return None
    counts = torch.bincount(rows.view(-1), minlength=size)
    # On a CPU the check costs less than the multiplication it saves; elsewhere it would wait for the
    # device.
    if rows.is_cpu and int(counts.max()) <= cap:
        return None
    return (cap / counts.clamp_(min=cap).to(torch.float32))[rows]


def matrix_update(
    u: Tensor, v: Tensor, batch: Batch, lr: float, duplicate_cap: int = 32
) -> tuple[Tensor, int]:
    """The closed-form step as matrix products, per center: inputs ``U`` = ``u`` rows of its ``m`` context
    words, outputs ``V`` = ``v`` rows of the center and its ``k`` noise words, scores ``S = U Vᵀ``,
    ``G = (label - σ(S)) * lr`` (label 1 for the center, 0 for noise; 0 for empty context slots); then
    ``U += G V`` and ``V += Gᵀ U``, both from the old values, as word2vec.c computes ``neu1e`` before
    updating ``syn1neg``. A word met more than ``duplicate_cap`` times in the batch gets that many
    occurrences' worth of update, shared by its occurrences."""
    center, context, negatives = batch
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
    # A row met n > cap times in this update gets cap/n of each occurrence's update: its summed step is
    # at most cap occurrences' worth, where word2vec's sequential steps, each seeing the last, would not
    # overshoot.
    share_in = capped_share(context, u.shape[0], duplicate_cap)
    share_out = capped_share(outputs_idx, v.shape[0], duplicate_cap)
    grad_in = grad if share_in is None else grad * share_in.unsqueeze(2)
    grad_out = grad if share_out is None else grad * share_out.unsqueeze(1)
    grad_inputs = torch.bmm(grad_in, outputs)  # (C, m, d)
    grad_outputs = torch.bmm(grad_out.transpose(1, 2), inputs)  # (C, k + 1, d)
    add_rows(u, flat_in, grad_inputs.view(-1, d))
    add_rows(v, flat_out, grad_outputs.view(-1, d))
    return loss, int(valid.sum())


@torch.no_grad()
def closed_form_update(
    u: Tensor, v: Tensor, batch: Batch, lr: float, loop: Callable | None = None, duplicate_cap: int = 32
) -> tuple[Tensor, int]:
    """word2vec's SGD update of ``u`` and ``v`` for a batch of windows: the compiled ``loop`` where it
    applies (``loop_applies``), else the matrix form; the summed loss before it and the pair count."""
    if loop_applies(loop, u, v):
        assert loop is not None
        return loop_update(loop, u, v, batch, lr)
    # In the tables' precision: under autocast (bf16-mixed) bmm would compute in bfloat16, whose 8-bit
    # mantissa loses updates of lr * 1e-3, and adding rows into the tables takes their dtype.
    if torch.is_autocast_enabled(u.device.type):
        with torch.autocast(u.device.type, enabled=False):
            return matrix_update(u, v, batch, lr, duplicate_cap)
    return matrix_update(u, v, batch, lr, duplicate_cap)
