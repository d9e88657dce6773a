"""The convnet chapter's 可视化 (visualisation) lesson as callbacks: what a classifier sees and learns.

Add them to an image lesson's ``trainer.callbacks`` (``configs/mnist_convnet.yaml`` does) and open
TensorBoard's Images tab:

- ``InputGrid``: the first training batch as the loader yields it, before augmentation (``train/inputs``);
- ``PredictionGrid``: validation images titled "true / predicted", mistakes in red (``val/predictions``);
- ``FilterGrid``: the first convolution's filters (``weights/filters/<layer>``);
- ``ConfusionMatrix``: counts of true against predicted classes (``val/confusion_matrix``).

On several processes every rank takes part (the samples drawn are gathered, the confusion counts
reduced) and global rank zero draws, so the figures are those of one process; they stand aside when the
run writes no TensorBoard logs (``--trainer.logger false``, ``fast_dev_run``). The two validation
figures also go to the run folder's ``figures/`` as PNG files, overwritten each epoch so the last
epoch's remain. They are drawn off the training path (``core.figures``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from core.callbacks import ValidationSamples, peek
from core.distributed import gather_objects, interleave
from core.domains import PositiveInt
from core.figures import add_image, draws_this_validation, log_figure, logs_images, new_figure


def wrong_predictions(predictions: Tensor, labels: Tensor) -> Tensor:
    """Indices where ``predictions`` (class indices, or logits ``(N, classes)``) differ from ``labels``."""
    if predictions.ndim == 2:
        predictions = predictions.argmax(dim=1)
    return (predictions != labels).nonzero().flatten()


def unnormalize(images: Tensor, mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None) -> Tensor:
    """Images back in [0, 1] for display: ``x * std + mean`` when normalised, then clamped."""
    if mean_std is not None:
        mean = torch.tensor(mean_std[0], dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(mean_std[1], dtype=images.dtype).view(1, -1, 1, 1)
        images = images * std + mean
    return images.clamp(0, 1)


def filter_image(weight: Tensor, pixels_per_weight: int = 8) -> Tensor:
    """A convolution's weights ``(out, in, kh, kw)`` as one ``(3, H, W)`` grid in [0, 1].

    Each filter is min-max scaled on its own: filters differ in magnitude, and one scale for all would
    leave most of them flat grey. Three input channels are shown as colour, any other number by the
    first channel alone. Weights are enlarged ``pixels_per_weight`` times (nearest), since a 3x3 kernel
    is otherwise three pixels wide on screen.
    """
    weight = weight.detach().float().cpu()
    if weight.shape[1] != 3:
        weight = weight[:, :1]
    low = weight.amin(dim=(1, 2, 3), keepdim=True)
    high = weight.amax(dim=(1, 2, 3), keepdim=True)
    weight = (weight - low) / (high - low).clamp_min(1e-12)
    weight = weight.repeat_interleave(pixels_per_weight, dim=2).repeat_interleave(pixels_per_weight, dim=3)
    return make_grid(weight, nrow=math.ceil(math.sqrt(len(weight))), padding=1, pad_value=0.5)


def class_names(trainer: Trainer, count: int) -> list[str]:
    """Names of classes ``0..count-1``: the datamodule's ``classes`` where it has them, else the indices."""
    names = list(getattr(getattr(trainer, "datamodule", None), "classes", None) or [])
    return [str(names[i]) if i < len(names) else str(i) for i in range(count)]


class InputGrid(Callback):
    """Draws the first training batch, as the loader yields it (before device-side augmentation and
    normalisation), once when training starts: TensorBoard image ``train/inputs``.

    Args:
        num_images: Images of the batch to show, at most (a count >= 1).
    """

    def __init__(self, num_images: PositiveInt = 64) -> None:
        self.num_images = num_images

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_train_start, not on_fit_start: the training loader exists only from here on.
        if not logs_images(trainer) or trainer.train_dataloader is None:
            return
        # A shuffling DataLoader draws its seed from the global generator when iterated; forking keeps
        # this extra look at the data from changing the run's random stream.
        with torch.random.fork_rng(devices=[]):
            batch = next(peek(trainer.train_dataloader), None)
        images = batch[0] if isinstance(batch, (tuple, list)) and batch else None
        if not isinstance(images, Tensor) or images.ndim != 4:
            images = None  # several loaders, or batches that are not (images, labels): nothing to draw
        # Each rank has its shard of the first batch; rank 0 deals them back in turn into the batch
        # one process would have drawn (every rank takes part, whatever it holds).
        parts = gather_objects(trainer, None if images is None else images[: self.num_images])
        if parts is None or any(part is None for part in parts):
            return
        images = interleave([{"images": part} for part in parts])["images"][: self.num_images]
        # Float images have no fixed range; uint8 ones are shown as they are.
        grid = make_grid(images, normalize=images.is_floating_point())
        add_image(trainer, "train/inputs", grid)


