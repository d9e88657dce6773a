"""Lesson 线性回归 (linear regression): ``nn.Linear(1, 1)`` fitted to y = 2x + 3 + noise.

Run: ``python -m experiments fit --config configs/linear_regression.yaml``

The seed builds the data and the model and plots the fit before training, but its training loop is
missing from the chapter; this lesson trains with SGD and MSE (mini-batches of 32) and prints the
recovered slope and intercept when fit ends. The seed's ``plot_current_fit`` is the
``experiments.callbacks.LinearFitPlot`` callback. Seed bugs not carried over: the duplicated
``m = 2 ... c = 3`` line, ``input_dim, output_dim(1, 1)`` (a call on a tuple), and the unindented
body of ``plot_current_fit``.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from modules.regression import OptimizerCallable, RegressionModule


class LinearRegression(RegressionModule):
    """``nn.Linear(input_dim, output_dim)`` trained with MSE; logs its slope and intercept each epoch.

    Args:
        input_dim: Input features.
        output_dim: Outputs.
        optimizer: Builds the optimizer from the parameters (SGD, lr 0.1 by default).
    """

    def __init__(
        self,
        input_dim: int = 1,
        output_dim: int = 1,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.1),
    ) -> None:
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = nn.Linear(input_dim, output_dim)

    def slope_intercept(self) -> tuple[float, float]:
        """The fitted line of the first input and output, as the seed's ``get_param_values``."""
        return self.net.weight[0, 0].item(), self.net.bias[0].item()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        slope, intercept = self.slope_intercept()
        self.log_dict({"train/slope": slope, "train/intercept": intercept})

    @rank_zero_only
    def on_fit_end(self) -> None:
        slope, intercept = self.slope_intercept()
        print(f"Recovered slope {slope:.4f}, intercept {intercept:.4f}")
