"""Lesson 线性回归 (linear regression): ``nn.Linear(1, 1)`` fitted to y = 2x + 3 + noise.

Run: ``python -m experiments fit --config configs/linear_regression.yaml``

The tutorial builds the data and the model and plots the fit before training, but its training loop is
missing from the chapter; this lesson trains with SGD and MSE (mini-batches of 32) and prints the
recovered slope and intercept when fit ends. The tutorial's ``plot_current_fit`` is the ``LinearFitPlot``
callback below. The tutorial's bugs not carried over: the duplicated
``m = 2 ... c = 3`` line, ``input_dim, output_dim(1, 1)`` (a call on a tuple), and the unindented
body of ``plot_current_fit``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from core.callbacks import collect_all
from core.domains import PositiveInt
from core.figures import log_figure, new_figure
from core.optim import OptimizerCallable
from modules.regression import RegressionModule


class LinearRegression(RegressionModule):
    """``nn.Linear(input_dim, output_dim)`` trained with MSE; logs its slope and intercept each epoch.

    Args:
        input_dim: Input features (a count >= 1).
        output_dim: Outputs (a count >= 1).
        optimizer: Builds the optimizer from the parameters (SGD, lr 0.1 by default).
    """

    input_argument = "input_dim"

    def __init__(
        self,
        input_dim: PositiveInt = 1,
        output_dim: PositiveInt = 1,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.1),
    ) -> None:
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = nn.Linear(input_dim, output_dim)

    def slope_intercept(self) -> tuple[float, float]:
        """The fitted line of the first input and output, as the tutorial's ``get_param_values``."""
        return self.net.weight[0, 0].item(), self.net.bias[0].item()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        slope, intercept = self.slope_intercept()
        self.log_dict({"train/slope": slope, "train/intercept": intercept})

    @rank_zero_only
    def on_fit_end(self) -> None:
        slope, intercept = self.slope_intercept()
        print(f"Recovered slope {slope:.4f}, intercept {intercept:.4f}")


class LinearFitPlot(Callback):
    """The tutorial's ``plot_current_fit``: training points and the current line, before and after training.

    The legend reads "Current Fit (w, b)" as in the tutorial. Needs a module with ``slope_intercept()``.
    """

    def _plot(self, trainer: Trainer, pl_module: LightningModule, title: str, name: str) -> None:
        points = collect_all(trainer, trainer.train_dataloader)
        w, b = pl_module.slope_intercept()
        if not points:  # None: not global rank 0, whose is the figure; (): no points at all
            return
        x, y = (t[:, 0].cpu() for t in points[:2])

        def draw() -> Any:
            figure = new_figure((12, 4))
            ax = figure.subplots()
            ax.set_title(title)
            ax.scatter(x, y, s=8)
            x1 = torch.tensor([0.0, 1.0])
            ax.plot(x1, x1 * w + b, "r", label=f"Current Fit ({w:.3f}, {b:.3f})")
            ax.set_xlabel("x (input)")
            ax.set_ylabel("y (target)")
            ax.legend()
            return figure

        log_figure(trainer, draw, f"train/fit_{name}", png_name=f"fit_{name}")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_train_start, not on_fit_start: the training loader exists only from here on.
        self._plot(trainer, pl_module, "Before training", "before_training")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._plot(trainer, pl_module, "After training", "after_training")
