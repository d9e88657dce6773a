"""Faults a long run meets: kills, requeues, interrupted writes, NaN losses (experiments/faults.py).

Every run here is the MNIST convnet lesson on the tiny IDX MNIST of ``tests/image_data.py``, with
shuffling, random-shift augmentation and dropout on, so that a resumed run can only match an
uninterrupted one if the batch order, the augmentation and the dropout masks all continue exactly.
"""

from __future__ import annotations

import errno
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

from experiments.checkpoint_io import AtomicCheckpointIO
from experiments.main import main
from experiments.main import main as run_main
from experiments.preemption import SIGTERM_STATUS, slurm_topology
from tests.conftest import EVERY_EPOCH, QUIET, REPO, config, free_port, run_experiments, slurm_job_environment

EPOCHS = 3
# A child process gets as many threads as this one: float results depend on how a reduction is split.
THREADS = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
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
        EVERY_EPOCH,
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


class KillDuringWrite(Callback):
    """SIGKILLs this process halfway through writing the first checkpoint of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        if trainer.global_step != self.step:
            return
        real_save = torch.save

        def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
            import io

            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save


class FillDisk(Callback):
    """Fills the file system of ``folder`` when epoch ``epoch`` starts, so its checkpoints find it full."""

    def __init__(self, folder: str, epoch: int) -> None:
        self.folder = Path(folder)
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        handle = os.open(self.folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(handle, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(handle)


def callback_arg(cls: type, **init_args: object) -> str:
    """``--trainer.callbacks+=`` one of this module's callbacks, as JSON."""
    spec = {"class_path": f"{__name__}.{cls.__name__}", "init_args": init_args}
    return f"--trainer.callbacks+={json.dumps(spec)}"


def last_checkpoint(root: Path, version: int) -> Path:
    """``last.ckpt`` of run ``version_<version>``; a run resumed with ``--ckpt_path`` continues in its own
    folder, so a resumed run's is that of the run it resumed."""
    return root / "lightning_logs" / "mnist_convnet" / f"version_{version}" / "checkpoints" / "last.ckpt"


def assert_same_run(ours: Path, reference: Path) -> None:
    ours_ckpt = torch.load(ours, map_location="cpu", weights_only=True)
    ref_ckpt = torch.load(reference, map_location="cpu", weights_only=True)
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
    # SIGTERM in the middle of the second epoch: the step that is running ends, last.ckpt is written at
    # it, and the command exits with 143 (128 + SIGTERM), not 0: the run did not finish.
    with pytest.raises(SystemExit) as stopped:
        main(run_args(data, callback_arg(SignalAt, name="SIGTERM", epoch=1, batch=2)))
    assert stopped.value.code == SIGTERM_STATUS == 143
    interrupted = torch.load(last_checkpoint(in_tmp, 0), map_location="cpu", weights_only=True)
    assert interrupted["global_step"] == BATCHES + 3  # the first epoch and batches 0-2 of the second
    main([*run_args(data), "--ckpt_path", "last"])
    assert_same_run(last_checkpoint(in_tmp, 0), ref_ckpt)  # resumed in its own run folder


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted(
    reference: tuple[Path, Path], in_tmp: Path
) -> None:
    ref_ckpt, data = reference
    kill = callback_arg(SignalAt, name="SIGKILL", epoch=2, batch=3)
    killed = run_experiments(run_args(data, kill), **THREADS)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert torch.load(last_checkpoint(in_tmp, 0), weights_only=True)["global_step"] == 2 * BATCHES
    main([*run_args(data), "--ckpt_path", "last"])
    assert_same_run(last_checkpoint(in_tmp, 0), ref_ckpt)  # resumed in its own run folder


def test_sigkill_while_a_checkpoint_is_written_leaves_the_last_good_one_and_resume_cleans_up(
    reference: tuple[Path, Path], in_tmp: Path
) -> None:
    ref_ckpt, data = reference
    # Killed halfway through writing the second epoch's first checkpoint (after step 12).
    kill = callback_arg(KillDuringWrite, step=2 * BATCHES)
    killed = run_experiments(run_args(data, kill), **THREADS)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = last_checkpoint(in_tmp, 0).parent
    torn = sorted(folder.glob(".*.tmp"))
    assert len(torn) == 1, list(folder.iterdir())  # the half-written file, under a temporary name
    for path in folder.glob("*.ckpt"):  # every checkpoint under its final name is whole, of epoch 0
        assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == BATCHES
    # The next start resumes from the last good checkpoint and removes the torn file.
    main([*run_args(data), "--ckpt_path", "last"])
    assert not torn[0].exists()
    assert_same_run(last_checkpoint(in_tmp, 0), ref_ckpt)  # resumed in its own run folder


def can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or not Path("/proc/filesystems").exists():
        return False
    return "tmpfs" in Path("/proc/filesystems").read_text()


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 160 MiB tmpfs (root only; a checkpoint of the convnet is 14 MB), unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(folder)], check=False)
    if mounted.returncode != 0:
        pytest.skip(
            "needs a tmpfs mount (root in a namespace that allows it); the same path is tested "
            "with an injected ENOSPC in test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint"
        )
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def assert_disk_full_stop(err: str, root: Path) -> None:
    # The run's warnings come first on a real stderr; the error is its last line, and the only one.
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
    # The checkpoint's write, or another write of the run that met the full disk first (TensorBoard's
    # events, a figure: which comes first is a race), is the one line; a thread's traceback is not shown.
    assert lines[-1].startswith("error: the disk is full"), err
    assert "intact" in lines[-1] and "Traceback" not in err
    folder = last_checkpoint(root, 0).parent
    assert not list(folder.glob(".*.tmp")), "the failed write's temporary file is removed"
    for path in folder.glob("*.ckpt"):
        assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == BATCHES


