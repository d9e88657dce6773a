"""configs/scratch_network.yaml end to end: the tutorial's 2-3-1 network trained by its hand-written
backward pass, and its prediction for the tutorial's student."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tests.conftest import config


@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_fast_dev_run(cli, subcommand):
    lesson = "scratch_network"
    run = cli(subcommand, "--config", config(lesson), "--trainer.fast_dev_run=true")
    assert run.trainer.state.finished


def test_scratch_network_predicts_the_tutorials_student(cli, in_tmp):
    short = ["--trainer.max_epochs=5", "--trainer.check_val_every_n_epoch=5"]
    cli("fit", "--config", config("scratch_network"), *short)
    run = in_tmp / "lightning_logs" / "scratch_network" / "version_0"
    with Image.open(run / "figures" / "loss_curve.png") as figure:  # drawn when training ends
        assert figure.size == (600, 400)
    cli("predict", "--config", config("scratch_network"), "--ckpt_path=last")
    predictions = torch.load(
        in_tmp / "lightning_logs" / "scratch_network" / "version_0" / "predict" / "predictions.pt"
    )
    assert predictions.shape == (1, 1) and 0 < predictions.item() < 1
