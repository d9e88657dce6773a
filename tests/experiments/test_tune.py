"""``python -m experiments tune`` (experiments/tune.py): Lightning's lr_find and scale_batch_size on a
lesson's config, written as ``tuned.yaml`` that ``fit`` trains to the lesson's bar; the curve in
TensorBoard and as a PNG; one line for each lesson or setting it cannot tune, with nothing left behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.main import main
from experiments.tune import steepest_fall
from tests.conftest import QUIET, config

CPU = ["--trainer.accelerator=cpu"]
#: A short search: enough points for a suggestion on the tiny data, a few seconds on a CPU.
SHORT_SEARCH = ["--tune.num_training=30", "--tune.skip_begin=5"]
CHANGE = re.compile(r"^(\S+): (\S+) -> (\S+) \((.*)\)$", re.MULTILINE)


class FixedStepSGD(torch.optim.SGD):
    """An optimizer whose learning rate is not an argument: nothing for lr_find to set."""

    def __init__(self, params, momentum: float = 0.0) -> None:
        super().__init__(params, lr=0.01, momentum=momentum)


def tune(*args: str) -> None:
    main(["tune", *args, *CPU, *QUIET])


def changes(out: str) -> dict[str, tuple[str, str, str]]:
    """The command's one line per changed value: flag -> (old, new, why)."""
    return {flag: (old, new, why) for flag, old, new, why in CHANGE.findall(out)}


def tuned_file(out: str) -> Path:
    return Path(re.search(r"^tuned config: (.+)$", out, re.MULTILINE).group(1))


def test_the_suggestion_is_the_steepest_fall_on_the_curves_axis():
    # A loss that falls fastest at lr 1e-2 on a log axis, from 1e-6 to 1, as exponential mode samples it,
    # after a small fall near 1e-5.
    lrs = torch.logspace(-6, 0, 61, dtype=torch.float64)
    losses = 2 - torch.tanh(2 * (lrs.log10() + 2)) - 0.05 * torch.tanh(2 * (lrs.log10() + 5))
    results = {"lr": lrs.tolist(), "loss": losses.tolist()}
    lr, index = steepest_fall(results, "exponential", skip_begin=1, skip_end=1)
    assert lr == pytest.approx(1e-2) and index == 40
    # Against lr itself (Lightning 2.6's slope), the small fall among the tiny rates wins.
    linear, _ = steepest_fall(results, "linear", skip_begin=1, skip_end=1)
    assert linear < 1e-4
    # Non-finite losses are left out; too few points left is None.
    results["loss"][40] = float("nan")
    assert steepest_fall(results, "exponential", 1, 1)[1] in (39, 41)
    assert steepest_fall({"lr": [1e-3, 1e-2], "loss": [1.0, 0.5]}, "exponential", 1, 1) is None


