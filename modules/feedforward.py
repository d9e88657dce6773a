"""Lesson 神经网络实现 (first network): the tutorial's 10-5-1 network, ReLU then Sigmoid, MSE and SGD.

Run: ``python -m experiments fit --config configs/first_network.yaml``

Departures from the tutorial: the tutorial's "Construct the loss function" line is not commented out (a
syntax error), and it prints the loss per epoch; here Lightning logs it as ``train/loss``. The data is
drawn by ``RandomTensorDataModule`` instead of typed in.
"""

from __future__ import annotations

import torch
from torch import nn

from core.domains import PositiveInt
from core.optim import OptimizerCallable
from modules.regression import RegressionModule


class FeedForwardNet(RegressionModule):
    """``Linear(n_in, n_h) -> ReLU -> Linear(n_h, n_out) -> Sigmoid``, trained with MSE.

    Args:
        n_in: Input features (a count >= 1).
        n_h: Hidden units (a count >= 1).
        n_out: Outputs, each squashed to (0, 1) (a count >= 1).
        optimizer: Builds the optimizer from the parameters; the tutorial's is SGD with lr 0.01.
    """

    input_argument = "n_in"

    def __init__(
        self,
        n_in: PositiveInt = 10,
        n_h: PositiveInt = 5,
        n_out: PositiveInt = 1,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.01),
    ) -> None:
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["optimizer"])
        # nn.Sequential as in the tutorial, so a state_dict and the initial weights match it exactly.
        self.net = nn.Sequential(nn.Linear(n_in, n_h), nn.ReLU(), nn.Linear(n_h, n_out), nn.Sigmoid())
