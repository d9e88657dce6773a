"""Where runs go and how they are found (experiments/runs.py), with real folders and event files: every
logger names runs by the experiment, ``--ckpt_path last|best`` looks only at the experiment's own runs,
evaluation and resumption write into the run that made the checkpoint, and ``--print_config`` output
runs the same experiment when given back."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.errors import ExperimentError
from tests.conftest import config, run_experiments

LESSON = ["--config", config("linear_regression")]
SHORT = ["--trainer.max_epochs=3"]


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(folder)).Reload()
    return [(s.step, s.value) for s in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_evaluation_writes_into_the_run_of_its_checkpoint_at_its_step(cli, in_tmp):
    cli("fit", *LESSON, *SHORT)
    runs = in_tmp / "lightning_logs" / "linear_regression"
    run = runs / "version_0"
    last_val_step = scalars(run, "val/loss")[-1][0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tested = cli("test", *LESSON, "--ckpt_path=last")
        cli("validate", *LESSON, "--ckpt_path=last")
        cli("predict", *LESSON, "--ckpt_path=last")
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    # No new run: test, validate and predict each write a sub-folder of the run they evaluate.
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    assert {"test", "validate", "predict"} <= {p.name for p in run.iterdir()}
    # The test loss sits at the step of the run's last validation, next to its curves.
    [(step, value)] = scalars(run / "test", "test/loss")
    # Nothing else: Lightning's epoch counter (0 in an evaluation) is left out of the run's curves.
    assert EventAccumulator(str(run / "test")).Reload().Tags()["scalars"] == ["test/loss"]
    assert step == last_val_step
    assert value == pytest.approx(float(tested.trainer.callback_metrics["test/loss"]))
    assert scalars(run / "validate", "val/loss")[0][0] == last_val_step
    assert (run / "predict" / "predictions.pt").is_file()


def test_a_runs_own_config_evaluates_into_the_runs_own_folders(cli, in_tmp):
    # The config.yaml a run saved (or a tune's tuned.yaml) is the experiment's own config, not another
    # config evaluating its checkpoints, as feature_extraction.yaml does mnist_convnet's.
    cli("fit", *LESSON, *SHORT)
    run = in_tmp / "lightning_logs" / "linear_regression" / "version_0"
    cli("test", "--config", str(run / "config.yaml"), "--ckpt_path=last")
    assert (run / "test").is_dir() and not (run / "test_config").exists()
    copied = in_tmp / "config.yaml"
    copied.write_text((run / "config.yaml").read_text())
    cli("test", "--config", str(copied), "--ckpt_path=last")
    assert (run / "test_config").is_dir()  # a config from elsewhere, named config, is another's


def test_a_checkpoint_from_elsewhere_still_evaluates_in_a_run_of_its_own(cli, in_tmp):
    cli("fit", *LESSON, *SHORT)
    outside = in_tmp / "elsewhere" / "model.ckpt"
    outside.parent.mkdir()
    outside.write_bytes(
        (in_tmp / "lightning_logs/linear_regression/version_0/checkpoints/last.ckpt").read_bytes()
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tested = cli("test", *LESSON, f"--ckpt_path={outside}")
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert tested.trainer.callback_metrics["test/loss"] > 0
    assert scalars(in_tmp / "lightning_logs/linear_regression/version_1", "test/loss")


def test_a_resumed_fit_continues_in_its_run_with_the_best_score_kept(cli, in_tmp):
    first = cli("fit", *LESSON, *SHORT)
    best_score = first.trainer.checkpoint_callback.best_model_score
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = cli("fit", *LESSON, "--trainer.max_epochs=5", "--ckpt_path=last")
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    runs = in_tmp / "lightning_logs" / "linear_regression"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    steps = [step for step, _ in scalars(runs / "version_0", "val/loss")]
    assert steps == sorted(steps) and len(steps) == 5  # one curve, epochs 0-4
    assert resumed.trainer.checkpoint_callback.best_model_score <= best_score


def test_csv_runs_share_the_experiments_numbering_and_last_is_the_newest(cli, in_tmp):
    cli("fit", *LESSON, *SHORT)  # TensorBoard: version_0
    csv_logger = ["--trainer.logger=CSVLogger"]
    cli("fit", *LESSON, *SHORT, "--trainer.max_epochs=2", *csv_logger)
    run = in_tmp / "lightning_logs" / "linear_regression" / "version_1"
    assert (run / "metrics.csv").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    tested = cli("test", *LESSON, "--ckpt_path=last", *csv_logger)
    assert Path(tested.trainer.ckpt_path).resolve() == (run / "checkpoints" / "last.ckpt").resolve()
    with open(run / "test" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows and float(rows[-1]["test/loss"]) > 0


def test_last_never_picks_another_experiments_checkpoint(cli, in_tmp):
    cli("fit", "--config", config("sine_rnn"), "--trainer.max_epochs=2")
    # The CSV logger once wrote to lightning_logs/version_N with no experiment name, and `last` then
    # found another experiment's run; an experiment without runs of its own now says so.
    with pytest.raises(ExperimentError, match=r"no checkpoint in the runs of linear_regression"):
        cli("test", *LESSON, "--ckpt_path=last", "--trainer.logger=CSVLogger")


def test_a_logger_whose_runs_are_not_on_disk_asks_for_the_file(cli, in_tmp):
    remote = ["--trainer.logger=MLFlowLogger", "--trainer.logger.tracking_uri=http://localhost:1"]
    with pytest.raises(ExperimentError, match=r"not on this disk to look through; give the checkpoint file"):
        cli("test", *LESSON, "--ckpt_path=last", *remote)


def test_print_config_round_trips_to_the_same_experiment(in_tmp):
    printed = run_experiments(["fit", *LESSON, "--print_config"], cwd=in_tmp)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "name: linear_regression" in printed.stdout and "seed_everything: 42" in printed.stdout
    (in_tmp / "saved.yaml").write_text(printed.stdout)
    for _ in range(2):
        done = run_experiments(
            [
                "fit",
                "--config",
                "saved.yaml",
                "--trainer.max_epochs=1",
                "--trainer.enable_progress_bar=false",
            ],
            cwd=in_tmp,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    # Both runs are runs of linear_regression, numbered on, not of an experiment called "saved".
    assert sorted(p.name for p in (in_tmp / "lightning_logs").iterdir()) == ["linear_regression"]
    assert sorted(p.name for p in (in_tmp / "lightning_logs/linear_regression").iterdir()) == [
        "version_0",
        "version_1",
    ]
    # A random seed is printed as the number it would be.
    printed = run_experiments(["fit", *LESSON, "--seed_everything=true", "--print_config"], cwd=in_tmp)
    seed_line = next(line for line in printed.stdout.splitlines() if line.startswith("seed_everything:"))
    assert seed_line.split(":")[1].strip().isdigit()


def test_checkpoint_step_reads_the_batches_that_stepped():
    from experiments.ckpt_path import checkpoint_step

    state = {
        "global_step": 6000,
        "loops": {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": 300}}},
    }
    assert checkpoint_step(state) == 299  # sine_rnn: 20 updates per logged step
    assert checkpoint_step({"global_step": 21}) == 20
    assert torch.tensor(checkpoint_step({})) == 0
