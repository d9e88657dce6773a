"""The trainer presets of configs/trainer/, stacked after a lesson's config with a second --config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.strategies import DDPStrategy

from experiments.callbacks import EarlyStop
from experiments.cli import ExperimentCLI
from experiments.main import main
from tests.conftest import QUIET, REPO, config

PRESETS = REPO / "configs" / "trainer"
CUDA = pytest.mark.gpu  # skipped, with the reason, without CUDA (tests/conftest.py)


def preset(name: str) -> list[str]:
    return ["--config", str(PRESETS / f"{name}.yaml")]


def lesson(name: str = "linear_regression") -> list[str]:
    return ["--config", config(name), *QUIET]


def test_every_preset_is_documented_and_listed() -> None:
    names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    assert names == ["bf16", "ddp", "debug", "early_stopping", "fp16", "gpu", "profile", "slurm"]
    for path in PRESETS.glob("*.yaml"):
        assert path.read_text().startswith("#"), f"{path.name} needs a header comment with its command"


def test_precision_presets_set_the_precision(in_tmp: Path) -> None:
    for name, precision in (("bf16", "bf16-mixed"), ("fp16", "16-mixed")):
        cli = ExperimentCLI(args=[*lesson(), *preset(name), "--trainer.accelerator", "cpu"], run=False)
        assert cli.config.trainer.precision == precision
    # A later flag still wins over a preset.
    cli = ExperimentCLI(args=[*lesson(), *preset("bf16"), "--trainer.precision", "32-true"], run=False)
    assert cli.trainer.precision == "32-true"


def test_ddp_preset_builds_a_ddp_trainer(in_tmp: Path) -> None:
    args = [*lesson(), *preset("ddp"), "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    cli = ExperimentCLI(args=args, run=False)
    assert isinstance(cli.trainer.strategy, DDPStrategy)
    assert cli.trainer.num_devices == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_gpu_preset_without_a_gpu_is_one_clear_error(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *lesson(), *preset("gpu")])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "gpu" in lines[-1].lower()


def test_debug_preset_runs_a_few_batches_and_writes_nothing(in_tmp: Path) -> None:
    cli = ExperimentCLI(args=["fit", *lesson(), *preset("debug")])
    assert cli.trainer.fast_dev_run == 5
    assert cli.trainer.global_step == 5
    assert torch.is_anomaly_enabled() is False  # restored after the run
    assert not (in_tmp / "lightning_logs").exists()
    assert not list(in_tmp.rglob("*.ckpt"))


def test_profile_preset_writes_a_profile_report(in_tmp: Path) -> None:
    cli = ExperimentCLI(args=["fit", *lesson(), *preset("profile")])
    assert cli.trainer.current_epoch == 1
    report = Path(cli.trainer.log_dir) / "fit-profile.txt"
    text = report.read_text()
    assert "run_training_batch" in text and "Total" in text


def test_early_stopping_preset_stops_when_the_checkpoints_metric_stops_improving(
    in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # linear_regression's val/loss reaches the noise floor (0.0625) within a few epochs, then wanders.
    flags = ["--early_stopping.min_delta=0.001", "--trainer.max_epochs=300"]
    cli = ExperimentCLI(args=["fit", *lesson(), *preset("early_stopping"), *flags])
    stop = next(c for c in cli.trainer.callbacks if isinstance(c, EarlyStop))
    # The checkpoint's metric and mode, since the preset names none.
    assert (stop.monitor, stop.mode, stop.patience) == ("val/loss", "min", 3)
    assert stop.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED
    epochs = cli.trainer.current_epoch
    assert 3 <= epochs < 300 and stop.stopped_epoch == epochs - 1
    # Stopped when the last three validations were no better than the best by more than min_delta.
    assert float(cli.trainer.callback_metrics["val/loss"]) > float(stop.best_score) - 0.001
    assert float(stop.best_score) < 0.1  # and only once the fit had converged
    # One line says why (Lightning's log, which the command prints on stdout).
    assert (
        f"Stopped early after epoch {epochs}: val/loss did not improve by more than 0.001 in 3 validations"
    ) in caplog.text
    # Off by default: the same run without the preset trains every epoch it is given.
    plain = ExperimentCLI(args=["fit", *lesson(), "--trainer.max_epochs=12"])
    assert not any(isinstance(c, EarlyStop) for c in plain.trainer.callbacks)
    assert plain.trainer.current_epoch == 12


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--early_stopping.monitor=val/los", "--early_stopping.mode=min"],
            "error: --early_stopping.monitor val/los: the lesson logs no such metric; it logs",
        ),
        (["--early_stopping.monitor=val/rmse"], "error: --early_stopping.mode: give min or max for val/rmse"),
        (["--checkpoint.monitor=null"], "error: --early_stopping.monitor: no checkpoint monitors a metric"),
        (["--early_stopping.patience=-1"], "error: --early_stopping.patience"),
    ],
)
def test_early_stopping_mistakes_are_one_line(
    in_tmp: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *lesson(), *preset("early_stopping"), "--trainer.max_epochs=2", *flags])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_presets_train_on_a_gpu(in_tmp: Path, mnist_dir: Path, precision: str) -> None:
    args = ["fit", *lesson("mnist_convnet"), "--data.data_dir", str(mnist_dir), "--data.val_split", "16"]
    cli = ExperimentCLI(args=[*args, *preset("gpu"), *preset(precision), "--trainer.fast_dev_run", "2"])
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
