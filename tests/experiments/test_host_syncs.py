"""No lesson waits for the device inside a training step.

On a GPU a step is queued by the CPU and run later; anything that reads a value back to the host
(``bool(t)``, ``t.item()``, ``t.tolist()``, ``t.cpu()``, ``t.nonzero()``) makes the CPU wait for every
queued kernel before it can queue the next step, and small models then run at the speed of their Python
(issue: bf16 was slower than fp32 on an H200, and an epoch 2.5x a plain loop's). Here, on the CPU, the
same calls are recorded by a ``TorchFunctionMode`` around each lesson's ``training_step`` and the
per-step hooks of the callbacks every run carries and the datamodule's batch-transfer hooks (where
images are augmented on the device), for a few steps of every shipped config that Lightning
optimises (a module that turns Lightning's ``automatic_optimization`` off updates by hand, in loops too
small for a GPU: skipped, saying so). A datamodule whose ``host_random_transfer`` says why its
batch-transfer hooks read host values on purpose (torchvision drawing per-sample transform parameters on
the CPU) has those hooks left unwatched; both facts come from the lesson's classes (tests/lesson_data.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from experiments.cli import ExperimentCLI
from experiments.faults import FiniteLossGuard
from tests.conftest import QUIET, config
from tests.lesson_data import lesson_args, lesson_configs, load_lesson

#: Tensor methods that wait for the device when the tensor lives on one.
READS = {"__bool__", "item", "tolist", "cpu", "numpy", "__int__", "__float__", "__index__", "nonzero"}
#: Per-step hooks of the callbacks every run carries.
HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward")


class HostReads(TorchFunctionMode):
    """Records the tensor methods of ``READS`` called while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def watched(function: Callable, spy: HostReads) -> Callable:
    def run(*args: Any, **kwargs: Any) -> Any:
        with spy:
            return function(*args, **kwargs)

    return run


@pytest.mark.parametrize("lesson", lesson_configs())
def test_a_training_step_never_reads_a_value_back(
    lesson: str, in_tmp: Path, cifar_integrity_bypassed
) -> None:
    args = ["--config", config(lesson), *lesson_args(lesson, in_tmp / "data"), *QUIET]
    cli = ExperimentCLI(args=[*args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3"], run=False)
    if not cli.model.automatic_optimization:
        pytest.skip(f"{type(cli.model).__name__} updates by hand (automatic_optimization is off)")
    spy = HostReads()
    cli.model.training_step = watched(cli.model.training_step, spy)
    # Device-side augmentation and normalisation run in the datamodule's batch-transfer hooks.
    transfer_hooks = ("on_before_batch_transfer", "on_after_batch_transfer")
    for hook in transfer_hooks if load_lesson(lesson).host_random_transfer is None else ():
        setattr(cli.datamodule, hook, watched(getattr(cli.datamodule, hook), spy))
    for callback in cli.trainer.callbacks:
        if isinstance(callback, FiniteLossGuard):
            continue  # on the CPU it reads the loss as a float, on purpose (see the next test)
        for hook in HOOKS:
            if hook in type(callback).__dict__ or any(
                hook in vars(base) for base in type(callback).__mro__[1:-2]
            ):
                setattr(callback, hook, watched(getattr(callback, hook), spy))
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step > 0
    assert spy.calls == [], f"{lesson}: {spy.calls}"


def test_the_nan_guard_keeps_its_flags_on_the_device() -> None:
    guard = FiniteLossGuard()
    spy = HostReads()
    guard._every = 50
    with spy:
        for value in (1.0, float("nan"), 2.0):
            guard._window.append((0, 0, 0))
            guard._flag_on_device(torch.tensor(value))
    assert spy.calls == []
    assert int(guard._first_bad) == 1 and torch.isnan(guard._bad_loss)


@pytest.mark.gpu
@pytest.mark.parametrize("lesson", ["mnist_convnet", "simple_cnn", "face_landmarks", "first_network"])
def test_on_a_gpu_a_training_step_never_synchronises(
    lesson: str, in_tmp: Path, cifar_integrity_bypassed
) -> None:
    # The GPU's own check: CUDA reports every synchronising call while the debug mode is "error".
    args = ["--config", config(lesson), *lesson_args(lesson, in_tmp / "data"), *QUIET]
    args += ["--trainer.accelerator=gpu", "--trainer.devices=1", "--nan_guard.every_n_steps=1000"]
    cli = ExperimentCLI(args=[*args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=3"], run=False)
    step = cli.model.training_step

    def strict(*step_args: Any, **kwargs: Any) -> Any:
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(*step_args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    cli.model.training_step = strict
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step > 0
