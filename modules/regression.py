"""The training loop shared by the lessons that regress with a mean-squared error.

The tutorial's loop (forward, MSE, zero_grad, backward, step) becomes ``training_step``; Lightning runs
the rest. Subclasses only build ``self.net``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MeanMetric

from core.errors import InputShapeError
from core.metrics import EpochMean, log_phase
from core.optim import OptimizerCallable, build_optimizer


class RegressionModule(LightningModule):
    """A ``self.net`` trained with MSE; logs ``train/loss``, ``val/loss`` and ``test/loss`` once per epoch.

    ``predict`` returns the network's outputs.
    """

    net: torch.nn.Module
    #: The ``__init__`` argument that sets the number of input features (named in the shape error).
    input_argument = "in_features"

    def __init__(self, optimizer: OptimizerCallable) -> None:
        super().__init__()
        self.optimizer = optimizer
        # One metric object per phase; the epoch mean is weighted by batch size, so it is the per-epoch
        # loss of the tutorial's loop whatever the batching. Updating a metric costs far less than a
        # `self.log` call per step, which matters for lessons whose steps take microseconds.
        self.train_loss, self.val_loss, self.test_loss = EpochMean(), EpochMean(), EpochMean()

    def _metric(self, phase: str) -> MeanMetric:
        return getattr(self, f"{phase}_loss")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def check_input(self, x: Tensor) -> None:
        """Fail with a readable message naming both shapes, not a matrix-multiply error in the network."""
        first = next((m for m in self.net.modules() if isinstance(m, torch.nn.Linear)), None)
        if first is not None and (x.dim() != 2 or x.shape[1] != first.in_features):
            raise InputShapeError(
                f"{type(self).__name__} takes rows of {first.in_features} features, got a batch of shape "
                f"{tuple(x.shape)} from the data: set --model.{self.input_argument} to "
                f"{x.shape[-1]}, or give it data with {first.in_features} features"
            )

    def check_target(self, pred: Tensor, y: Tensor) -> None:
        """Fail in one line when the targets' shape or type differs from the predictions'.

        ``F.mse_loss`` broadcasts: ``(N,)`` targets against ``(N, 1)`` predictions give an ``(N, N)``
        difference and a wrong loss with only a warning, and integer targets fail with a dtype traceback.
        A comparison of shapes and dtypes reads nothing from the device.
        """
        if y.shape != pred.shape or not y.dtype.is_floating_point:
            expected = ", ".join(["N", *(str(d) for d in pred.shape[1:])])
            hint = " (y.unsqueeze(1) for one target per sample)" if y.shape == pred.shape[:1] else ""
            raise InputShapeError(
                f"{type(self).__name__} predicts a batch of shape {tuple(pred.shape)}, got "
                f"{str(y.dtype).removeprefix('torch.')} targets of shape {tuple(y.shape)} from the data: in "
                f"the datamodule, make the targets floats of shape ({expected}){hint}"
            )

    def _loss(self, batch: tuple[Tensor, Tensor], phase: str) -> Tensor:
        x, y = batch
        self.check_input(x)
        pred = self(x)
        self.check_target(pred, y)
        loss = F.mse_loss(pred, y)
        self._metric(phase).update(loss.detach(), weight=len(x))
        return loss

    def _log_epoch(self, phase: str) -> dict[str, Tensor]:
        return log_phase(self, phase, {"loss": self._metric(phase)})

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._loss(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._loss(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def prediction_table(self, predictions: Any, datamodule: Any) -> dict[str, list[str]] | None:
        """``predict``'s outputs ``(N, targets)`` as the columns of ``predictions.csv``
        (``core.callbacks.PredictionWriter``), headed by the datamodule's ``target_names`` (Boston: MEDV),
        else ``prediction`` (``prediction_0``, ... for several outputs)."""
        if not isinstance(predictions, Tensor) or predictions.dim() not in (1, 2):
            return None
        values = predictions.detach().float().cpu().reshape(len(predictions), -1)
        names = list(getattr(datamodule, "target_names", None) or [])
        if len(names) != values.shape[1]:
            count = values.shape[1]
            names = ["prediction"] if count == 1 else [f"prediction_{i}" for i in range(count)]
        return {name: [f"{v:.6g}" for v in values[:, i].tolist()] for i, name in enumerate(names)}

    def export_description(self) -> dict[str, object]:
        """The exported output's name and meaning (``python -m experiments export``'s sidecar JSON)."""
        return {"output": {"name": "prediction", "meaning": "the predicted targets, one column a target"}}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer, self.parameters())
