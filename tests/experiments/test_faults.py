"""Faults a long run meets: kills, requeues, interrupted writes, NaN losses (experiments/faults.py).

Every run here is the MNIST convnet lesson on the tiny IDX MNIST of ``tests/image_data.py``, with
shuffling, random-shift augmentation and dropout on, so that a resumed run can only match an
uninterrupted one if the batch order, the augmentation and the dropout masks all continue exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from experiments.cli import main
from experiments.cli import main as run_main
from experiments.faults import AtomicCheckpointIO, slurm_topology
from tests.conftest import QUIET, REPO, config, free_port, subprocess_env

EPOCHS = 3
BATCHES = 6  # per epoch: 64 images, 16 held out, batch 8


def run_args(data_dir: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config", config("mnist_convnet"),
        "--data.data_dir", str(data_dir),
        "--data.val_split", "16",
        "--data.batch_size", "8",
        "--data.random_crop_padding", "2",
        "--trainer.max_epochs", str(EPOCHS),
        "--trainer.deterministic", "true",
        "--trainer.callbacks=[]",  # the lesson's figures are not what is tested here
        *QUIET,
        *extra,
    ]  # fmt: skip


class SignalAt(Callback):
    """Sends the signal ``name`` to this process when training reaches ``batch`` of ``epoch``."""

    def __init__(self, name: str, epoch: int, batch: int) -> None:
        self.signal = getattr(signal, name)
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args, **kwargs) -> None:
        if (trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signal)


class PoisonAt(Callback):
    """Makes the model's weights NaN before ``batch`` of ``epoch``: a run that blows up."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def callback_arg(cls: type, **init_args: object) -> str:
    """``--trainer.callbacks+=`` one of this module's callbacks, as JSON."""
    spec = {"class_path": f"{__name__}.{cls.__name__}", "init_args": init_args}
    return f"--trainer.callbacks+={json.dumps(spec)}"


def last_checkpoint(root: Path, version: int) -> Path:
    return root / "lightning_logs" / "mnist_convnet" / f"version_{version}" / "checkpoints" / "last.ckpt"


