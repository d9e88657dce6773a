"""The training loop shared by the lessons that regress with a mean-squared error.

The seed's loop (forward, MSE, zero_grad, backward, step) becomes ``training_step``; Lightning runs
the rest. Subclasses only build ``self.net``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MeanMetric

from core.metrics import log_phase
from core.optim import OptimizerCallable


class RegressionModule(LightningModule):
    """A ``self.net`` trained with MSE; logs ``train/loss``, ``val/loss`` and ``test/loss`` once per epoch.

    ``predict`` returns the network's outputs.
    """

    net: torch.nn.Module

    def __init__(self, optimizer: OptimizerCallable) -> None:
        super().__init__()
        self.optimizer = optimizer
        # One metric object per phase; the epoch mean is weighted by batch size, so it is the per-epoch
        # loss of the seed's loop whatever the batching. Updating a metric costs far less than a
        # `self.log` call per step, which matters for lessons whose steps take microseconds.
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()

    def _metric(self, phase: str) -> MeanMetric:
        return getattr(self, f"{phase}_loss")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _loss(self, batch: tuple[Tensor, Tensor], phase: str) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())