class DiskFullAt(Callback):
    """Makes checkpoint writes fail with ENOSPC from global step ``step`` on, after writing some bytes."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        if trainer.global_step == self.step:

            def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
                f.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            torch.save = save


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(
    in_tmp: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "save", torch.save)  # put back after the test
    with pytest.raises(SystemExit) as stopped:
        main(run_args(mnist_dir, callback_arg(DiskFullAt, step=2 * BATCHES)))
    assert stopped.value.code == 2
    assert_disk_full_stop(capsys.readouterr().err, in_tmp)


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs root and tmpfs to mount a small disk")
def test_a_really_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(
    reference: tuple[Path, Path], small_disk: Path
) -> None:
    ref_ckpt, data = reference
    # The whole run folder on the small disk, filled when the second epoch starts.
    fill = callback_arg(FillDisk, folder=str(small_disk), epoch=1)
    full = run_experiments(run_args(data, fill), cwd=small_disk, **THREADS)
    assert full.returncode == 2, full.stderr[-2000:]
    assert_disk_full_stop(full.stderr, small_disk)
    (small_disk / "filler").unlink()
    resumed = run_experiments([*run_args(data), "--ckpt_path", "last"], cwd=small_disk, **THREADS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(last_checkpoint(small_disk, 0), ref_ckpt)  # resumed in its own run folder


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_get_the_permissions_of_any_file_written_here(
    umask: int, mode: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import experiments.checkpoint_io as checkpoint_io

    # The process's umask, which the module reads once at import (reading it means setting it).
    monkeypatch.setattr(checkpoint_io, "_UMASK", umask)
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, path)
    assert path.stat().st_mode & 0o777 == mode  # mkstemp alone gives 0600 whatever the umask


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
    slurm_job_environment(monkeypatch)
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
    saved = torch.load(in_tmp / "job" / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
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


def checkpoints(root: Path) -> list[Path]:
    return sorted((root / "lightning_logs").rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("every_n_steps", "message"),
    [
        (1, "training loss is nan at epoch 1, batch 4 (global step 11)"),
        (3, "training loss is nan at epoch 1, batch 4 (global step 11)"),  # found at step 12, named 11
        # Between checks the epoch ends: the check before the checkpoints stops it.
        (10, "training loss is nan at epoch 1, batch 4 (global step 11, found before writing a checkpoint)"),
    ],
)
def test_nan_loss_stops_the_run_before_any_checkpoint_of_it_is_written(
    every_n_steps: int, message: str, in_tmp: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The weights go NaN before step 11 (epoch 1, batch 4); the epoch's checkpoints are due after step 12.
    poison = callback_arg(PoisonAt, epoch=1, batch=4)
    with pytest.raises(SystemExit) as stopped:
        main(run_args(mnist_dir, poison, f"--nan_guard.every_n_steps={every_n_steps}"))
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert "stopped before it was saved, so every checkpoint on disk is of an earlier step" in lines[0]
    saved = checkpoints(in_tmp)
    assert saved, "the first epoch's checkpoints"
    for path in saved:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["global_step"] == BATCHES, path
        assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()), path


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
    loaded = torch.load(path, weights_only=True)
    assert loaded["global_step"] == 1 and torch.equal(loaded["state_dict"]["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the torn temporary file is removed
    # The next write goes through.
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 2


def test_experiments_write_checkpoints_atomically(in_tmp: Path, mnist_dir: Path) -> None:
    from experiments.cli import ExperimentCLI

    cli = ExperimentCLI(args=run_args(mnist_dir)[1:], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize("exits_by_itself", [True, False])
def test_a_failed_run_waits_for_the_ranks_it_launched_then_kills_them(exits_by_itself: bool) -> None:
    from types import SimpleNamespace

    from experiments.faults import FailedRun

    seconds = 0.2 if exits_by_itself else 600
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    launcher = SimpleNamespace(procs=[child], kill=lambda signum: child.send_signal(signum))
    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=launcher))
    FailedRun(set(), grace=5).end_launched_ranks(trainer)
    # A rank that ends on its own within the grace keeps its status (and its last words); one that does
    # not is killed.
    assert child.wait(timeout=5) == (0 if exits_by_itself else -signal.SIGKILL)


def test_a_background_threads_full_disk_prints_no_traceback() -> None:
    import errno
    import threading

    from experiments.main import _quiet_full_disk_in_threads

    seen: list[BaseException] = []
    hook = _quiet_full_disk_in_threads(lambda args: seen.append(args.exc_value))

    def run(error: BaseException) -> None:
        def fail() -> None:
            raise error

        previous, threading.excepthook = threading.excepthook, hook
        try:
            thread = threading.Thread(target=fail)
            thread.start()
            thread.join()
        finally:
            threading.excepthook = previous

    run(OSError(errno.ENOSPC, "No space left on device"))  # TensorBoard's event writer on a full disk
    assert seen == []
    other = RuntimeError("a bug")
    run(other)
    assert seen == [other]  # anything else is shown as before
