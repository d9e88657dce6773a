"""Parity with the seed: each lesson's plain PyTorch loop (tests/seed_loops.py, ported from the tutorial
with its bugs fixed) and the Lightning experiment from the same seed and data give the same per-epoch
losses, to 1e-5.

It shows that the framework changes the plumbing (loops, logging, checkpointing) and nothing else.
The Lightning side runs the lesson's own config through the CLI, with logging and checkpointing on.
"""

from __future__ import annotations

import pytest
import torch

from experiments.cli import ExperimentCLI
from tests import seed_loops
from tests.conftest import QUIET, EpochHistory, config


def lightning_run(lesson: str) -> tuple[ExperimentCLI, dict, list[float]]:
    """Build the lesson from its config, keep the initial weights, fit, return the per-epoch losses."""
    cli = ExperimentCLI(args=["--config", config(lesson), *QUIET], run=False)
    initial = {k: v.clone() for k, v in cli.model.state_dict().items()}
    history = EpochHistory("train/loss")
    cli.trainer.callbacks.append(history)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, initial, history.values


def assert_same_initial_weights(seed_state: dict, lightning_state: dict, prefix: str) -> None:
    for key, value in seed_state.items():
        assert torch.equal(value, lightning_state[prefix + key]), key


def test_first_network_matches_the_seeds_loop(in_tmp):
    cli, initial, lightning_losses = lightning_run("first_network")
    _, seed_initial, seed_losses = seed_loops.first_network(*cli.datamodule.splits["train"])
    assert_same_initial_weights(seed_initial, initial, "net.")
    assert len(lightning_losses) == 50
    assert lightning_losses == pytest.approx(seed_losses, abs=1e-5)
    # The seed's picture: a loss near 0.25 that falls slowly.
    assert 0.2 < seed_losses[0] < 0.3
    assert 0 < seed_losses[0] - seed_losses[-1] < 0.05


def test_linear_regression_matches_the_seeds_loop(in_tmp):
    cli, initial, lightning_losses = lightning_run("linear_regression")
    dm = cli.datamodule
    model, seed_initial, seed_losses = seed_loops.linear_regression(
        *dm.splits["train"], batch_size=dm.batch_size, shuffle_seed=dm.seed
    )
    assert_same_initial_weights(
        {k.removeprefix("linear."): v for k, v in seed_initial.items()}, initial, "net."
    )
    assert len(lightning_losses) == 100
    assert lightning_losses == pytest.approx(seed_losses, abs=1e-5)
    w, b = model.linear.weight.item(), model.linear.bias.item()
    assert cli.model.slope_intercept() == pytest.approx((w, b), abs=1e-5)
    # The lesson's bar.
    assert w == pytest.approx(2.0, abs=0.1) and b == pytest.approx(3.0, abs=0.1)


def test_sine_rnn_matches_the_seeds_loop(in_tmp):
    cli, initial, lightning_losses = lightning_run("sine_rnn")
    x, y = cli.datamodule.splits["train"]
    (w1, w2), (w1_0, w2_0), seed_losses = seed_loops.sine_rnn(x, y)
    assert torch.equal(w1_0, initial["w1"]) and torch.equal(w2_0, initial["w2"])
    assert len(lightning_losses) == 300
    assert lightning_losses == pytest.approx(seed_losses, abs=1e-5)
    assert torch.allclose(cli.model.w1, w1, atol=1e-5) and torch.allclose(cli.model.w2, w2, atol=1e-5)
    # The lesson's bar: predictions over the sequence within MSE 0.01.
    with torch.no_grad():
        assert (cli.model(x) - y).pow(2).mean().item() < 0.01
