"""What the command prints, read as a user reads it in a log file (stdout a pipe): where the run went at
its end, metrics to 4 significant digits, the last epoch's line before Lightning's "stopped", no FLOPs
that were never counted, and no set-up lines that say nothing (none at all in a sweep's trial)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loops import evaluation_loop

from experiments.cli import TRIAL_VARIABLE, ExperimentCLI
from experiments.progress import (
    LayerSummary,
    RichLayerSummary,
    SetUpLines,
    drop_set_up_lines,
    round_printed_results,
)
from tests.conftest import config, run_experiments

LESSON = ["--config", config("linear_regression"), "--trainer.accelerator=cpu"]
RUN = "lightning_logs/linear_regression/version_0"


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    """stdout of a 2-epoch fit and of the test of its best checkpoint, in one folder."""
    folder = tmp_path_factory.mktemp("console")
    # 7 batches an epoch, fewer than log_every_n_steps: Lightning would advise, though nothing is lost.
    fit = run_experiments(
        ["fit", *LESSON, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=50"], cwd=folder
    )
    assert fit.returncode == 0, fit.stderr[-2000:]
    test = run_experiments(["test", *LESSON, "--ckpt_path=best"], cwd=folder)
    assert test.returncode == 0, test.stderr[-2000:]
    return {"fit": fit.stdout, "fit_err": fit.stderr, "test": test.stdout, "folder": folder}


def significant_digits(text: str) -> int:
    mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "")
    return len(mantissa.lstrip("0"))


def test_a_fit_ends_with_its_run_folder_and_best_checkpoint_with_its_score(printed):
    *_, run, best = printed["fit"].splitlines()
    assert run == f"run: {RUN}"
    match = re.fullmatch(
        rf"best checkpoint: ({RUN}/checkpoints/best-epoch=\d+-step=\d+\.ckpt) \(val/loss (\S+)\)", best
    )
    assert match, best
    path, score = match.groups()
    state = torch.load(printed["folder"] / path, map_location="cpu", weights_only=True)
    [recorded] = [
        s["best_model_score"] for s in state["callbacks"].values() if s.get("monitor") == "val/loss"
    ]
    assert score == f"{float(recorded):.4g}"
    # The lowest val/loss of the epoch lines, as they print it.
    losses = re.findall(r"^epoch \d+/2 .*  val/loss (\S+)  ", printed["fit"], re.M)
    assert len(losses) == 2 and score == min(losses, key=float)


def test_output_to_a_file_is_one_line_per_epoch_the_last_before_lightnings_stopped_line(printed):
    # stdout captured (not a terminal): Lightning's bar would redraw itself with "\r" for every batch.
    assert "\r" not in printed["fit"]
    lines = printed["fit"].splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert [lines[i].split("  ")[0] for i in epochs] == ["epoch 1/2", "epoch 2/2"]
    shown = [lines[i] for i in epochs]
    assert all("train/loss " in line and "val/loss " in line and line.endswith(" s)") for line in shown)
    [stopped] = [i for i, line in enumerate(lines) if line.startswith("`Trainer.fit` stopped")]
    assert epochs[-1] < stopped < lines.index(f"run: {RUN}")


def test_the_summary_lists_layers_not_metric_objects_nor_uncounted_flops_nor_absent_devices(printed):
    out = printed["fit"]
    table = out[: out.index("Trainable params")]
    assert " net " in table and " Linear " in table
    assert not any(name in table for name in ("train_loss", "val_loss", "EpochMean"))
    assert "FLOPs" not in out and "Flops" not in out  # no example_input_array: nothing was counted
    # A short run of a lesson that logs per epoch: no advice about log_every_n_steps.
    assert "log_every_n_steps" not in out + printed["fit_err"]
    # The seed stays; a TPU this machine lacks is not announced, nor a GPU it lacks.
    assert "Seed set to 42" in out and "TPU available" not in out
    assert ("GPU available" in out) == torch.cuda.is_available()


def test_the_test_table_shows_4_significant_digits_and_the_command_says_where_it_wrote(printed):
    out = printed["test"]
    [row] = [line for line in out.splitlines() if "test/loss" in line]
    value = row.replace("│", " ").split()[1]
    assert 1 <= significant_digits(value) <= 4, row
    assert out.splitlines()[-1] == f"test folder: {RUN}/test"
    assert any((printed["folder"] / RUN / "test").glob("events.out.tfevents.*"))


class Counted(BoringModel):
    """A module with an example input: Lightning counts its FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = torch.zeros(2, 32)