def assert_same_run(ours: Path, reference: Path) -> None:
    ours_ckpt = torch.load(ours, map_location="cpu", weights_only=False)
    ref_ckpt = torch.load(reference, map_location="cpu", weights_only=False)
    assert ours_ckpt["global_step"] == ref_ckpt["global_step"] == EPOCHS * BATCHES
    for name, tensor in ref_ckpt["state_dict"].items():
        torch.testing.assert_close(ours_ckpt["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
    # The monitored metric (val/acc) of the final epoch and the best so far, as the checkpoints saw them.
    ours_cb = next(v for k, v in ours_ckpt["callbacks"].items() if "val/acc" in k)
    ref_cb = next(v for k, v in ref_ckpt["callbacks"].items() if "val/acc" in k)
    assert ours_cb["current_score"] == ref_cb["current_score"]
    assert ours_cb["best_model_score"] == ref_cb["best_model_score"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted run: (its last.ckpt, the MNIST folder it trained on)."""
    from tests.image_data import write_mnist

    root = tmp_path_factory.mktemp("reference")
    data = write_mnist(root / "data")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        main(run_args(data))
    finally:
        os.chdir(cwd)
    return last_checkpoint(root, 0), data


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(
    reference: tuple[Path, Path], in_tmp: Path
) -> None:
    ref_ckpt, data = reference
    # SIGTERM in the middle of the second epoch: Lightning stops after that batch, saving nothing.
    with pytest.raises(SystemExit):
        main(run_args(data, callback_arg(SignalAt, name="SIGTERM", epoch=1, batch=2)))
    interrupted = torch.load(last_checkpoint(in_tmp, 0), map_location="cpu", weights_only=False)
    assert interrupted["global_step"] == BATCHES  # the end of the first epoch
    main([*run_args(data), "--ckpt_path", "last"])
    assert_same_run(last_checkpoint(in_tmp, 1), ref_ckpt)


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted(
    reference: tuple[Path, Path], in_tmp: Path
) -> None:
    ref_ckpt, data = reference
    # As many threads as this process: float results depend on how a reduction is split.
    env = subprocess_env(OMP_NUM_THREADS=str(torch.get_num_threads()))
    kill = callback_arg(SignalAt, name="SIGKILL", epoch=2, batch=3)
    killed = subprocess.run(
        [sys.executable, "-m", "experiments", *run_args(data, kill)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert torch.load(last_checkpoint(in_tmp, 0), weights_only=False)["global_step"] == 2 * BATCHES
    main([*run_args(data), "--ckpt_path", "last"])
    assert_same_run(last_checkpoint(in_tmp, 1), ref_ckpt)


@pytest.fixture
def slurm_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The environment of a one-task SLURM job, with a fake ``scontrol`` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
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
    return log


def test_slurm_requeue_signal_checkpoints_requeues_and_the_next_start_resumes(
    in_tmp: Path, mnist_dir: Path, slurm_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def main(args: list[str]) -> None:
        # Each run sets up a process group (the preset's DDP, one process); a port of its own each time,
        # since a closed store's port may not be free again at once.
        monkeypatch.setenv("MASTER_PORT", str(free_port()))
        run_main(args)

    preset = str(REPO / "configs" / "trainer" / "slurm.yaml")
    # The preset runs DDP, whose setup re-seeds the generators, so the reference is a SLURM run too.
    main([*run_args(mnist_dir), "--config", preset, "--trainer.default_root_dir", "uninterrupted"])
    job = [*run_args(mnist_dir), "--config", preset, "--trainer.default_root_dir", "job"]
    # First start: no HPC checkpoint yet, so it trains from scratch until SIGUSR1 arrives mid-epoch.
    with pytest.raises(SystemExit) as stopped:
        main([*job, callback_arg(SignalAt, name="SIGUSR1", epoch=1, batch=3)])
    assert stopped.value.code in (None, 0)
    saved = torch.load(in_tmp / "job" / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == BATCHES + 4  # written after the step that was running
    assert slurm_job.read_text().split() == ["requeue", "4242"]
    # The requeued job runs the same command; with no --ckpt_path it resumes from the HPC checkpoint,
    # mid-epoch, and ends exactly where the uninterrupted run ends.
    main(job)
    assert_same_run(last_checkpoint(in_tmp, 2), last_checkpoint(in_tmp, 0))


def test_slurm_topology_comes_from_the_environment(slurm_job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_NNODES", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8(x4)")
    assert slurm_topology(1, "auto") == (4, 8)
    assert slurm_topology(2, 4) == (2, 4)  # set explicitly: kept
    monkeypatch.delenv("SLURM_NTASKS")
    assert slurm_topology(1, "auto") == (1, "auto")  # not a SLURM job


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    in_tmp: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(run_args(mnist_dir, callback_arg(PoisonAt, epoch=1, batch=2)))
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: training loss is nan at epoch 1, batch 2 (global step 9)")
    last = last_checkpoint(in_tmp, 0)
    good = torch.load(last, map_location="cpu", weights_only=False)
    assert good["global_step"] == BATCHES
    assert all(torch.isfinite(t).all() for t in good["state_dict"].values())


class Interrupted(Exception):
    pass


def interrupting_save(real_save: Callable, after_bytes: int) -> Callable:
    """torch.save that writes ``after_bytes`` of the checkpoint, then is interrupted."""

    def save(obj: object, f: object, *args, **kwargs) -> None:
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()[:after_bytes]
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(data)
        else:
            f.write(data)
            f.flush()
        raise Interrupted

    return save


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "global_step": 1}, path)
    monkeypatch.setattr(torch, "save", interrupting_save(torch.save, after_bytes=1000))
    with pytest.raises(Interrupted):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 2}, path)
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=False)
    assert loaded["global_step"] == 1 and torch.equal(loaded["state_dict"]["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the torn temporary file is removed
    # The next write goes through.
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 2}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 2


def test_experiments_write_checkpoints_atomically(in_tmp: Path, mnist_dir: Path) -> None:
    from experiments.cli import ExperimentCLI

    cli = ExperimentCLI(args=run_args(mnist_dir)[1:], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize("exits_by_itself", [True, False])
def test_end_together_waits_for_the_other_ranks_then_kills_them(exits_by_itself: bool) -> None:
    from types import SimpleNamespace

    from experiments.faults import EndTogether

    seconds = 0.2 if exits_by_itself else 600
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    launcher = SimpleNamespace(procs=[child], kill=lambda signum: child.send_signal(signum))
    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=launcher))
    EndTogether(grace=5).on_exception(trainer, None, RuntimeError("rank 0 failed"))
    # A rank that ends on its own within the grace keeps its status (and its last words); one that does
    # not is killed.
    assert child.wait(timeout=5) == (0 if exits_by_itself else -signal.SIGKILL)
