"""Figures several lessons share: the loss per epoch (``LossCurve``) and a regressor's predictions
against the targets (``PredictedVsActual``). Add them to a lesson's ``trainer.callbacks``; each writes a
TensorBoard image and a PNG in the run folder's ``figures/`` (``core.figures``).

Both work on several processes: the curve reads metrics every rank holds alike (logged with
``sync_dist`` or torchmetrics), and the scatter gathers the split from every rank (``collect_all``);
global rank 0 draws. Values are rounded to 4 significant digits before drawing, so one process and
several, whose sums differ in the last bits, draw the same pixels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from core.callbacks import collect_all
from core.domains import NonNegativeInt
from core.figures import draws_this_validation, log_figure, logs_images, new_figure


def significant(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (what a figure can show)."""
    return float(f"{value:.{digits}g}")


class LossCurve(Callback):
    """The loss per epoch, drawn once when training ends: ``train/loss_curve`` and ``figures/loss_curve.png``.

    A metric whose name starts with ``val/`` is read after each validation (not the sanity check), any
    other after each training epoch, from what the module logged for the epoch. The history is kept in
    checkpoints, so a resumed run draws the whole curve.

    Args:
        metrics: Epoch-level metrics to draw, one line each (those never logged are left out).
        log_scale: A logarithmic loss axis, for a loss that falls by orders of magnitude.
    """

    def __init__(self, metrics: list[str] | None = None, log_scale: bool = False) -> None:
        self.metrics = list(metrics) if metrics is not None else ["train/loss", "val/loss"]
        self.log_scale = log_scale
        self.history: dict[str, dict[int, float]] = {name: {} for name in self.metrics}

    def _record(self, trainer: Trainer, epoch: int, validation: bool) -> None:
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if name.startswith("val/") == validation and value is not None and epoch >= 0:
                self.history[name].setdefault(epoch, float(value))

    # A callback's on_train_epoch_end runs before the module's, where lessons log the epoch's loss: the
    # epoch's value is read when the next epoch starts, and the last one when training ends.
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record(trainer, trainer.current_epoch - 1, validation=False)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, trainer.current_epoch, validation=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record(trainer, trainer.current_epoch - 1, validation=False)
        curves = {name: sorted(values.items()) for name, values in self.history.items() if values}
        if not curves or not logs_images(trainer):
            return
        curves = {name: [(e, significant(v)) for e, v in points] for name, points in curves.items()}
        log_scale = self.log_scale and all(v > 0 for points in curves.values() for _, v in points)

        def draw() -> Any:
            figure = new_figure((6, 4), layout="constrained")
            ax = figure.subplots()
            for name, points in curves.items():
                epochs, values = zip(*points, strict=True)
                # Sparse points (validation every n epochs) get markers, or one point would not show.
                marker = "o" if len(points) < 30 else None
                # Epochs counted from 1, as the console counts them.
                counted = [epoch + 1 for epoch in epochs]
                ax.plot(counted, values, marker=marker, markersize=4, label=f"{name} (last {values[-1]:.4g})")
            if log_scale:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.grid(alpha=0.3)
            ax.legend()
            ax.set_title("loss per epoch")
            return figure

        log_figure(trainer, draw, "train/loss_curve", png_name="loss_curve")

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: dict(values) for name, values in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, values in state_dict.get("history", {}).items():
            if name in self.history:
                self.history[name] = {int(epoch): float(value) for epoch, value in values.items()}


def scatter_points(predictions: Tensor, targets: Tensor) -> tuple[list[float], list[float], float]:
    """Predictions and targets as flat lists of values rounded for drawing, and the RMSE over all of them
    (from the unrounded values)."""
    predictions, targets = predictions.detach().double().flatten(), targets.detach().double().flatten()
    rmse = math.sqrt(float((predictions - targets).pow(2).mean())) if len(targets) else math.nan
    return [significant(v) for v in predictions.tolist()], [significant(v) for v in targets.tolist()], rmse


class PredictedVsActual(Callback):
    """A regressor's predictions against the true targets, one point per row, with the diagonal of a
    perfect fit and the RMSE in the title, on the validation split when training ends
    (``val/predicted_vs_actual``, ``figures/val_predicted_vs_actual.png``), every ``every_n_epochs``
    validation epochs if set, and on the test split after ``test`` (``test/predicted_vs_actual``,
    ``figures/test_predicted_vs_actual.png``).

    Needs loaders of ``(features, targets)`` batches, a split small enough to hold whole (it is read again
    from the loader), and a module whose ``forward`` maps features to predictions.

    Args:
        target: What the targets are, for the axes' labels.
        every_n_epochs: Also draw after every n-th validation epoch (a count >= 0; 0: only when training
            ends, which keeps short runs such as a sweep's trials from drawing twice).
    """

    def __init__(self, target: str = "target", every_n_epochs: NonNegativeInt = 0) -> None:
        self.target = target
        self.every_n_epochs = every_n_epochs

    def _plot(self, trainer: Trainer, pl_module: LightningModule, loaders: Any, split: str) -> None:
        """Draw ``split`` (``validation after epoch N``, counted from 1, or ``test``) of the first of
        ``loaders``."""
        if not loaders:
            return
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        points = collect_all(trainer, loader)  # every rank takes part; rank 0 gets the whole split
        if not points or len(points) < 2:  # not rank 0, or no rows
            return
        training = pl_module.training
        pl_module.eval()  # when training has ended the module is back in training mode (dropout)
        with torch.no_grad():
            predictions = pl_module(points[0].to(pl_module.device)).float().cpu()
        pl_module.train(training)
        predicted, actual, rmse = scatter_points(predictions, points[1])
        target = self.target
        title = f"{split}: RMSE {rmse:.3g} ({len(actual)} rows)"

        def draw() -> Any:
            figure = new_figure((5.0, 4.8), layout="constrained")
            ax = figure.subplots()
            low, high = min(predicted + actual), max(predicted + actual)
            pad = 0.04 * (high - low) or 1.0
            ax.plot([low, high], [low, high], color="grey", linewidth=1, label="perfect fit")
            ax.scatter(actual, predicted, s=14, alpha=0.7, label="rows")
            ax.set_xlabel(f"actual {target}")
            ax.set_ylabel(f"predicted {target}")
            # The same scale on both axes: distance from the diagonal reads as the error.
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper left")
            ax.set_title(title)
            return figure

        phase = "test" if split == "test" else "val"
        log_figure(trainer, draw, f"{phase}/predicted_vs_actual", png_name=f"{phase}_predicted_vs_actual")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The same answer on every rank: all gather, or none.
        epochs = trainer.current_epoch + 1  # validation follows the epoch's training steps
        if self.every_n_epochs and epochs % self.every_n_epochs == 0 and draws_this_validation(trainer):
            self._plot(trainer, pl_module, trainer.val_dataloaders, f"validation after epoch {epochs}")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if logs_images(trainer):
            epochs = trainer.current_epoch
            self._plot(trainer, pl_module, trainer.val_dataloaders, f"validation after epoch {epochs}")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if logs_images(trainer):
            # A test's epoch counter is not the checkpoint's epoch: the title names none.
            self._plot(trainer, pl_module, trainer.test_dataloaders, "test")
