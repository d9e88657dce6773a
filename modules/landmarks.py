"""The 加载数据 (loading data) chapter's face landmarks, learnt: a CNN regressing the 68 (x, y) points.

Run:
    python -m experiments fit --config configs/face_landmarks.yaml     # data in data/faces
    python -m experiments predict --config configs/face_landmarks.yaml --ckpt_path best

The network predicts every point relative to the image it sees (x / width - 0.5, y / height - 0.5), so
the loss does not depend on the image size. Quality is the normalised mean error (NME): the mean
distance of predicted to true points divided by the distance between the outer eye corners (points 36
and 45, 0-based iBUG numbering), per face, averaged over faces. Beside it, on validation and test,
``nme_mean_shape`` is the NME of predicting the mean training shape for every face, the baseline that a
model must beat to have learnt anything about the image.

Departures from the tutorial: the chapter only reads one row of the CSV, with pandas'
``DataFrame.as_matrix`` (removed in pandas 1.0; ``to_numpy`` now), and builds no model. Here the whole
CSV is read with the standard library, checked row by row, and the images are transformed with their
landmarks (``datamodules.face_landmarks``, the tutorial's ``Rescale``/``RandomCrop`` plus a flip that
relabels left and right); this module adds what the data is for: a landmark regressor and its metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics import Metric, MinMetric

from core.callbacks import PredictionWriter, ValidationSamples, prediction_rows, write_csv
from core.domains import FileName, Fraction, NonNegativeInt, PositiveInt
from core.errors import ExperimentError
from core.figures import log_figure
from core.metrics import EpochMean, log_best, log_phase, phase_metrics
from core.optim import LRSchedulerCallable, OptimizerCallable, optimizer_config

LOSSES = {"mse": F.mse_loss, "smooth_l1": F.smooth_l1_loss, "l1": F.l1_loss}


def face_errors(preds: Tensor, target: Tensor, left: int = 36, right: int = 45) -> Tensor:
    """Per face of ``(N, points, 2)`` tensors: mean point distance / distance of ``target``'s points
    ``left`` and ``right``."""
    norm = (target[:, left] - target[:, right]).norm(dim=-1)
    # A face whose reference points coincide has no scale; eps keeps its (huge) error finite.
    return (preds - target).norm(dim=-1).mean(dim=-1) / norm.clamp_min(torch.finfo(norm.dtype).eps)


class NormalizedMeanError(Metric):
    """Normalised mean error of landmarks: per face, the mean Euclidean distance between predicted and
    true points divided by the distance between two reference points of the truth (by default the
    outer eye corners 36 and 45 of the 68-point scheme); the mean over faces.

    ``update(preds, target)`` takes ``(N, points, 2)`` tensors in the same (pixel) coordinates.
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, left: NonNegativeInt = 36, right: NonNegativeInt = 45, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.left, self.right = left, right
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape or preds.ndim != 3 or preds.shape[-1] != 2:
            raise ValueError(
                f"preds and target must both be (N, points, 2), got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        errors = face_errors(preds, target, self.left, self.right)
        self.total += errors.sum().double()
        self.count += len(errors)

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


def conv_block(in_channels: int, out_channels: int, dilation: int = 1, pool: bool = False) -> nn.Sequential:
    """3x3 convolution (dilated: a wider view at the same cost), batch norm, ReLU, optional 2x2 max-pool."""
    layers = [
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class SoftArgmax(nn.Module):
    """Heat maps ``(N, K, h, w)`` -> the expected position of each, ``(N, K, 2)`` as ``x / width - 0.5``,
    ``y / height - 0.5``: a softmax over each map's cells weights the cells' centres.

    Differentiable, so a coordinate loss trains the maps (the "DSNT" / integral-regression head). Each
    point is found where its features are, wherever the face is; a fully connected layer must instead
    learn every face position from examples, and 55 training faces show few.
    """

    def forward(self, maps: Tensor) -> Tensor:
        n, k, h, w = maps.shape
        weights = maps.flatten(2).softmax(dim=-1).view(n, k, h, w)
        xs = (torch.arange(w, dtype=maps.dtype, device=maps.device) + 0.5) / w - 0.5
        ys = (torch.arange(h, dtype=maps.dtype, device=maps.device) + 0.5) / h - 0.5
        return torch.stack([(weights.sum(dim=2) * xs).sum(-1), (weights.sum(dim=3) * ys).sum(-1)], dim=-1)


class LandmarkRegressor(LightningModule):
    """A CNN from images to ``num_points`` (x, y) landmarks; batches are ``(images, landmarks)`` with
    landmarks ``(N, num_points, 2)`` in the images' pixels, ``predict`` batches ``(images, to_original)``.

    The body is fully convolutional: three conv blocks with pooling (``width``, ``2 * width``,
    ``4 * width`` channels; an eighth of the image's resolution), then three dilated ones (dilation 2,
    4, 8) so each position sees the whole face. ``head: soft_argmax`` turns it into one heat map per
    point and takes each map's expected position (``SoftArgmax``); ``head: linear`` pools it to a 4x4
    grid and regresses the ``2 * num_points`` numbers with a fully connected layer, the textbook
    regressor, kept for comparison: a fully connected regressor tried while building this lesson
    stayed near the mean-shape baseline on the tutorial's 55 training faces.

    Logged once per epoch: ``train/loss``, ``train/nme``, ``val/loss``, ``val/nme``, ``val/nme_best``,
    ``val/nme_mean_shape``, ``test/loss``, ``test/nme``, ``test/nme_mean_shape``. ``validation_step``
    returns the predicted points in pixels, for callbacks. ``predict`` returns ``(N, num_points, 2)``
    points in the pixels of the image files (through the batch's ``to_original``).

    Args:
        num_points: Landmarks per face (a count >= 2).
        width: Channels of the first conv block (a count >= 1).
        head: ``soft_argmax`` (heat maps) or ``linear`` (fully connected).
        dropout: Dropout before the ``linear`` head's last layer, in [0, 1).
        loss: ``mse``, ``smooth_l1`` or ``l1``, on the relative coordinates.
        eye_corners: The two points whose distance normalises the NME: two different point indices
            below ``num_points``.
        optimizer: Builds the optimizer from the parameters.
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch.
    """

    def __init__(
        self,
        num_points: PositiveInt = 68,
        width: PositiveInt = 32,
        head: Literal["soft_argmax", "linear"] = "soft_argmax",
        dropout: Fraction = 0.3,
        loss: Literal["mse", "smooth_l1", "l1"] = "mse",
        eye_corners: tuple[NonNegativeInt, NonNegativeInt] = (36, 45),
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if not all(0 <= i < num_points for i in eye_corners):
            raise ExperimentError(
                f"--model.eye_corners {list(eye_corners)} must be point indices below --model.num_points "
                f"{num_points}: give two indices from 0 to {num_points - 1}, or more points"
            )
        if eye_corners[0] == eye_corners[1]:
            raise ExperimentError(
                f"--model.eye_corners {list(eye_corners)}: the two points must differ (their distance "
                "normalises the error); give two different indices, such as 36 and 45 (the outer eye corners)"
            )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.num_points = num_points
        self.loss_fn = LOSSES[loss]
        body = [
            conv_block(3, width, pool=True),
            conv_block(width, 2 * width, pool=True),
            conv_block(2 * width, 4 * width, pool=True),
            *(conv_block(4 * width, 4 * width, dilation=d) for d in (2, 4, 8)),
        ]
        if head == "soft_argmax":
            top = [nn.Conv2d(4 * width, num_points, kernel_size=1), SoftArgmax()]
        else:
            top = [
                nn.AdaptiveAvgPool2d(4),
                nn.Flatten(),
                nn.Dropout(dropout),
                nn.Linear(4 * width * 16, 2 * num_points),
            ]
        self.net = nn.Sequential(*body, *top)
        for phase in ("train", "val", "test"):
            setattr(self, f"{phase}_loss", EpochMean())
            setattr(self, f"{phase}_nme", NormalizedMeanError(*eye_corners))
        self.val_nme_mean_shape = NormalizedMeanError(*eye_corners)
        self.test_nme_mean_shape = NormalizedMeanError(*eye_corners)
        self.val_nme_best = MinMetric()
        # Sum and count of every relative training target seen (by every process): the mean training
        # shape, as the network sees it (after augmentation). Buffers, so a checkpoint keeps the baseline.
        # float32, not 64: Apple's MPS has no float64.
        self.register_buffer("shape_sum", torch.zeros(num_points, 2))
        self.register_buffer("shape_count", torch.zeros(()))

    def forward(self, images: Tensor) -> Tensor:
        """Points ``(N, num_points, 2)`` relative to the image: ``x / width - 0.5``, ``y / height - 0.5``."""
        return self.net(images).view(len(images), self.num_points, 2)

    @staticmethod
    def _size(images: Tensor) -> Tensor:
        return torch.tensor([images.shape[-1], images.shape[-2]], dtype=images.dtype, device=images.device)

    def to_pixels(self, relative: Tensor, images: Tensor) -> Tensor:
        return (relative + 0.5) * self._size(images)

    def mean_shape(self) -> Tensor | None:
        """The mean relative training shape ``(num_points, 2)``, None before any training step."""
        if self.shape_count == 0:
            return None
        return self.shape_sum / self.shape_count

    def _step(self, batch: tuple[Tensor, Tensor], phase: str) -> tuple[Tensor, Tensor]:
        images, landmarks = batch
        target = landmarks / self._size(images) - 0.5
        relative = self(images)
        loss = self.loss_fn(relative, target)
        pixels = self.to_pixels(relative.detach(), images)
        getattr(self, f"{phase}_loss").update(loss.detach(), weight=len(images))
        getattr(self, f"{phase}_nme").update(pixels, landmarks)
        if phase == "train":
            shape_sum = target.detach().sum(dim=0).float()
            shape_count = torch.tensor(float(len(target)), device=shape_sum.device)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # Every process adds every process's targets, so the mean shape is that of all the
                # training faces seen, the same on each rank (DDP would overwrite the others with rank 0's).
                dist.all_reduce(shape_sum)
                dist.all_reduce(shape_count)
            self.shape_sum += shape_sum
            self.shape_count += shape_count
        else:
            mean = self.mean_shape()
            if mean is not None:
                baseline = self.to_pixels(mean, images).expand_as(landmarks)
                getattr(self, f"{phase}_nme_mean_shape").update(baseline, landmarks)
        return loss, pixels

    def _log_phase(self, phase: str) -> dict[str, Tensor]:
        # The mean-shape baseline exists for evaluation only, and is known once training has seen a face.
        names = ("loss", "nme") if phase == "train" else ("loss", "nme", "nme_mean_shape")
        return log_phase(self, phase, phase_metrics(self, phase, names), optional=("nme_mean_shape",))

    def on_train_start(self) -> None:
        # The sanity check must not count towards the best validation NME.
        self.val_nme_best.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def on_train_epoch_end(self) -> None:
        self._log_phase("train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")[1]

    def on_validation_epoch_end(self) -> None:
        values = self._log_phase("val")
        log_best(self, "val/nme_best", values["val/nme"], self.val_nme_best)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")[1]

    def on_test_epoch_end(self) -> None:
        self._log_phase("test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Points in the image files' pixels: ``batch`` is ``(images, to_original)``; without
        ``to_original``, in the pixels of the images as given."""
        images = batch[0]
        pixels = self.to_pixels(self(images), images)
        if len(batch) < 2:
            return pixels
        to_original = batch[-1].to(pixels.dtype)
        return pixels * to_original[:, None, 0] + to_original[:, None, 1]

    def prediction_table(self, predictions: Any, datamodule: Any) -> dict[str, list[str]] | None:
        """``predict``'s points ``(N, points, 2)`` as the columns of ``predictions.csv``
        (``core.callbacks.PredictionWriter``): ``part_0_x, part_0_y, ...`` in pixels of each image file,
        the columns of the lesson's own landmarks CSV."""
        if not isinstance(predictions, Tensor) or predictions.dim() != 3 or predictions.shape[-1] != 2:
            return None
        points = predictions.detach().float().cpu()
        return {
            f"part_{i}_{axis}": [f"{v:.2f}" for v in points[:, i, a].tolist()]
            for i in range(points.shape[1])
            for a, axis in enumerate(("x", "y"))
        }

    def export_forward(self, images: Tensor) -> Tensor:
        """What ``python -m experiments export`` puts in the exported graph: the points ``(N, num_points,
        2)`` in the pixels of the images given, x then y (``predict`` without ``to_original``). ``forward``'s
        ``len(images)`` would fix the batch size in the traced graph; ``reshape(-1, ...)`` leaves it open."""
        return self.to_pixels(self.net(images).reshape(-1, self.num_points, 2), images)

    def export_description(self) -> dict[str, Any]:
        """The exported output's name and meaning, for the export's sidecar JSON."""
        meaning = "landmarks (x, y) in the input image's pixels, 0-based iBUG order"
        return {"output": {"name": "landmarks", "meaning": meaning}}

    def configure_optimizers(self) -> Any:
        return optimizer_config(self.parameters(), self.optimizer, self.lr_scheduler)


class LandmarkGrid(ValidationSamples):
    """Draws the first validation faces with the true landmarks (green) and the predicted ones (red),
    each titled with its NME, every ``every_n_epochs`` epochs and after the last one.

    Needs batches ``(images, landmarks)`` with images in [0, 1] and a module whose ``validation_step``
    returns the predicted points ``(N, points, 2)`` in the images' pixels (``LandmarkRegressor`` does).

    Args:
        num_images: Validation faces to show, from the first batches (a count >= 1).
        columns: Faces per row of the figure (a count >= 1).
        every_n_epochs: Epochs between figures (a count >= 0; 0: the last only); the last epoch is always
            drawn.
    """

    def __init__(
        self, num_images: PositiveInt = 8, columns: PositiveInt = 4, every_n_epochs: NonNegativeInt = 10
    ) -> None:
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
        epoch = trainer.current_epoch

        def draw() -> Any:
            figure, axes = self.subplots(len(images), cell=(2.6, 2.8), title_height=0.4)
            for i, ax in enumerate(axes.flat):
                ax.axis("off")
                if i >= len(images):
                    continue
                ax.imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy())
                ax.scatter(truth[i, :, 0], truth[i, :, 1], s=6, c="lime")
                ax.scatter(predicted[i, :, 0], predicted[i, :, 1], s=6, c="red", marker="x")
                ax.set_title(f"NME {errors[i]:.3f}", fontsize=9)
            figure.suptitle(f"true (green) and predicted (red) landmarks, epoch {epoch}")
            return figure

        log_figure(trainer, draw, "val/landmarks", png_name="val_landmarks")


class LandmarkCSVWriter(PredictionWriter):
    """Writes ``predict``'s points to ``<run folder>/<filename>`` as a CSV in the landmarks CSV's format
    (``image_name, part_0_x, part_0_y, ...``, one row per image), and nothing else. The command's
    prediction writer already writes that table, as ``predictions.csv``, for every run; this callback
    is kept for configs that name it (or to write the table under another name).

    Args:
        filename: File name inside the run folder (a name, not a path).
    """

    def __init__(self, filename: FileName = "predictions.csv") -> None:
        super().__init__(filename, table=None)

    def write(self, trainer: Trainer, predictions: Any, path: Path) -> bool:
        rows = prediction_rows(trainer.datamodule, trainer.lightning_module, predictions)
        if rows is None or len(rows) < 2:
            return False
        write_csv(path, rows)
        return True
