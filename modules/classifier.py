"""The convnet chapter's ``fit()`` (Convents: 训练模型) as a LightningModule every image lesson shares.

The tutorial's ``fit(epoch, model, data_loader, phase)`` switches the network between training and
evaluation (dropout on and off), computes the NLL loss of log-softmax outputs, counts correct
predictions and prints loss and accuracy per phase. Here Lightning runs the phases; this class owns the
loss and one torchmetrics object per phase, logs ``train/loss``, ``train/acc``, ``val/loss``,
``val/acc``, ``val/acc_best``, ``test/loss`` and ``test/acc`` once per epoch (a ``self.log`` per step
costs more than a step of a small network), and ``predict`` returns class probabilities (``predictions.pt``),
which ``prediction_table`` turns into class names and probabilities (``predictions.csv``). A lesson only
builds ``self.net``, a network that returns logits. The first batch of each phase has its targets checked
(``check_targets``: one class index per sample, below ``num_classes``), so labels in another form are one
error line, not a traceback from inside the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from core.domains import PositiveInt
from core.errors import DataConfigError, ExperimentError, InputShapeError
from core.metrics import EpochMean, log_best, log_phase, phase_metrics
from core.optim import LRSchedulerCallable, OptimizerCallable, optimizer_config


def check_num_classes(num_classes: int) -> None:
    """A classifier tells at least two classes apart (torchmetrics' accuracy refuses fewer)."""
    if num_classes < 2:
        raise ExperimentError(
            f"--model.num_classes {num_classes}: a classifier tells at least 2 classes apart; give 2 or more"
        )


class PhaseAccuracy(LightningModule):
    """The epoch-end logging of a classifier: each phase's metrics ``{phase}_{name}`` for the names in
    ``phase_metrics`` (a subclass creates them and updates them in its steps) logged as ``{phase}/{name}``
    and reset, and ``val/acc_best``, the best ``val/acc`` so far (the sanity check not counted)."""

    phase_metrics: tuple[str, ...] = ("loss", "acc")
    val_acc_best: MaxMetric

    def _log_phase(self, phase: str) -> dict[str, Tensor]:
        return log_phase(self, phase, phase_metrics(self, phase, self.phase_metrics))

    def on_train_start(self) -> None:
        # The sanity check must not count towards the best validation accuracy.
        self.val_acc_best.reset()

    def on_train_epoch_end(self) -> None:
        self._log_phase("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_phase("val")
        log_best(self, "val/acc_best", values["val/acc"], self.val_acc_best)

    def on_test_epoch_end(self) -> None:
        self._log_phase("test")


class ImageClassifier(PhaseAccuracy):
    """``self.net`` (images -> logits) trained with NLL of log-softmax (= cross-entropy).

    Args:
        num_classes: Classes to tell apart (a count >= 2).
        optimizer: Builds the optimizer from the parameters.
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch.
    """

    net: torch.nn.Module
    #: (channels, height, width) the network takes; None if any
    input_shape: tuple[int, int, int] | None = None

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.num_classes = num_classes
        self.train_loss, self.val_loss, self.test_loss = EpochMean(), EpochMean(), EpochMean()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        # Phases whose first batch's targets were checked (check_targets): once each, not per batch.
        self._checked_targets: set[str] = set()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def check_input(self, images: Tensor) -> None:
        """Fail with a readable message, not a matrix-multiply error deep in the network."""
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            got = "x".join(str(d) for d in images.shape[1:])
            raise InputShapeError(
                f"{type(self).__name__} takes {c}x{h}x{w} images, got {got}: resize the data "
                f"(ImageFolderDataModule: --data.image_size {h}) or change the model's input size"
            )

    def check_targets(self, labels: Tensor) -> None:
        """Fail in one line when the targets are not one class index per sample, in ``[0, num_classes)``.

        Otherwise the loss fails later with a traceback (``0D or 1D target tensor expected`` for a
        ``(N, 1)`` column, a dtype error for float labels), or, on a GPU, a device-side assert for a label
        past ``num_classes``, which also ends the CUDA context.
        """
        name, last = type(self).__name__, self.num_classes - 1
        dtype = labels.dtype
        integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
        if labels.dim() != 1 or not integer:
            fixes = []
            if labels.dim() == 2 and labels.shape[1] == 1:
                fixes.append("take the label column's one value per sample (labels[:, 0])")
            elif labels.dim() == 2:
                fixes.append("turn one-hot or probability rows into class indices (labels.argmax(1))")
            elif labels.dim() != 1:
                fixes.append("give one label per sample")
            if not integer:
                fixes.append("make the labels integers (.long())")
            raise InputShapeError(
                f"{name} takes targets of shape (N,), one integer class index per sample, got "
                f"{str(dtype).removeprefix('torch.')} targets of shape {tuple(labels.shape)} from the data: "
                f"in the datamodule, {' and '.join(fixes)}"
            )
        if labels.numel() == 0:
            return
        # Reading min and max waits for the device. Called from the batch-start hooks below, once per
        # phase, that is one wait per run; no training step reads a value (test_host_syncs.py).
        low, high = torch.stack([labels.min(), labels.max()]).tolist()
        if low < 0:
            raise DataConfigError(
                f"{name} takes class indices 0..{last} as targets, got labels from {low} to {high}: number "
                "the classes from 0 in the datamodule"
            )
        if high > last:
            raise DataConfigError(
                f"{name} has num_classes {self.num_classes}, so its targets are 0..{last}, got labels up to "
                f"{high} from the data: set --model.num_classes to {high + 1} (or more)"
            )

    def _check_first_targets(self, batch: Any, phase: str) -> None:
        if phase not in self._checked_targets:
            self.check_targets(batch[1])
            self._checked_targets.add(phase)

    # Lightning calls these before each step, outside it: the check runs at a phase's first batch only,
    # and training_step itself stays free of host reads.
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._check_first_targets(batch, "train")

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._check_first_targets(batch, "val")

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._check_first_targets(batch, "test")

    def _step(self, batch: tuple[Tensor, Tensor], phase: str) -> tuple[Tensor, Tensor]:
        images, labels = batch
        self.check_input(images)
        logits = self(images)
        # The tutorial's F.nll_loss(F.log_softmax(...)); cross_entropy is the same computation, fused.
        loss = F.cross_entropy(logits, labels)
        getattr(self, f"{phase}_loss").update(loss.detach(), weight=len(labels))
        getattr(self, f"{phase}_acc").update(logits.detach(), labels)
        return loss, logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # The logits reach callbacks' on_validation_batch_end (predictions grid, confusion matrix), so
        # they need no second forward pass.
        return self._step(batch, "val")[1].detach()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")[1].detach()

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        self.check_input(batch[0])
        return self(batch[0]).softmax(dim=1)

    #: how many of the likeliest classes ``predictions.csv`` lists per input
    table_top_k: int = 3

    def prediction_table(self, predictions: Any, datamodule: Any) -> dict[str, list[str]] | None:
        """``predict``'s probabilities ``(N, num_classes)`` as the columns of ``predictions.csv``
        (``core.callbacks.PredictionWriter``): the likeliest class by name (the datamodule's ``classes``,
        else its index) and its probability, then the next ``table_top_k - 1`` (``class_2``,
        ``probability_2``, ...)."""
        if not isinstance(predictions, Tensor) or predictions.dim() != 2:
            return None
        count = predictions.shape[1]
        # A model with more outputs than the data has classes (num_classes above the class folders'
        # count) names the extra ones by index.
        names = [str(name) for name in getattr(datamodule, "classes", None) or []][:count]
        names += [str(i) for i in range(len(names), count)]
        probabilities, indices = predictions.detach().float().cpu().topk(min(self.table_top_k, count), dim=1)
        columns: dict[str, list[str]] = {}
        for place in range(indices.shape[1]):
            suffix = "" if place == 0 else f"_{place + 1}"
            columns[f"class{suffix}"] = [names[i] for i in indices[:, place].tolist()]
            columns[f"probability{suffix}"] = [f"{p:.4f}" for p in probabilities[:, place].tolist()]
        return columns

    def export_forward(self, images: Tensor) -> Tensor:
        """What ``python -m experiments export`` puts in the exported graph: class probabilities, as
        ``predict`` returns them (the datamodule's ``classes`` name the columns)."""
        return self(images).softmax(dim=1)

    def export_description(self) -> dict[str, Any]:
        """The exported output's name and meaning, for the export's sidecar JSON."""
        meaning = "class probabilities (softmax), one column a class"
        return {"output": {"name": "probabilities", "meaning": meaning}}

    def configure_optimizers(self) -> Any:
        return optimizer_config(self.parameters(), self.optimizer, self.lr_scheduler)
