"""Fixtures shared by the test packages: run the CLI in-process inside a temporary folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from experiments.cli import ExperimentCLI

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
LESSONS = ["first_network", "linear_regression", "sine_rnn"]

# Keeps in-process runs quiet and quick; none of these change what is computed.
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


#: last.ckpt at every epoch's end, whatever the epoch's length: for tests that kill a run after an epoch
#: and look for that epoch's checkpoint (by default it is written at most every 10 s).
EVERY_EPOCH = "--last_checkpoint.min_interval=0"


def config(lesson: str) -> str:
    return str(CONFIGS / f"{lesson}.yaml")


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, with the repository first on ``PYTHONPATH``; the
    caller's own ``PYTHONPATH`` stays after it (it may hold packages the child needs)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_experiments(
    args: list[str], cwd: Path | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess:
    """``python -m experiments *args`` in a fresh process, as a user runs it: this process's environment
    (``subprocess_env``, with ``env`` added) but not ``EXPERIMENTS_DEBUG``; output captured as text."""
    environment = subprocess_env(**env)
    environment.pop("EXPERIMENTS_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, on a machine without CUDA (``make test-gpu``
    runs just them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    """A TCP port no process listens on now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so lightning_logs/ is created there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(in_tmp: Path) -> Callable[..., ExperimentCLI]:
    """``cli("fit", "--config", ...)`` runs the experiments command in-process and returns the CLI."""

    def run(*args: str) -> ExperimentCLI:
        return ExperimentCLI(args=[*args, *QUIET])

    return run


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A tiny MNIST in torchvision's IDX layout (64 training, 32 test images)."""
    from tests.image_data import write_mnist

    return write_mnist(tmp_path / "mnist_data")


@pytest.fixture
def cifar_integrity_bypassed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test-made CIFAR pickles cannot match torchvision's md5 sums; accept them in this test only."""
    from tests.lesson_data import bypass_cifar_integrity  # here: tests.lesson_data imports this file

    bypass_cifar_integrity(monkeypatch)


@pytest.fixture
def cifar_dir(tmp_path: Path, cifar_integrity_bypassed: None) -> Path:
    """A tiny CIFAR-10 in torchvision's pickled layout (5 x 20 training, 30 test images)."""
    from tests.image_data import write_cifar10

    return write_cifar10(tmp_path / "cifar_data")


@pytest.fixture
def image_folder_dir(tmp_path: Path) -> Path:
    """A class-per-folder JPEG dataset: train/ and test/, 3 classes, 16x16 RGB."""
    from tests.image_data import write_image_folder

    return write_image_folder(tmp_path / "folder_data")


class EpochHistory(Callback):
    """Records a metric logged once per training epoch.

    Read when the next epoch starts and when training ends: a callback's ``on_train_epoch_end`` runs
    before the module's, where lessons log their epoch loss.
    """

    def __init__(self, key: str = "train/loss") -> None:
        self.key = key
        self.values: list[float] = []

    def _record(self, trainer: Trainer) -> None:
        self.values.append(trainer.callback_metrics[self.key].item())

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record(trainer)


def slurm_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a one-task SLURM job (job 4242 on 127.0.0.1), not an array job's."""
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NAME": "experiments",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
