"""What a run prints: progress for output that is not a terminal, a model summary of layers only, and
which of Lightning's messages and warnings reach the user (and where).

Progress: one line per epoch with the key metrics.

Lightning's progress bars redraw themselves with carriage returns; sent to a file or a pipe (a batch
job's log, CI, ``| tee``) that is hundreds of kilobytes of half-lines for a short run. When stdout is not
a terminal the command uses ``EpochLines`` instead of the bar:

    epoch 3/12  train/acc 0.9871  train/loss 0.0412  val/acc 0.989  val/loss 0.0355  (14.2 s)

Validation, test and predict print nothing per batch; their results table is Lightning's, as usual.

Model summary: Lightning lists every child module of the LightningModule, and the lessons' torchmetrics
objects (``train_loss``, ``val_acc``, ...) are modules too; ``LayerSummary`` lists the network only.

Messages: Lightning's log lines go to stdout (``lightning_output_to_stdout``), so that stderr holds what
went wrong and a mistake is its one line there; warnings no user of the lessons can act on are silenced
(``silence_known_warnings``), by the command and by every in-process use of ``ExperimentCLI``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

from jsonargparse._deprecated import JsonargparseDeprecationWarning
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
    (every value the run has logged but a test's: ``train/loss`` and ``val/acc`` as the lessons name
    them, ``train_loss`` and ``val_acc`` as Lightning's documentation does), and the epoch's wall time.
    Printed by global rank 0 only."""

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
            if not name.startswith("test") and name not in shown:
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


def lightning_output_to_stdout() -> None:
    """Lightning's messages (the seed, the devices, the model summary) go to stdout, where a program's
    output goes: stderr keeps what went wrong, so a mistake is its one line there."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                handler.setStream(sys.stdout)
    # Lightning 2.6 advertises its cloud logger on every run; nothing a lesson's user asked about.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvert())


class _NoAdvert(logging.Filter):
    """Drops Lightning's "💡 Tip: ... litlogger" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def silence_known_warnings(*messages: str) -> None:
    """Ignore Lightning's warnings that say nothing a user of the lessons can act on, and ``messages``
    (regular expressions) as well; benchmarks that run the CLI in-process call it too."""
    # Lightning 2.6 on torch 2.14 warns about its own use of a torch API on every run; not actionable.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Batch indices are only known for DataLoader samplers; nothing here uses them.
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices")
    # Lessons log epoch values computed by torchmetrics, which has already reduced them over all ranks;
    # Lightning cannot tell and asks for sync_dist, which would only average identical numbers again.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test)/")
    # Lightning 2.6 calls jsonargparse APIs that jsonargparse 4.49 deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", category=JsonargparseDeprecationWarning, module=r"lightning\.")
    # Every lesson logs per epoch (core/metrics.py), so a run shorter than log_every_n_steps loses nothing.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than")
    # On a machine with SLURM's programs, Lightning warns on every run started outside `srun`: a hint for
    # a multi-process job, noise for the one-process runs, sweeps and bad-config errors of a login node.
    # scripts/slurm.sbatch starts jobs with srun; the README's SLURM lines say so.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not")
    for message in messages:
        warnings.filterwarnings("ignore", message=message)
