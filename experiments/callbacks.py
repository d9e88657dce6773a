"""Callbacks the lessons share: figures into TensorBoard and PNG files, predictions written to disk.

matplotlib is imported inside the drawing functions, so that loading the CLI (``--help``) or a lesson
that draws nothing never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_dir(trainer: Trainer) -> Path | None:
    """The folder of this run's logs (``lightning_logs/<name>/version_N``), or None when not logging."""
    if trainer.fast_dev_run or trainer.logger is None or trainer.log_dir is None:
        return None
    return Path(trainer.log_dir)


@rank_zero_only
def log_figure(trainer: Trainer, figure: Any, tag: str, png_name: str | None = None) -> None:
    """Put ``figure`` in TensorBoard under ``tag`` and, if ``png_name``, save it in the run's ``figures/``.

    The figure is rendered once and the same pixels go to both: matplotlib's draw is most of the cost.
    """
    import numpy as np

    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=trainer.global_step, dataformats="HWC")
    folder = run_dir(trainer)
    if png_name and folder is not None:
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        pyplot().imsave(folder / "figures" / f"{png_name}.png", image)
    pyplot().close(figure)


def collect(loader: Any) -> tuple[Tensor, ...]:
    """Concatenate every batch of a small loader into one tuple of tensors."""
    batches = list(loader)
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


class LinearFitPlot(Callback):
    """The seed's ``plot_current_fit``: training points and the current line, before and after training.

    The legend reads "Current Fit (w, b)" as in the seed. Needs a module with ``slope_intercept()``.
    """

    def _plot(self, trainer: Trainer, pl_module: LightningModule, title: str, name: str) -> None:
        if not trainer.is_global_zero:
            return
        x, y = collect(trainer.train_dataloader)[:2]
        w, b = pl_module.slope_intercept()
        plt = pyplot()
        figure = plt.figure(figsize=(12, 4))
        plt.title(title)
        plt.scatter(x[:, 0].cpu(), y[:, 0].cpu(), s=8)
        x1 = torch.tensor([0.0, 1.0])
        plt.plot(x1, x1 * w + b, "r", label=f"Current Fit ({w:.3f}, {b:.3f})")
        plt.xlabel("x (input)")
        plt.ylabel("y (target)")
        plt.legend()
        log_figure(trainer, figure, f"fit/{name}", png_name=f"fit_{name}")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_train_start, not on_fit_start: the training loader exists only from here on.
        self._plot(trainer, pl_module, "Before training", "before_training")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._plot(trainer, pl_module, "After training", "after_training")


class SequencePlot(Callback):
    """The seed's sine-wave figure: the actual points and the predicted next points over time.

    Drawn every ``every_n_epochs`` validation epochs into TensorBoard, and at the end of training
    also as ``figures/predictions.png``. Time steps come from the datamodule's ``time_steps`` when it
    has them, else the point indices.

    Args:
        every_n_epochs: Epochs between figures in TensorBoard; 0 draws only the final one.
    """

    def __init__(self, every_n_epochs: int = 50) -> None:
        self.every_n_epochs = every_n_epochs

    def _plot(self, trainer: Trainer, pl_module: LightningModule, png_name: str | None) -> None:
        if not trainer.is_global_zero or not trainer.val_dataloaders:
            return
        x = collect(trainer.val_dataloaders)[0]
        with torch.no_grad():
            pred = pl_module(x.to(pl_module.device)).cpu()
        t = getattr(trainer.datamodule, "time_steps", None)
        t = torch.arange(len(x) + 1, dtype=torch.float64) if t is None else t.cpu()
        plt = pyplot()
        figure = plt.figure(figsize=(8, 4))
        plt.scatter(t[:-1], x[:, 0].cpu(), s=90, label="Actual")
        plt.scatter(t[1:], pred[:, 0], label="Predicted")
        plt.title(f"epoch {trainer.current_epoch}")
        plt.legend()
        log_figure(trainer, figure, "predictions", png_name=png_name)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.every_n_epochs:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._plot(trainer, pl_module, None)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._plot(trainer, pl_module, "predictions")


class PredictionWriter(BasePredictionWriter):
    """Writes what ``predict`` returns into ``<run folder>/<filename>``: one tensor when every batch is a
    tensor (batches concatenated), else the list of batch outputs.

    Args:
        filename: File name inside the run folder.
    """

    def __init__(self, filename: str = "predictions.pt") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        folder = run_dir(trainer)
        if folder is None or not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.write(trainer, predictions, folder / self.filename):
            rank_zero_info(f"Predictions written to {folder / self.filename}")

    def write(self, trainer: Trainer, predictions: list[Any], path: Path) -> bool:
        """Write ``predictions`` (the batch outputs) to ``path``; False when there is nothing to write.
        Subclasses write other formats."""
        # One dataloader gives a flat list of batch outputs; several give a list per dataloader.
        if predictions and all(isinstance(p, Tensor) for p in predictions):
            predictions = torch.cat(predictions)
        torch.save(predictions, path)
        return True


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that honours ``fast_dev_run`` at the end of training too.

    Lightning 2.6's ``on_train_end`` writes ``last.ckpt`` even under ``fast_dev_run``, where logging is
    off, so a smoke test would leave ``./checkpoints/last.ckpt`` in the working folder.
    """

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        super().on_train_end(trainer, pl_module)


class LearningRateLogger(LearningRateMonitor):
    """LearningRateMonitor that stands aside when the run has no logger (``--trainer.logger false``,
    ``fast_dev_run``) instead of failing the run, since every experiment carries it."""

    def on_train_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class LastCheckpoint(Checkpoint):
    """Writes ``last.ckpt`` at the end of every training epoch: the run's latest state, to resume from.

    ModelCheckpoint's own ``save_last`` (Lightning 2.6) writes ``last.ckpt`` only when it also saves a
    top-k checkpoint, so with a monitored metric ``last.ckpt`` stays at the best epoch, not the latest.
    A ModelCheckpoint without a monitor and ``save_top_k=1`` keeps exactly the latest checkpoint.
    """

    def __init__(self, filename: str = "last", every_n_epochs: int = 1) -> None:
        super().__init__(
            filename=filename,
            monitor=None,
            save_top_k=1,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # With every_n_epochs > 1 the final epochs may not have been saved; the latest state must be.
        if (
            trainer.fast_dev_run
            or self.dirpath is None
            or self._last_global_step_saved == trainer.global_step
        ):
            return
        path = Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        self._last_global_step_saved = trainer.global_step
