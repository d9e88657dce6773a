"""Figures and images into TensorBoard (and PNG files in the run folder), drawn by global rank 0.

matplotlib is imported on first use (``pyplot``), so that loading the command (``--help``) or a lesson
that draws nothing never pays for it. Everything here that writes runs on rank 0 only and communicates
with no other rank: gather what a figure shows first, on every rank (``core.distributed``).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from core.distributed import run_dir


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def logs_images(trainer: Trainer) -> bool:
    """Whether this run writes TensorBoard logs; the same answer on every rank."""
    # fast_dev_run swaps the loggers for a DummyLogger, so the type check alone covers it; said
    # explicitly because drawing for a smoke run is wasted time.
    return not trainer.fast_dev_run and any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)


def add_image(trainer: Trainer, tag: str, image: Tensor) -> None:
    """Put a ``(C, H, W)`` image (uint8, or float in [0, 1]) in every TensorBoard log of the run."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=trainer.global_step)


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
