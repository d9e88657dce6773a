"""Epoch-end logging of a lesson's metrics: one place for what every module did by hand.

A lesson owns one torchmetrics object per phase and value (``train_loss``, ``val_acc``, ...), updates them
in its steps, and at each epoch's end ``log_phase`` computes them (a reduction over every process under
DDP), logs them in one ``log_dict`` call and resets them. Logging once per epoch rather than per step
matters for lessons whose steps take microseconds: a ``self.log`` call costs more than their step.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MeanMetric, Metric


class EpochMean(MeanMetric):
    """A ``MeanMetric`` (weights honoured) that never checks its input for NaNs.

    torchmetrics' default (``nan_strategy="warn"``) checks every update with ``if nans.any()``: a
    host-device sync per training step on a GPU, which stalls the CPU's queueing of the next step. Its
    ``nan_strategy="disable"`` skips the check but also replaces the weights with ones
    (Lightning-AI/torchmetrics#3434), which would turn a per-token mean into a per-batch mean. Here
    the input is only cast. A NaN loss shows as a NaN epoch value, and
    ``experiments.faults.FiniteLossGuard`` stops training at the step it appears.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(nan_strategy="disable", **kwargs)

    def _cast_and_nan_check_input(
        self, x: float | Tensor, weight: float | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        weight = torch.ones_like(x) if weight is None else torch.as_tensor(weight, device=self.device)
        return x, weight.to(self.dtype)


def updated_anywhere(metric: Metric) -> bool:
    """Whether ``metric`` was updated in any process of the run since its last reset. ``compute()`` is a
    collective under DDP, so whether to call it must be decided alike on every rank: a rank whose shard
    of a small split was empty has no update, and skipping the call there would leave the others
    waiting for it."""
    updated = bool(metric.update_count)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor(float(updated), device=metric.device)
        dist.all_reduce(flag)
        updated = bool(flag.item() > 0)
    return updated


def phase_metrics(module: LightningModule, phase: str, names: Collection[str]) -> dict[str, Metric]:
    """The module's metric objects of ``phase`` by name: its attributes ``<phase>_<name>``."""
    return {name: getattr(module, f"{phase}_{name}") for name in names}


def log_phase(
    module: LightningModule,
    phase: str,
    metrics: Mapping[str, Metric],
    optional: Collection[str] = (),
    prog_bar: bool = True,
) -> dict[str, Tensor]:
    """Compute ``metrics``, log them as ``<phase>/<name>`` in one call, reset them, and return what was
    logged. A metric named in ``optional`` is left out when no process updated it this epoch (a loss of
    a split that had no pairs, a baseline not known yet); the others are always computed."""
    values = {
        f"{phase}/{name}": metric.compute()
        for name, metric in metrics.items()
        if name not in optional or updated_anywhere(metric)
    }
    if values:
        module.log_dict(values, prog_bar=prog_bar)
    for metric in metrics.values():
        metric.reset()
    return values


def log_best(module: LightningModule, name: str, value: Tensor, best: Metric) -> None:
    """Add ``value`` to ``best`` (a ``MaxMetric`` or ``MinMetric``) and log the best so far as ``name``;
    the sanity check's validation does not count."""
    if module.trainer.sanity_checking:
        return
    best.update(value)
    module.log(name, best.compute(), prog_bar=True)
