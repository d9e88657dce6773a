"""configs/mnist_convnet.yaml end to end, on a tiny MNIST in the IDX format: every subcommand with
fast_dev_run, a short fit whose checkpoint test and predict load, and the offline errors."""

from __future__ import annotations

import pytest
import torch

from experiments.main import main
from tests.conftest import QUIET, config

SMALL = ["--data.val_split=16", "--data.batch_size=16"]


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_mnist_convnet_fast_dev_run(cli, mnist_dir, subcommand):
    run = cli(
        subcommand,
        "--config",
        config("mnist_convnet"),
        f"--data.data_dir={mnist_dir}",
        *SMALL,
        "--trainer.fast_dev_run=true",
    )
    assert run.trainer.state.finished


def test_mnist_fit_then_test_and_predict_from_the_checkpoint(cli, mnist_dir, in_tmp):
    args = ["--config", config("mnist_convnet"), f"--data.data_dir={mnist_dir}", *SMALL]
    fit = cli("fit", *args, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2")
    best = fit.trainer.checkpoint_callback.best_model_path
    assert best and fit.trainer.checkpoint_callback.monitor == "val/acc"
    test = cli("test", *args, "--ckpt_path=best")
    assert str(test.trainer.ckpt_path).endswith(best.split("/")[-1])
    cli("predict", *args, "--ckpt_path=last")
    probs = torch.load(in_tmp / "lightning_logs/mnist_convnet/version_0/predict/predictions.pt")
    assert probs.shape == (32, 10)


def test_validation_split_larger_than_the_data_is_one_line(in_tmp, mnist_dir, capsys, monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config("mnist_convnet"), f"--data.data_dir={mnist_dir}", *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: val_split=5000 leaves no training images out of 64: "
        "set --data.val_split to a smaller count or a fraction such as 0.1"
    )


def test_absent_dataset_is_one_line_naming_the_folder(in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config("mnist_convnet"), "--data.data_dir=absent", *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "MNIST not found in data_dir=absent" in err and "train-images-idx3-ubyte" in err
    assert "--data.download true" in err
    # Nothing was half-written for a run that could not start.
    assert not list((in_tmp / "lightning_logs").glob("*/*/checkpoints/*.ckpt"))