class PredictionGrid(ValidationSamples):
    """Draws the first validation images with "true / predicted" class names as titles, wrong ones in
    red with a red frame, at the end of each validation epoch: ``val/predictions``.

    Needs a module whose ``validation_step`` returns the batch's logits (``ImageClassifier`` does).

    Args:
        num_images: Validation images to show, taken from the first batches (a count >= 1).
        columns: Images per row of the figure (a count >= 1).
    """

    def __init__(self, num_images: PositiveInt = 32, columns: PositiveInt = 8) -> None:
        super().__init__(num_images, columns)

    def sample(self, batch: Any, outputs: Tensor) -> tuple[Tensor, ...]:
        return batch[0].float(), batch[1], outputs.argmax(dim=1)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        kept = self.take(trainer)
        if kept is None:
            return
        images, labels, predictions = kept
        datamodule = getattr(trainer, "datamodule", None)
        normalized = getattr(datamodule, "normalize", False)
        images = unnormalize(images, getattr(datamodule, "mean_std", None) if normalized else None)
        wrong = set(wrong_predictions(predictions, labels).tolist())
        names = class_names(trainer, int(max(labels.max(), predictions.max())) + 1)
        epoch = trainer.current_epoch

        def draw() -> Any:
            figure, axes = self.subplots(len(images), cell=(1.6, 2.0), title_height=0.5)
            for i, ax in enumerate(axes.flat):
                if i >= len(images):
                    ax.axis("off")
                    continue
                image = images[i]
                if image.shape[0] == 3:
                    ax.imshow(image.permute(1, 2, 0).numpy())
                else:
                    ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
                # Ticks off but spines kept (axis("off") would hide them): the spines are the red frame.
                ax.set_xticks([])
                ax.set_yticks([])
                color = "red" if i in wrong else "black"
                title = f"{names[int(labels[i])]} / {names[int(predictions[i])]}"
                # Large enough to read when TensorBoard shrinks the grid to its card width; smaller for
                # long class names ("automobile / airplane") so that neighbours' titles do not overlap.
                size = 14 if len(title) <= 10 else 11 if len(title) <= 16 else 9
                ax.set_title(title, fontsize=size, fontweight="bold", color=color)
                for spine in ax.spines.values():
                    spine.set_visible(i in wrong)
                    spine.set_color("red")
                    spine.set_linewidth(3)
            figure.suptitle(f"true / predicted, epoch {epoch}: {len(wrong)} of {len(images)} wrong")
            return figure

        log_figure(trainer, draw, "val/predictions", png_name="val_predictions")


class FilterGrid(Callback):
    """Draws the filters of the module's first ``nn.Conv2d`` at the end of each validation epoch:
    ``weights/filters/<layer name>`` (e.g. ``weights/filters/net.conv_1``). Each filter is scaled to its own
    min and max; with other than 3 input channels, only the first is shown.

    Args:
        pixels_per_weight: How many times to enlarge each weight on screen (a count >= 1).
    """

    def __init__(self, pixels_per_weight: PositiveInt = 8) -> None:
        self.pixels_per_weight = pixels_per_weight

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not draws_this_validation(trainer):
            return
        for name, module in pl_module.named_modules():
            if isinstance(module, nn.Conv2d):
                image = filter_image(module.weight, self.pixels_per_weight)
                add_image(trainer, f"weights/filters/{name}", image)
                return


class ConfusionMatrix(Callback):
    """Draws the validation epoch's confusion matrix as a heat map, true classes down and predicted ones
    across, with the counts in the cells: ``val/confusion_matrix``.

    Needs a module whose ``validation_step`` returns the batch's logits (``ImageClassifier`` does). The
    number of classes is the logits' width.
    """

    #: What the counted samples are, for the title.
    samples = "images"

    def __init__(self) -> None:
        self.metric: MulticlassConfusionMatrix | None = None

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 0 or not isinstance(outputs, Tensor) or not draws_this_validation(trainer):
            return
        if self.metric is None:
            self.metric = MulticlassConfusionMatrix(num_classes=outputs.shape[1]).to(pl_module.device)
        self.metric.update(outputs.detach(), batch[1])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Every rank, not only rank zero: under DDP, compute() gathers every rank's counts.
        if self.metric is None or not draws_this_validation(trainer):
            return
        counts = self.metric.compute().cpu()
        self.metric.reset()
        if trainer.is_global_zero:
            self._draw(trainer, counts)

    def _draw(self, trainer: Trainer, counts: Tensor) -> None:
        n = len(counts)
        names = class_names(trainer, n)
        epoch, samples = trainer.current_epoch, self.samples

        def draw() -> Any:
            side = max(4.0, 0.45 * n + 2)
            figure = new_figure((side, side))
            ax = figure.subplots()
            ax.imshow(counts.numpy(), cmap="Blues")
            ax.set_xticks(range(n), names, rotation=90 if max(map(len, names)) > 2 else 0)
            ax.set_yticks(range(n), names)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"epoch {epoch}, {int(counts.sum())} {samples}")
            # Beyond ~30 classes the numbers no longer fit their cells; the colours still read.
            if n <= 30:
                threshold = counts.max().item() / 2
                for i, row in enumerate(counts.tolist()):
                    for j, count in enumerate(row):
                        color = "white" if count > threshold else "black"
                        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
            figure.tight_layout()
            return figure

        log_figure(trainer, draw, "val/confusion_matrix", png_name="confusion_matrix")
