"""Parity with the tutorial: the Lightning side of a lesson's comparison with its plain PyTorch loop
(tests/tutorial_loops.py): the lesson's own config through the CLI, logging and checkpointing on, from
the same seed and data, and the per-epoch losses it records."""

from __future__ import annotations

import torch

from experiments.cli import ExperimentCLI
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
