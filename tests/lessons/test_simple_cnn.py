"""configs/simple_cnn.yaml end to end: CIFAR-10 pickles and a class-per-folder JPEG copy with no code
change, and the one-line error for images of the wrong size."""

from __future__ import annotations

import pytest
import torch

from experiments.main import main
from tests.conftest import QUIET, config

SMALL = ["--data.val_split=16", "--data.batch_size=16"]


@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_simple_cnn_fast_dev_run_on_cifar_pickles(cli, cifar_dir, subcommand):
    run = cli(
        subcommand,
        "--config",
        config("simple_cnn"),
        f"--data.data_dir={cifar_dir}",
        *SMALL,
        "--trainer.fast_dev_run=true",
    )
    assert run.trainer.state.finished


def test_simple_cnn_on_a_jpeg_folder_without_code_change(cli, image_folder_dir, in_tmp):
    args = [
        "--config",
        config("simple_cnn"),
        "--data=ImageFolderDataModule",
        f"--data.data_dir={image_folder_dir}",
        "--data.val_split=0.25",
        "--data.batch_size=8",
        "--data.random_crop_padding=4",
        "--data.horizontal_flip=true",
        "--model.num_classes=3",
        "--data.image_size=32",
    ]
    cli("fit", *args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    run = in_tmp / "lightning_logs" / "simple_cnn" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    test = cli("test", *args, "--ckpt_path=last")
    assert 0 <= test.trainer.callback_metrics["test/acc"] <= 1
    cli("predict", *args, "--ckpt_path=last")
    probs = torch.load(in_tmp / "lightning_logs" / "simple_cnn" / "version_0" / "predict" / "predictions.pt")
    assert probs.shape == (12, 3) and torch.allclose(probs.sum(dim=1), torch.ones(12))


def test_wrong_image_size_is_one_line(in_tmp, image_folder_dir, capsys, monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                config("simple_cnn"),
                "--data=ImageFolderDataModule",
                f"--data.data_dir={image_folder_dir}",
                "--data.val_split=0.25",
                "--model.num_classes=3",
                "--trainer.fast_dev_run=true",
                *QUIET,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: SimpleCNN takes 3x32x32 images, got 3x16x16: resize the data (ImageFolderDataModule: "
        "--data.image_size 32) or change the model's input size"
    )