@pytest.mark.parametrize("summary", [LayerSummary, RichLayerSummary])
@pytest.mark.parametrize("model", [BoringModel, Counted])
def test_flops_are_shown_when_counted(caplog, capsys, summary, model):
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[summary()],
        max_steps=0,
    )
    with caplog.at_level(logging.INFO):
        trainer.fit(model())
    shown = capsys.readouterr().out + caplog.text  # rich's console, else Lightning's log
    assert " layer " in shown and "Linear" in shown
    counted = model is Counted
    assert ("FLOPs" in shown) == counted and bool(re.search(r"Total (FLOPs: |Flops)", shown)) == counted
    # Linear(32, 2) on 2 samples: 2 * 2 * 32 * 2 multiply-adds.
    assert (" 256 " in shown) == counted


@pytest.mark.parametrize("rich", [True, False])
def test_both_result_tables_round_their_values(capsys, monkeypatch, rich):
    # Lightning draws the table with rich when it is installed, else as plain text.
    monkeypatch.setattr(evaluation_loop, "_RICH_AVAILABLE", rich)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    round_printed_results(trainer)
    results = [{"test/acc": torch.tensor(0.9689000248908997), "test/loss": 1234.5678, "test/count": 12345}]
    trainer.test_loop._print_results(results, "test")
    rows = [line.replace("│", " ").split() for line in capsys.readouterr().out.splitlines()]
    assert {row[0]: row[1] for row in rows if row and row[0].startswith("test/")} == {
        "test/acc": "0.9689",
        "test/count": "12345",
        "test/loss": "1235",
    }


@pytest.fixture
def set_up_records():
    """The records that reach the loggers' handlers of Lightning's set-up lines (with ``SetUpLines``)."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    keep = Keep()
    drop_set_up_lines()
    loggers = [logging.getLogger(name) for name in SetUpLines.LOGGERS]
    for logger in loggers:
        logger.addHandler(keep)
    yield records
    for logger in loggers:
        logger.removeHandler(keep)


def summaries(cli: ExperimentCLI) -> list[ModelSummary]:
    return [c for c in cli.trainer.callbacks if isinstance(c, ModelSummary)]


def test_a_sweep_trial_prints_no_set_up_lines_a_plain_run_keeps_its_seed(set_up_records, in_tmp, monkeypatch):
    plain = ExperimentCLI(args=LESSON, run=False)
    assert "Seed set to 42" in set_up_records and len(summaries(plain)) == 1
    assert not any(line.startswith("TPU available: False") for line in set_up_records)
    set_up_records.clear()
    # A trial's fit: the sweep worker names its trial in the environment (experiments/sweep/trial.py).
    address = {
        "storage": "sqlite:///optuna.db",
        "study": "s",
        "trial_id": 0,
        "metric": "val/loss",
        "pruner": {},
    }
    monkeypatch.setenv(TRIAL_VARIABLE, json.dumps(address))
    trial = ExperimentCLI(args=LESSON, run=False)
    assert not any(re.match(r"(Seed set|[A-Z]PU available|LOCAL_RANK)", line) for line in set_up_records)
    assert summaries(trial) == []
    # A summary the config names is the user's own.
    chosen = '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelSummary"}'
    assert len(summaries(ExperimentCLI(args=[*LESSON, chosen], run=False))) == 1
