"""Callbacks the lessons share: figures into TensorBoard and PNG files, predictions written to disk.

On several processes each callback gathers what it draws or writes from every rank (the rule is in
``experiments/distributed.py``), so a figure or a file shows what one process would have shown.

matplotlib is imported inside the drawing functions, so that loading the CLI (``--help``) or a lesson
that draws nothing never pays for it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor

from experiments.distributed import Columns, gather_outputs, gather_samples, run_dir, sample_positions


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def peek(loader: Any) -> Iterator[Any]:
    """Iterate over ``loader`` without touching its state: a ``TensorBatches`` told where a resumed epoch
    starts (``resume_at``) keeps that for the loop, which iterates it after the callbacks' peek."""
    return iter(copy.copy(loader))


def collect(loader: Any) -> tuple[Tensor, ...]:
    """Concatenate every batch of a small loader into one tuple of tensors (empty without batches)."""
    batches = list(peek(loader))
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def collect_all(trainer: Trainer, loader: Any) -> tuple[Tensor, ...] | None:
    """Every sample of a small split, in dataset order (where the loader's order is known), on global
    rank 0 (None on the other ranks): each rank collects its shard of ``loader`` and rank 0 puts them
    together. Every rank must call it."""
    parts = collect(loader)
    columns: Columns = {str(i): part for i, part in enumerate(parts)}
    positions = sample_positions(loader, len(parts[0])) if parts else None
    whole = gather_samples(trainer, columns, positions)
    return None if whole is None else tuple(whole[str(i)] for i in range(len(whole)))


class LinearFitPlot(Callback):
    """The seed's ``plot_current_fit``: training points and the current line, before and after training.

    The legend reads "Current Fit (w, b)" as in the seed. Needs a module with ``slope_intercept()``.
    """

    def _plot(self, trainer: Trainer, pl_module: LightningModule, title: str, name: str) -> None:
        points = collect_all(trainer, trainer.train_dataloader)
        w, b = pl_module.slope_intercept()
        if not points:  # None: not global rank 0, whose is the figure; (): no points at all
            return
        x, y = points[:2]
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
        if trainer.val_dataloaders is None:
            return
        # The whole sequence first: a recurrent network's predictions depend on every earlier point.
        sequence = collect_all(trainer, trainer.val_dataloaders)
        if not sequence:  # None: not global rank 0, whose is the figure; (): no points at all
            return
        x = sequence[0]
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
    """Writes what ``predict`` returns into ``<run folder>/<filename>``: every sample's prediction in dataset
    order, gathered from every process, as one tensor (batch outputs that are tensors, concatenated) or
    one list (batch outputs that are lists, one item per sample); other batch outputs are saved as the
    list of them. With several predict loaders, a list of those, one per loader.

    Args:
        filename: File name inside the run folder.
    """

    def __init__(self, filename: str = "predictions.pt") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        loaders = trainer.predict_dataloaders
        several = isinstance(loaders, (list, tuple))
        per_loader = predictions if several else [predictions]
        loader_list = list(loaders) if several else [loaders]
        # Every rank gathers (a collective per loader); only rank 0 has a folder to write to.
        gathered = [
            gather_outputs(trainer, outputs, loader)
            for outputs, loader in zip(per_loader, loader_list, strict=True)
        ]
        folder = run_dir(trainer)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.write(trainer, gathered if several else gathered[0], folder / self.filename):
            rank_zero_info(f"Predictions written to {folder / self.filename}")

    def write(self, trainer: Trainer, predictions: Any, path: Path) -> bool:
        """Write ``predictions`` (every sample's, in dataset order: see the class) to ``path``; False when
        there is nothing to write. Subclasses write other formats."""
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
