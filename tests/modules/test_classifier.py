"""The image classifiers' shared steps (modules/classifier.py): targets that are not one class index per
sample stop the run with one line naming what was found and the fix, checked at each phase's first batch
and never inside a training step."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor
from torch.overrides import TorchFunctionMode

from core.errors import DataConfigError, InputShapeError
from datamodules.tensors import InMemoryDataModule
from experiments.main import main
from modules import LogisticRegression
from modules.classifier import ImageClassifier
from tests.conftest import QUIET, config

#: Tensor methods that make the host wait for the device (as tests/experiments/test_host_syncs.py).
READS = {"__bool__", "item", "tolist", "cpu", "numpy", "__int__", "__float__", "__index__", "nonzero"}


class HostReads(TorchFunctionMode):
    """Records the tensor methods of ``READS`` called while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        if getattr(func, "__name__", "") in READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


class TinyImages(InMemoryDataModule):
    """Eight 1x28x28 images per split whose labels come as ``labels``: ``index`` (int64, shape (N,), the
    right form), ``column`` (int64, (N, 1)), ``float`` (float32, (N,)) or ``onehot`` (float32, (N, 10)),
    as a hand-written datamodule might give them."""

    def __init__(self, labels: str = "index", batch_size: int = 4, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        self.labels = labels

    def make_split(self, split: str) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(len(split))
        images = torch.rand(8, 1, 28, 28, generator=generator)
        index = torch.arange(8) % 10
        form = {
            "index": index,
            "column": index[:, None],
            "float": index.float(),
            "onehot": torch.nn.functional.one_hot(index, 10).float(),
        }
        return images, form[self.labels]


def quiet_trainer(**kwargs: object) -> Trainer:
    return Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("labels", "found", "fix"),
    [
        (torch.zeros(4, 1, dtype=torch.long), "int64 targets of shape (4, 1)", "labels[:, 0]"),
        (torch.zeros(4), "float32 targets of shape (4,)", ".long()"),
        (torch.eye(4, 10), "float32 targets of shape (4, 10)", "labels.argmax(1)"),
        (torch.zeros(4, dtype=torch.bool), "bool targets of shape (4,)", ".long()"),
        (torch.tensor(3), "int64 targets of shape ()", "one label per sample"),
    ],
)
def test_targets_of_the_wrong_shape_or_type_are_named_with_the_fix(
    labels: Tensor, found: str, fix: str
) -> None:
    with pytest.raises(InputShapeError) as error:
        LogisticRegression().check_targets(labels)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("LogisticRegression takes targets of shape (N,), one integer class index")
    assert found in message and fix in message


def test_labels_outside_the_classes_name_the_setting() -> None:
    model = LogisticRegression(num_classes=5)
    model.check_targets(torch.tensor([0, 4, 2]))  # in range: nothing raised
    with pytest.raises(DataConfigError, match=r"labels up to 9 .* set --model.num_classes to 10"):
        model.check_targets(torch.tensor([0, 9, 3]))
    with pytest.raises(DataConfigError, match=r"labels from -1 to 3: number the classes from 0"):
        model.check_targets(torch.tensor([-1, 3]))
    model.check_targets(torch.zeros(0, dtype=torch.long))  # an empty batch has nothing to check


def test_the_check_runs_once_per_phase_and_never_inside_a_training_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = LogisticRegression()
    checked: list[int] = []
    check = model.check_targets
    monkeypatch.setattr(model, "check_targets", lambda labels: (checked.append(len(labels)), check(labels)))
    spy = HostReads()
    step = model.training_step

    def watched_step(*args: Any) -> Tensor:
        with spy:
            return step(*args)

    model.training_step = watched_step
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(model, TinyImages())
    trainer.test(model, TinyImages(), verbose=False)
    # Two epochs of two training batches and of two validation batches, then two test batches: one
    # check each for train, val (at the sanity check) and test.
    assert trainer.global_step == 4
    assert checked == [4, 4, 4]
    assert model._checked_targets == {"train", "val", "test"}
    assert spy.calls == []


@pytest.mark.parametrize("labels", ["column", "float", "onehot"])
def test_a_fit_with_bad_targets_stops_before_its_first_step(labels: str) -> None:
    model = LogisticRegression()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    with pytest.raises(InputShapeError):
        trainer.fit(model, TinyImages(labels))
    assert trainer.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_every_image_classifier_checks_its_targets() -> None:
    # The check lives in the base class: each image lesson has it without writing anything.
    import modules

    classifiers = [
        c for c in vars(modules).values() if isinstance(c, type) and issubclass(c, ImageClassifier)
    ]
    assert {c.__name__ for c in classifiers} >= {"LogisticRegression", "MNISTConvNet", "SimpleCNN"}
    for cls in classifiers:
        with pytest.raises(InputShapeError, match=rf"^{cls.__name__} takes targets of shape \(N,\)"):
            cls().check_targets(torch.zeros(2, 1, dtype=torch.long))


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """``python -m experiments <args>`` in this process; returns stderr after the exit with status 2."""
    with pytest.raises(SystemExit) as stop:
        main([*args, *QUIET])
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    return err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--data", f"{__name__}.TinyImages", "--data.labels=column", "--data.batch_size=4"],
            "got int64 targets of shape (4, 1) from the data: in the datamodule, take the label column",
        ),
        (
            ["--data", f"{__name__}.TinyImages", "--data.labels=float", "--data.batch_size=4"],
            "got float32 targets of shape (4,)",
        ),
        (["--model.num_classes", "5"], "got labels up to 9 from the data: set --model.num_classes to 10"),
    ],
    ids=["column", "float", "num_classes"],
)
def test_the_command_shows_one_error_line_and_keeps_no_run(
    args: list[str],
    expected: str,
    in_tmp: Path,
    mnist_dir: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["experiments"])  # as a shell runs it: no pytest arguments
    lesson = ["--config", config("logistic_regression")]
    if args[0] != "--data":  # the lesson's own MNIST datamodule, on a tiny copy
        lesson += [f"--data.data_dir={mnist_dir}", "--data.val_split=16"]
    err = run_main(["fit", *lesson, "--trainer.max_epochs=1", *args], capsys)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: LogisticRegression "), err
    assert expected in lines[0], lines[0]
    # It failed before a step was trained, so the run folder it made is gone.
    assert not list((in_tmp / "lightning_logs").glob("*/version_*")), list(in_tmp.rglob("*"))
