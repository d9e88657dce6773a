"""The trainer presets of configs/trainer/, stacked after a lesson's config with a second --config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

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
    assert names == ["bf16", "ddp", "debug", "fp16", "gpu", "profile", "slurm"]
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


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_presets_train_on_a_gpu(in_tmp: Path, mnist_dir: Path, precision: str) -> None:
    args = ["fit", *lesson("mnist_convnet"), "--data.data_dir", str(mnist_dir), "--data.val_split", "16"]
    cli = ExperimentCLI(args=[*args, *preset("gpu"), *preset(precision), "--trainer.fast_dev_run", "2"])
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
