"""configs/logistic_regression.yaml end to end, on a tiny MNIST in the IDX format: it learns, its
checkpoint tests and predicts, and the model is softmax regression."""

from __future__ import annotations

import pytest
import torch

from modules import LogisticRegression
from tests.conftest import config

SMALL = ["--data.val_split=16", "--data.batch_size=16"]


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_fast_dev_run(cli, mnist_dir, subcommand):
    run = cli(subcommand, "--config", config("logistic_regression"), f"--data.data_dir={mnist_dir}", *SMALL,
              "--trainer.fast_dev_run=true")  # fmt: skip
    assert run.trainer.state.finished


def test_it_learns_then_tests_and_predicts_from_its_checkpoint(cli, mnist_dir, in_tmp):
    args = ["--config", config("logistic_regression"), f"--data.data_dir={mnist_dir}", *SMALL]
    fit = cli("fit", *args, "--trainer.max_epochs=10", "--model.lr_scheduler.T_max=10")
    metrics = fit.trainer.callback_metrics
    # The test images' class is a bright block's place: a linear model separates them.
    assert metrics["val/acc"] >= 0.9 and metrics["train/loss"] < 0.5
    runs = in_tmp / "lightning_logs" / "logistic_regression"
    assert (runs / "version_0" / "figures" / "confusion_matrix.png").is_file()
    test = cli("test", *args, "--ckpt_path=last").trainer.callback_metrics
    assert test["test/acc"] >= 0.9
    cli("predict", *args, "--ckpt_path=last")
    probabilities = torch.load(runs / "version_0" / "predict" / "predictions.pt")
    assert probabilities.shape == (32, 10)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(32))


def test_the_model_is_softmax_regression_starting_at_zero():
    model = LogisticRegression()
    assert sum(p.numel() for p in model.parameters()) == 784 * 10 + 10
    assert all(not p.any() for p in model.parameters())  # every run starts at the same point
    with torch.no_grad():
        model.net[1].weight.normal_()
        model.net[1].bias.normal_()
    images = torch.rand(5, 1, 28, 28)
    weight, bias = model.net[1].weight, model.net[1].bias
    torch.testing.assert_close(model(images), images.flatten(1) @ weight.T + bias)
    assert torch.equal(model.class_templates()[3], weight[3].view(1, 28, 28))
