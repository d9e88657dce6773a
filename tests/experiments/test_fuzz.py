"""The command-line fuzzer (tests/fuzz_cli.py) on a seeded sample: wrong values for the arguments of every
shipped config, each run through ``experiments.main.main`` with small data and ``fast_dev_run``, must end
with exit 0 (a legal value that trains) or exit 2 with one ``error:`` line, no traceback, no warning, and
``lightning_logs/`` unchanged. ``python scripts/fuzz_cli.py`` runs every case.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from experiments.main import main
from tests.conftest import QUIET, config
from tests.fuzz_cli import VALUES, Case, Result, Workspace, cases, config_arguments, sample, tree
from tests.lesson_data import bypass_cifar_integrity, lesson_configs

#: The sample the suite runs: about a minute on two cores.
SAMPLE_SIZE = 40
SEED = 20261205


@pytest.fixture(scope="module")
def every_case() -> list[Case]:
    return cases()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A folder holding a finished run, where the cases run; test-made CIFAR files are accepted."""
    patch = pytest.MonkeyPatch()
    bypass_cifar_integrity(patch)
    yield Workspace(tmp_path_factory.mktemp("fuzz"))
    patch.undo()


def test_every_config_and_argument_kind_is_fuzzed(every_case: list[Case]) -> None:
    assert len(every_case) >= 1000
    assert {case.config for case in every_case} == set(lesson_configs())
    keys = {case.key for case in every_case if case.config == "mnist_convnet" and not case.control}
    # Model, data, the nested optimizer, the trainer keys the config sets, and each of the command's groups.
    assert {"model.num_classes", "model.optimizer", "model.optimizer.lr", "data.data_dir"} <= keys
    assert {"data.val_split", "trainer.max_epochs", "trainer.callbacks", "checkpoint.monitor"} <= keys
    assert {"last_checkpoint.min_interval", "compile.mode", "figures.max_share", "nan_guard.enabled"} <= keys
    assert "trainer.fast_dev_run" not in keys  # every case sets it
    # One control per config: the config as shipped, which must train.
    assert Counter(case.config for case in every_case if case.control) == dict.fromkeys(lesson_configs(), 1)
    kinds = {argument.kind for name in lesson_configs() for argument in config_arguments(name)}
    assert {"int", "float", "bool", "path", "list", "class"} <= kinds <= set(VALUES)
    lr = [case for case in every_case if case.config == "boston_housing" and case.key == "model.optimizer.lr"]
    assert {case.label for case in lr} >= {"zero", "negative", "nan", "inf", "huge", "text", "empty"}
    assert all(case.out_of_domain == (case.label in ("nan", "inf", "minus_inf")) for case in lr)


def test_the_sample_is_seeded_and_spread_over_the_configs(every_case: list[Case]) -> None:
    drawn = sample(every_case, SAMPLE_SIZE, SEED)
    assert drawn == sample(every_case, SAMPLE_SIZE, SEED)
    assert drawn != sample(every_case, SAMPLE_SIZE, SEED + 1)
    per_config = Counter(case.config for case in drawn)
    assert (
        set(per_config) == set(lesson_configs()) and max(per_config.values()) - min(per_config.values()) <= 1
    )


def judged(case: Case, code: int | None, err: str = "", **kwargs: object) -> str | None:
    return Result(case, [], code, "", err, 0.0, **kwargs).problem  # type: ignore[arg-type]


def test_the_judge_refuses_what_a_user_should_not_see() -> None:
    control = Case("linear_regression", "trainer.fast_dev_run", "control", "true", control=True)
    assert "as shipped did not train" in judged(control, 2, "error: --model.x: null\n")
    assert judged(control, 0) is None
    plain = Case("linear_regression", "model.lr", "text", "abc")
    nan = Case("linear_regression", "model.lr", "nan", "nan", out_of_domain=True)
    assert judged(plain, 2, "error: --model.lr: expected a number, got 'abc'\n") is None
    assert judged(plain, 0) is None
    assert "outside the argument's domain" in judged(nan, 0)
    assert "2 lines" in judged(plain, 2, "error: one\nerror: two\n")
    assert "traceback" in judged(plain, 2, "Traceback (most recent call last):\nerror: x\n")
    assert judged(plain, 1, "ValueError: x").startswith("exit 1")
    assert "escaped" in judged(plain, None, escaped="RuntimeError: x")
    assert "warning" in judged(plain, 2, "error: x\n", warnings=["UserWarning: y"])
    assert "lightning_logs" in judged(plain, 2, "error: x\n", logs_changed=["a/b"])
    assert "earlier run" in judged(plain, 0, logs_changed=["a/b"])


def test_a_seeded_sample_ends_in_exit_0_or_one_error_line(
    every_case: list[Case], workspace: Workspace
) -> None:
    results = [workspace.run(case) for case in sample(every_case, SAMPLE_SIZE, SEED)]
    failures = [f"{r.case.id}\n  {' '.join(r.args)}\n  {r.problem}" for r in results if r.problem]
    assert not failures, f"{len(failures)} of {len(results)} cases failed:\n" + "\n".join(failures)
    assert {r.code for r in results} <= {0, 2}
    assert tree(workspace.logs) == workspace.before  # the finished run is still there, unchanged


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # A nested class's argument: the flag of the argument, not "unknown class" of its value.
        (["--model.optimizer.lr=abc"], "error: --model.optimizer.lr: expected a number, got 'abc'"),
        (["--model.init_args.optimizer.init_args.lr=abc"], "error: --model.optimizer.lr: expected a number"),
        (["--trainer.max_epochs=abc"], "error: --trainer.max_epochs: expected a whole number or null"),
        (["--model=Nope"], 'error: --model: unknown class "Nope"'),
    ],
)
def test_a_wrong_value_is_one_line_naming_its_flag(
    args: list[str], line: str, in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["experiments"])
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config("boston_housing"), *args, *QUIET])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith(line) and err.count("\n") == 1, err
    assert not os.path.exists(in_tmp / "lightning_logs")


def test_a_wrong_value_in_a_config_file_is_named_by_its_file_and_line(
    in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["experiments"])
    extra = in_tmp / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    optimizer:\n      init_args:\n        lr: fast\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", config("boston_housing"), "--config", str(extra), *QUIET])
    err = capsys.readouterr().err.strip()
    where = f"--config {extra}, line 5: model.init_args.optimizer.init_args.lr"
    assert err == f"error: {where}: expected a number, got 'fast'"


def test_a_monitor_the_lesson_does_not_log_names_the_flag_and_what_is_logged() -> None:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from experiments.messages import one_line

    # What Lightning raises when a plain Lightning lesson logs val_loss and the default monitor is val/loss.
    error = MisconfigurationException(
        "`ModelCheckpoint(monitor='val/loss')` could not find the monitored key in the returned metrics: "
        "['train/lr', 'train_loss', 'val_loss', 'epoch', 'step']. HINT: Did you call `log('val/loss', value)`"
    )
    assert one_line(error) == (
        "--checkpoint.monitor val/loss is not a metric the lesson logs (train/lr, train_loss, val_loss): set "
        "--checkpoint.monitor to one of them (and --checkpoint.mode min or max)"
    )
