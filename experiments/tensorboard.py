"""The TensorBoard layout of every run: the lessons' own groups first, and train, val and test of a metric
on one chart.

- ``TensorBoard``, the default logger: Lightning's TensorBoardLogger, except that Lightning's epoch
  counter is logged as ``train/epoch`` instead of a top-level ``epoch`` group, which sorted first and
  opened before ``train/``, ``val/`` and ``test/``. Images follow the same scheme (``train/inputs``,
  ``val/predictions``; the filters, which no phase owns, as ``weights/filters/<layer>``, after them).
- ``ScalarsLayout``, a callback every run carries: a custom-scalars layout (TensorBoard's "Custom
  Scalars" tab) with one chart per metric holding its ``train/``, ``val/`` and ``test/`` curves, and one
  for the learning rate, written by global rank 0 once the first epoch's metrics are known and again at
  the end if new metrics appeared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

PHASES = ("train", "val", "test")


class TensorBoard(TensorBoardLogger):
    """TensorBoardLogger that files Lightning's ``epoch`` counter under ``train/epoch``.

    Args:
        log_epoch: Log the counter at all; the command turns it off for an evaluation written into its
            training run, where Lightning would log epoch 0 at the checkpoint's step.
        **kwargs: TensorBoardLogger's.
    """

    def __init__(self, *args: Any, log_epoch: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_epoch = log_epoch

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        renamed = {("train/epoch" if name == "epoch" else name): value for name, value in metrics.items()}
        if not self.log_epoch:
            renamed.pop("train/epoch", None)
        super().log_metrics(renamed, step)


def scalars_layout(names: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout for the logged scalar ``names``: a "metrics" category with one multiline
    chart per metric ``X`` logged under at least one of ``train/X``, ``val/X``, ``test/X`` (regular
    expressions, so all three phases land on it), and the learning rates."""
    metrics = sorted(
        {
            name.split("/", 1)[1]
            for name in names
            if name.split("/", 1)[0] in PHASES
            and "/" in name
            and not name.startswith(("train/lr", "train/epoch"))
        }
    )
    charts = {metric: ["Multiline", [rf"^({'|'.join(PHASES)})/{metric}$"]] for metric in metrics}
    layout: dict[str, dict[str, list[Any]]] = {"metrics": charts}
    if any(name.startswith("train/lr") for name in names):
        layout["optimizer"] = {"learning rate": ["Multiline", [r"^train/lr(/.*)?$"]]}
    return layout


class ScalarsLayout(Callback):
    """Writes ``scalars_layout`` of the run's metrics into its TensorBoard logs (global rank 0; reads
    only this process's metrics, so no collective runs)."""

    def __init__(self) -> None:
        self._written: frozenset[str] = frozenset()

    def _write(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        names = frozenset(trainer.callback_metrics) - self._written
        if not names:
            return
        self._written |= names
        layout = scalars_layout(self._written)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(layout)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # From the second epoch on, the first epoch's train and val metrics are all known.
        if trainer.current_epoch >= 1 and not self._written:
            self._write(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)