def test_logistic_regression_tuned_then_fit_reaches_the_bar(cli, mnist_dir, in_tmp, capsys):
    lesson = ["--config", config("logistic_regression"), f"--data.data_dir={mnist_dir}",
              "--data.val_split=16", "--data.batch_size=16"]  # fmt: skip
    tune(*lesson, *SHORT_SEARCH)
    out = capsys.readouterr().out
    old, new, why = changes(out)["model.optimizer.init_args.lr"]
    assert old == "0.01" and why.startswith("lr_find: steepest fall of the loss over 30 steps")
    path = tuned_file(out)
    assert path == Path("lightning_logs/logistic_regression/tune/version_0/tuned.yaml")
    tuned = yaml.safe_load(path.read_text())
    lr = tuned["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert lr == float(new) and 1e-8 <= lr <= 1
    # The rest is the lesson's config: its experiment's name (not "tuned"), its epochs, its momentum.
    assert tuned["trainer"]["logger"]["init_args"]["name"] == "logistic_regression"
    assert tuned["trainer"]["max_epochs"] == 10 and tuned["checkpoint"]["enabled"] is True
    assert tuned["model"]["init_args"]["optimizer"]["init_args"]["momentum"] == 0.9
    assert "tune" not in tuned
    # The finder's curve: a PNG in the tune run and an image in its TensorBoard events.
    run = path.parent
    with Image.open(run / "figures" / "lr_find.png") as figure:
        assert figure.size == (640, 480)
    assert "tune/lr_find" in EventAccumulator(str(run)).Reload().Tags()["images"]
    assert not list(run.rglob("*.ckpt")) and not list(Path("lightning_logs").rglob(".lr_find*"))

    fit = cli("fit", "--config", str(path), *CPU)
    metrics = fit.trainer.callback_metrics
    assert metrics["val/acc"] >= 0.9 and metrics["train/loss"] < 0.5  # the lesson test's bar
    trained = in_tmp / "lightning_logs" / "logistic_regression" / "version_0"
    assert fit.model.configure_optimizers()["optimizer"].param_groups[0]["initial_lr"] == lr
    # Round trip: the fit's saved config is tuned.yaml (plus fit's own arguments).
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved.pop("ckpt_path") is None and saved.pop("weights_only") is None
    assert saved == tuned
    assert (
        cli("test", "--config", str(path), *CPU, "--ckpt_path=last").trainer.callback_metrics["test/acc"]
        >= 0.9
    )


def test_boston_batch_size_and_lr_tuned_then_fit(cli, in_tmp, capsys):
    tune(
        "--config",
        config("boston_housing"),
        "--tune.scale_batch_size=true",
        "--tune.init_val=64",
        *SHORT_SEARCH,
    )
    out = capsys.readouterr().out
    found = changes(out)
    old, new, why = found["data.batch_size"]
    # A CPU never runs out of memory: the search stops at the training set's 354 rows, and says so.
    assert (old, new) == ("32", "354")
    assert "on a CPU nothing runs out of memory, so it grows to max_val 354 (the training set's size)" in why
    assert found["model.optimizer.init_args.lr"][0] == "0.003"
    tuned = yaml.safe_load(tuned_file(out).read_text())
    assert tuned["data"]["init_args"]["batch_size"] == 354
    # The tune run is finished in `runs`, not "died": the tuners end their fits without on_fit_end.
    assert json.loads((tuned_file(out).parent / "run.json").read_text())["status"] == "finished"
    assert tuned["model"]["init_args"]["optimizer"]["init_args"]["lr"] == float(
        found["model.optimizer.init_args.lr"][1]
    )
    # The lesson test's bar for a short fit, on the tuned config.
    cli("fit", "--config", str(tuned_file(out)), *CPU, "--trainer.max_epochs=2")
    test = cli("test", "--config", str(tuned_file(out)), *CPU, "--ckpt_path=last")
    assert 0 < test.trainer.callback_metrics["test/rmse"].item() < 30
    assert test.datamodule.batch_size == 354


def test_a_tuner_that_does_not_apply_is_a_note_and_the_other_runs(in_tmp, capsys):
    # first_network's 10 samples are one batch: the batch size cannot grow; its SGD lr is tuned.
    tune("--config", config("first_network"), "--tune.scale_batch_size=true", "--tune.num_training=15",
         "--tune.skip_begin=2")  # fmt: skip
    out = capsys.readouterr().out
    assert (
        "note: scale_batch_size does not apply: the training set's 10 samples already fit in one batch of 10"
        in out
    )
    assert list(changes(out)) == ["model.optimizer.init_args.lr"]
    assert yaml.safe_load(tuned_file(out).read_text())["data"]["init_args"]["batch_size"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Manual optimisation, and the tutorial's three students in one batch.
        (
            ["--config", config("scratch_network"), "--tune.scale_batch_size=true"],
            "tune: nothing can be tuned: lr_find does not apply: ScratchNetwork updates its weights itself "
            "(automatic_optimization is False)",
        ),
        # A datamodule whose batch size is no argument (the sine wave's points are one sequence).
        (
            ["--config", config("sine_rnn"), "--tune.lr_find=false", "--tune.scale_batch_size=true"],
            "scale_batch_size does not apply: SineWaveDataModule has no batch_size that Lightning's scaler "
            "can change and the config can hold",
        ),
        (
            ["--config", config("first_network"), "--tune.lr_find=false", "--tune.scale_batch_size=true"],
            "the training set's 10 samples already fit in one batch of 10: the batch size cannot grow",
        ),
        (
            ["--config", config("first_network"), f"--model.optimizer={__name__}.FixedStepSGD"],
            f"lr_find does not apply: the optimizer, {__name__}.FixedStepSGD, takes no learning rate (lr)",
        ),
        (["--config", config("first_network"), "--tune.lr_find=false"], "tune: nothing to run"),
        # The finder ran (its progress bar is not on stderr), but 5 points minus the 10 skipped are none.
        (
            ["--config", config("first_network"), "--tune.num_training=5"],
            "lr_find: its 5 points leave too few",
        ),
        (
            ["--config", config("first_network"), "--tune.min_lr=1", "--tune.max_lr=0.1"],
            "0 < min_lr < max_lr",
        ),
        (["--config", config("first_network"), "--trainer.logger=false"], "give --trainer.default_root_dir"),
        (["--config", config("first_network"), "--trainer.fast_dev_run=true"], "Lightning's tuners skip"),
        (
            ["--config", config("first_network"), "--trainer.strategy=ddp", "--trainer.devices=2"],
            "tune runs on one process, and this trainer has 2",
        ),
        (
            ["--config", config("first_network"), "--tune.num_trainin=5"],
            "tune.num_trainin: tune has no setting 'num_trainin'; did you mean num_training?",
        ),
    ],
)
def test_what_cannot_be_tuned_is_one_line_and_leaves_nothing(in_tmp, capsys, monkeypatch, args, message):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        tune(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (in_tmp / "lightning_logs").exists()


def test_a_value_the_tuner_confirms_is_said_unchanged():
    from experiments.tune import Change

    same = Change(("model",), "model.optimizer.init_args.lr", 0.01, 0.01, "lr_find: ...").line()
    assert same == "model.optimizer.init_args.lr: 0.01, unchanged: the config's value already (lr_find: ...)"
    moved = Change(("model",), "data.batch_size", 32, 354, "scale_batch_size").line()
    assert moved == "data.batch_size: 32 -> 354 (scale_batch_size)"
