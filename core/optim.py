"""What a lesson's ``configure_optimizers`` takes: an optimizer and an optional scheduler, injected.

The types are what LightningCLI's dependency injection hands a module (a config names any ``torch.optim``
class and its arguments), spelled out here rather than imported from ``lightning.pytorch.cli`` so that a
module imports nothing of the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from core.errors import ExperimentError

#: params -> optimizer
OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
#: optimizer -> scheduler; any torch scheduler class can be injected
LRSchedulerCallable = Callable[[Optimizer], LRScheduler | ReduceLROnPlateau]


def build_optimizer(optimizer: OptimizerCallable, parameters: Iterable[Any]) -> torch.optim.Optimizer:
    """``optimizer(parameters)``, with an argument the optimizer rejects (torch's ``ValueError``: a
    negative learning rate, betas out of range) a user's error naming the flag."""
    try:
        return optimizer(parameters)
    except ValueError as error:
        raise ExperimentError(
            f"--model.optimizer: {error}: set a valid value in the config or the flag"
        ) from error


def optimizer_config(
    parameters: Iterable[Tensor], optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable | None
) -> Any:
    """``configure_optimizers``' answer for an injected optimizer and optional scheduler: the scheduler
    steps once per epoch, and a ReduceLROnPlateau watches ``val/loss``."""
    built = build_optimizer(optimizer, parameters)
    if lr_scheduler is None:
        return built
    scheduler = {"scheduler": lr_scheduler(built), "interval": "epoch", "monitor": "val/loss"}
    return {"optimizer": built, "lr_scheduler": scheduler}
