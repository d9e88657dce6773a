"""Every lesson config in mixed precision: a few batches of fit with configs/trainer/bf16.yaml on this
CPU, and, on a machine with a GPU, in float32 and bf16-mixed on CUDA; autocast really on, and a finite
training loss.

The configs and their small data come from tests/lesson_data.py, so a new config is covered here
without a change. 16-mixed needs CUDA (tests/experiments/test_presets.py runs it when a GPU is present).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from experiments.cli import ExperimentCLI
from tests.conftest import QUIET, REPO, config
from tests.lesson_data import lesson_args, lesson_configs

LESSONS = lesson_configs()


def fit_recording_autocast(
    lesson: str, root: Path, device: str, *flags: str
) -> tuple[ExperimentCLI, list[tuple[torch.device, torch.dtype | None]]]:
    """A two-batch fit of ``lesson`` on ``device``; per training step, where the batch was and the
    autocast type then in force on that device (None when off)."""
    run = ExperimentCLI(
        args=[
            "--config", config(lesson),
            *lesson_args(lesson, root),
            "--trainer.fast_dev_run=2",
            f"--trainer.accelerator={device}",
            *flags,
            *QUIET,
        ],
        run=False,
    )  # fmt: skip
    seen: list[tuple[torch.device, torch.dtype | None]] = []
    training_step = run.model.training_step

    def recording_step(*args, **kwargs):
        kind = run.model.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
        seen.append((run.model.device, dtype))
        return training_step(*args, **kwargs)

    run.model.training_step = recording_step
    run.trainer.fit(run.model, datamodule=run.datamodule)
    return run, seen


def assert_finite_training_loss(run: ExperimentCLI) -> None:
    # The lessons' name (train/loss, also train/loss_step and _epoch) or Lightning documentation's
    # (train_loss): a plain lesson is checked as well.
    losses = {
        k: float(v)
        for k, v in run.trainer.callback_metrics.items()
        if re.match(r"train[/_]loss", k) and v.numel() == 1
    }
    assert losses, f"no train/loss or train_loss logged: {sorted(run.trainer.callback_metrics)}"
    assert all(math.isfinite(v) for v in losses.values()), losses


@pytest.mark.parametrize("lesson", LESSONS)
def test_bf16_mixed_fast_dev_run_has_a_finite_loss(
    lesson: str, in_tmp: Path, cifar_integrity_bypassed: None
) -> None:
    bf16 = ["--config", str(REPO / "configs" / "trainer" / "bf16.yaml")]
    run, seen = fit_recording_autocast(lesson, in_tmp, "cpu", *bf16)
    assert seen and {dtype for _, dtype in seen} == {torch.bfloat16}, f"training steps ran with {seen}"
    assert_finite_training_loss(run)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_trains_on_a_gpu(
    lesson: str, precision: str, in_tmp: Path, cifar_integrity_bypassed: None
):
    run, seen = fit_recording_autocast(
        lesson, in_tmp, "gpu", "--trainer.devices=1", f"--trainer.precision={precision}"
    )
    expected = torch.bfloat16 if precision == "bf16-mixed" else None
    assert seen and all(device.type == "cuda" for device, _ in seen), f"training steps ran on {seen}"
    assert {dtype for _, dtype in seen} == {expected}, f"training steps ran with {seen}"
    assert_finite_training_loss(run)
