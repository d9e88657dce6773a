"""The face-landmarks lesson's callbacks (``configs/face_landmarks.yaml`` adds both).

- ``LandmarkGrid``: validation faces with their true and predicted landmarks, in TensorBoard's Images
  tab as ``val/landmarks`` and in the run folder as ``figures/val_landmarks.png``. On several processes
  the faces are gathered and global rank zero draws; it stands aside when the run writes no TensorBoard
  logs (``--trainer.logger false``, ``fast_dev_run``), as the 可视化 callbacks do.
- ``LandmarkCSVWriter``: ``predict``'s landmarks as ``predictions.csv`` in the run folder, in the
  tutorial's own format (image name, then x and y of each point), so the output reads like the input.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from experiments.callbacks import PredictionWriter, log_figure
from experiments.visualize import ValidationSamples
from modules.landmarks import face_errors


class LandmarkGrid(ValidationSamples):
    """Draws the first validation faces with the true landmarks (green) and the predicted ones (red),
    each titled with its NME, every ``every_n_epochs`` epochs and after the last one.

    Needs batches ``(images, landmarks)`` with images in [0, 1] and a module whose ``validation_step``
    returns the predicted points ``(N, points, 2)`` in the images' pixels (``LandmarkRegressor`` does).

    Args:
        num_images: Validation faces to show, from the first batches.
        columns: Faces per row of the figure.
        every_n_epochs: Epochs between figures; the last epoch is always drawn.
    """

    def __init__(self, num_images: int = 8, columns: int = 4, every_n_epochs: int = 10) -> None:
        super().__init__(num_images, columns)
        self.every_n_epochs = every_n_epochs

    def _wanted(self, trainer: Trainer) -> bool:
        if not super()._wanted(trainer):
            return False
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return last or (self.every_n_epochs > 0 and epoch % self.every_n_epochs == 0)

    def sample(self, batch: Any, outputs: Tensor) -> tuple[Tensor, ...]:
        return batch[0].float(), batch[1], outputs

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        kept = self.take(trainer)
        if kept is None:
            return
        images, truth, predicted = kept
        corners = getattr(pl_module.hparams, "eye_corners", (36, 45))
        errors = face_errors(predicted, truth, *corners)
        figure, axes = self.subplots(len(images), cell=(2.6, 2.8), title_height=0.4)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i >= len(images):
                continue
            ax.imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.scatter(truth[i, :, 0], truth[i, :, 1], s=6, c="lime")
            ax.scatter(predicted[i, :, 0], predicted[i, :, 1], s=6, c="red", marker="x")
            ax.set_title(f"NME {errors[i]:.3f}", fontsize=9)
        figure.suptitle(f"true (green) and predicted (red) landmarks, epoch {trainer.current_epoch}")
        log_figure(trainer, figure, "val/landmarks", png_name="val_landmarks")


class LandmarkCSVWriter(PredictionWriter):
    """Writes ``predict``'s points ``(N, points, 2)`` to ``<run folder>/<filename>``: a header
    (``image_name, part_0_x, part_0_y, ...``), then one row per image, named by the datamodule's
    ``predict_names`` (``FaceLandmarksDataModule`` sets them) or numbered when it has none.

    Args:
        filename: File name inside the run folder.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(filename)

    def write(self, trainer: Trainer, predictions: Any, path: Path) -> bool:
        if not isinstance(predictions, Tensor) or not len(predictions):
            return False
        points = predictions.detach().cpu()
        names = list(getattr(trainer.datamodule, "predict_names", None) or [])
        if len(names) != len(points):
            names = [str(i) for i in range(len(points))]
        header = ["image_name"] + [f"part_{i}_{axis}" for i in range(points.shape[1]) for axis in ("x", "y")]
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            for name, face in zip(names, points.flatten(1).tolist(), strict=True):
                writer.writerow([name] + [f"{v:.2f}" for v in face])
        return True
