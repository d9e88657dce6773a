"""What a run prints: progress for output that is not a terminal, and a model summary of layers only.

Progress: one line per epoch with the key metrics.

Lightning's progress bars redraw themselves with carriage returns; sent to a file or a pipe (a batch
job's log, CI, ``| tee``) that is hundreds of kilobytes of half-lines for a short run. When stdout is not
a terminal the command uses ``EpochLines`` instead of the bar:

    epoch 3/12  train/acc 0.9871  train/loss 0.0412  val/acc 0.989  val/loss 0.0355  (14.2 s)

Validation, test and predict print nothing per batch; their results table is Lightning's, as usual.

Model summary: Lightning lists every child module of the LightningModule, and the lessons' torchmetrics
objects (``train_loss``, ``val_acc``, ...) are modules too; ``LayerSummary`` lists the network only.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar, RichModelSummary
from lightning.pytorch.utilities.model_summary import ModelSummary as Summary
from torch import nn
from torchmetrics import Metric


def stdout_is_terminal() -> bool:
    """Whether the command's output goes to a terminal (where a redrawn bar reads well)."""
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


class EpochLines(ProgressBar):
    """A progress "bar" of one printed line per training epoch: epoch number, the epoch's logged metrics
    (those shown in the progress bar, ``prog_bar=True``, and every ``train/``, ``val/`` metric), and
    the epoch's wall time. Printed by global rank 0 only."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._pending: int | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The previous epoch's values are complete only now: the module logs its epoch metrics in its own
        # on_train_epoch_end, which Lightning runs after the callbacks'.
        self._print_pending(trainer, pl_module)
        self._started = time.perf_counter()
        self._pending = trainer.current_epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print_pending(trainer, pl_module)

    def _print_pending(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending is None or not self.is_enabled:
            self._pending = None
            return
        epoch, self._pending = self._pending, None
        seconds = time.perf_counter() - self._started
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = self._metrics(trainer, pl_module)
        values = "  ".join(f"{name} {value:.4g}" for name, value in metrics.items())
        print(f"epoch {epoch + 1}{total}  {values}  ({seconds:.1f} s)", flush=True)

    def _metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        shown: dict[str, Any] = dict(self.get_metrics(trainer, pl_module))
        shown.pop("v_num", None)
        for name, value in trainer.callback_metrics.items():
            if name.startswith(("train/", "val/")) and name not in shown:
                shown[name] = value
        plain = {}
        for name, value in sorted(shown.items()):
            try:
                plain[name] = float(value)
            except (TypeError, ValueError):
                continue
        return plain


class _LayersOnly(Summary):
    """Lightning's summary table without torchmetrics objects (nor their children)."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        modules = super().named_modules
        metrics = tuple(f"{name}." for name, module in modules if isinstance(module, Metric))
        return [
            (name, module)
            for name, module in modules
            if not isinstance(module, Metric) and not name.startswith(metrics)
        ]


class LayerSummary(ModelSummary):
    """Lightning's model summary, listing the network's layers but not the lesson's metric objects."""

    def _summary(self, trainer: Trainer, pl_module: LightningModule) -> Summary:
        return _LayersOnly(pl_module, max_depth=self._max_depth)


class RichLayerSummary(LayerSummary, RichModelSummary):
    """``LayerSummary`` drawn by rich, next to rich's progress bar."""
