"""The training loop shared by the lessons that regress with a mean-squared error.

The seed's loop (forward, MSE, zero_grad, backward, step) becomes ``training_step``; Lightning runs
the rest. Subclasses only build ``self.net``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

# What LightningCLI's dependency injection hands a module: params -> optimizer. Spelled out rather than
# imported from lightning.pytorch.cli so a module file imports nothing of the CLI.
OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]


class RegressionModule(LightningModule):
    """A ``self.net`` trained with MSE; logs ``train/loss``, ``val/loss`` and ``test/loss`` per epoch.

    ``predict`` returns the network's outputs.
    """

    net: torch.nn.Module

    def __init__(self, optimizer: OptimizerCallable) -> None:
        super().__init__()
        self.optimizer = optimizer

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _loss(self, batch: tuple[Tensor, Tensor], phase: str) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        # Epoch means weighted by batch size: the per-epoch loss of the seed's loop, whatever the batching.
        self.log(f"{phase}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._loss(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._loss(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())
