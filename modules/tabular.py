"""Lesson 数学构建模块 (Boston house prices as a 506x13 matrix): a regressor for rows of numeric features.

Run: ``python -m experiments fit --config configs/boston_housing.yaml`` (an MLP), or
``configs/boston_housing_linear.yaml`` (linear regression, the baseline it has to beat); then ``test``
with ``--ckpt_path best``.

The tutorial only loads the table (``torch.from_numpy(boston.data)``, a ``torch.Size([506, 13])``) and
prints two rows; there is no model to port. This lesson gives the matrix a purpose: predict MEDV from
the 13 features and report the test RMSE. Departures from the tutorial: ``sklearn.datasets.load_boston``
(removed from scikit-learn in 1.2) becomes the CSV copy shipped in ``datamodules/resources/``, read by
``BostonHousingDataModule``; the features are standardised with training statistics (the raw columns
differ in scale by three orders of magnitude, NOX about 0.5 and TAX about 400, which makes plain
gradient descent crawl along some directions and diverge along others); the table's float64 becomes
float32.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MinMetric
from torchmetrics.regression import MeanSquaredError

from core.domains import Fraction, PositiveInt
from core.errors import InputShapeError
from core.metrics import log_best, log_phase, phase_metrics
from core.optim import LRSchedulerCallable, OptimizerCallable, optimizer_config
from modules.regression import RegressionModule


def mlp(in_features: int, hidden_sizes: list[int], out_features: int, dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; no hidden size is a linear model.

    Not torchvision.ops.MLP: it puts dropout after the output layer too, which for a regressor would
    zero predictions at random while training.
    """
    layers: list[nn.Module] = []
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class TabularRegressor(RegressionModule):
    """A linear model or an MLP over feature vectors, trained with MSE; reports RMSE in the target's units.

    Logged once per epoch: ``{train,val,test}/loss`` (MSE) and ``{train,val,test}/rmse``, and
    ``val/rmse_best``. The datamodules standardise features, not the target, so the RMSE is in the
    target's units (Boston: $1000s). ``predict`` returns the predicted targets.

    Args:
        in_features: Features per row (a count >= 1; Boston: 13); the command takes it from the datamodule.
        hidden_sizes: Widths of the hidden layers (each a count >= 1); empty for linear regression.
        dropout: Dropout probability after each hidden layer's ReLU, in [0, 1) (0 for none).
        out_features: Targets per row (a count >= 1).
        optimizer: Builds the optimizer from the parameters.
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch
            (ReduceLROnPlateau watches ``val/loss``).
    """

    #: Without dropout a fit is deterministic: two processes compute what one does (docs/architecture.md).
    deterministic_args: ClassVar[dict[str, Any] | None] = {"dropout": 0.0}

    def __init__(
        self,
        in_features: PositiveInt = 13,
        hidden_sizes: list[PositiveInt] | None = None,
        dropout: Fraction = 0.0,
        out_features: PositiveInt = 1,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer)
        hidden_sizes = list(hidden_sizes or [])
        # The parser enforces these domains; a module built from Python is checked here.
        if min([in_features, out_features, *hidden_sizes]) < 1:
            raise ValueError(
                f"in_features, out_features and hidden_sizes must be at least 1, got {in_features}, "
                f"{out_features} and {hidden_sizes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.lr_scheduler = lr_scheduler
        self.in_features = in_features
        self.net = mlp(in_features, hidden_sizes, out_features, dropout)
        # squared=False: the root of the epoch's mean squared error, not a mean of per-batch roots.
        self.train_rmse = MeanSquaredError(squared=False)
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        self.val_rmse_best = MinMetric()

    def check_input(self, x: Tensor) -> None:
        """Fail with a readable message, not a matrix-multiply error inside the first layer."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise InputShapeError(
                f"{type(self).__name__} takes rows of {self.in_features} features, got a batch of shape "
                f"{tuple(x.shape)}: set --model.in_features to the number of feature columns"
            )

    def _loss(self, batch: tuple[Tensor, Tensor], phase: str) -> Tensor:
        x, y = batch
        self.check_input(x)
        pred = self(x)
        self.check_target(pred, y)
        loss = F.mse_loss(pred, y)
        self._metric(phase).update(loss.detach(), weight=len(x))
        getattr(self, f"{phase}_rmse").update(pred.detach(), y)
        return loss

    def _log_epoch(self, phase: str) -> dict[str, Tensor]:
        values = log_phase(self, phase, phase_metrics(self, phase, ("loss", "rmse")))
        if phase == "val":
            log_best(self, "val/rmse_best", values["val/rmse"], self.val_rmse_best)
        return values

    def on_train_start(self) -> None:
        # The sanity check must not count towards the best validation RMSE.
        self.val_rmse_best.reset()

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        self.check_input(batch[0])
        return self(batch[0])

    def configure_optimizers(self) -> Any:
        return optimizer_config(self.parameters(), self.optimizer, self.lr_scheduler)
