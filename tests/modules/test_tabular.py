"""TabularRegressor: linear or MLP by configuration, RMSE in the target's units, and it learns a table."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from core.errors import InputShapeError
from datamodules import CSVRegressionDataModule
from modules import TabularRegressor
from tests.tabular_data import write_linear_table


def test_no_hidden_size_is_linear_regression():
    module = TabularRegressor(in_features=13)
    assert [type(layer) for layer in module.net] == [nn.Linear]
    assert (module.net[0].in_features, module.net[0].out_features) == (13, 1)
    assert module(torch.randn(5, 13)).shape == (5, 1)


def test_mlp_layers_and_dropout_between_hidden_layers_only():
    module = TabularRegressor(in_features=4, hidden_sizes=[8, 6], dropout=0.2, out_features=2)
    kinds = [type(layer) for layer in module.net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    widths = [(m.in_features, m.out_features) for m in module.net if isinstance(m, nn.Linear)]
    assert widths == [(4, 8), (8, 6), (6, 2)]
    assert module.net[2].p == 0.2
    assert not any(isinstance(m, nn.Dropout) for m in TabularRegressor(4, [8], dropout=0.0).net)
    # Dropout acts in training only: evaluation is deterministic.
    module.eval()
    x = torch.randn(10, 4)
    assert torch.equal(module(x), module(x))


def test_rmse_is_over_the_epoch_in_target_units():
    module = TabularRegressor(in_features=2)
    with torch.no_grad():
        module.net[0].weight.zero_()
        module.net[0].bias.fill_(20.0)  # predicts 20 (in $1000s, say) for every row
    first = (torch.zeros(2, 2), torch.tensor([[20.0], [23.0]]))  # errors 0, 3
    second = (torch.zeros(1, 2), torch.tensor([[16.0]]))  # error 4
    module.validation_step(first, 0)
    module.validation_step(second, 1)
    # The root of the mean over all three rows, not a mean of per-batch roots.
    assert module.val_rmse.compute().item() == pytest.approx(math.sqrt((0 + 9 + 16) / 3))
    assert module.val_loss.compute().item() == pytest.approx((0 + 9 + 16) / 3)


def test_wrong_number_of_features_is_a_clear_error():
    module = TabularRegressor(in_features=13)
    message = r"rows of 13 features, got a batch of shape \(4, 12\): set --model.in_features"
    with pytest.raises(InputShapeError, match=message):
        module.validation_step((torch.randn(4, 12), torch.randn(4, 1)), 0)
    with pytest.raises(InputShapeError, match="rows of 13 features"):
        module.predict_step((torch.randn(13),), 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"hidden_sizes": [8, 0]}, "must be at least 1"),
        ({"in_features": 0}, "must be at least 1"),
    ],
)
def test_impossible_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TabularRegressor(**kwargs)


def test_optimizer_and_scheduler_are_injected():
    module = TabularRegressor(
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=3),
    )
    config = module.configure_optimizers()
    assert config["optimizer"].param_groups[0]["lr"] == 0.5
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert isinstance(TabularRegressor().configure_optimizers(), torch.optim.Adam)


@pytest.mark.parametrize("hidden_sizes", [[], [16]])
def test_learns_a_table_from_csv(tmp_path, hidden_sizes):
    path = write_linear_table(tmp_path / "houses.csv", n=60)
    data = CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"], batch_size=16)
    torch.manual_seed(0)
    module = TabularRegressor(
        in_features=3, hidden_sizes=hidden_sizes, optimizer=lambda p: torch.optim.SGD(p, lr=0.05)
    )
    trainer = Trainer(
        max_epochs=40,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=40,
    )
    data.setup("fit")
    x_val, y_val = data.splits["val"]
    with torch.no_grad():
        before = torch.sqrt(((module(x_val) - y_val) ** 2).mean()).item()
    trainer.fit(module, datamodule=data)
    after = trainer.callback_metrics["val/rmse"].item()
    # The target's standard deviation is about 6 and its noise 0.1: the fit must get within one unit.
    assert before > 5 and after < 1.0, (before, after)
    predictions = trainer.predict(module, datamodule=data)
    data.setup("test")
    y_test = data.splits["test"][1]
    assert torch.cat(predictions).shape == y_test.shape
    assert torch.sqrt(((torch.cat(predictions) - y_test) ** 2).mean()) < 1.0
