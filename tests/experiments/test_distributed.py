"""Multi-process runs through the real command on this CPU: DDP with 2 processes on gloo launched by
Lightning, a two-node run launched by torchrun, and a process that fails or stops answering mid-epoch.

The first two must compute what one process computes with the same global batch (batch 8 on each of 2
ranks versus 16 in one): ``TensorBatches`` shards an epoch so that the ranks' batches together are the
single process's batch, DDP averages the gradients, and torchmetrics reduces the validation metrics over
both ranks. The lesson is the SimpleCNN (no dropout) on a class-per-folder JPEG dataset, without
augmentation (random draws are per rank, so with them the runs could not match), with the lesson's
figure callbacks on, as shipped. tests/experiments/test_ddp_lessons.py runs every config under DDP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from experiments.faults import rank_seed
from experiments.main import main
from tests.conftest import EVERY_EPOCH, QUIET, REPO, config, free_port, subprocess_env
from tests.image_data import write_image_folder, write_mnist

TIMEOUT = 300


def run_args(data_dir: Path, name: str, batch_size: int) -> list[str]:
    return [
        "fit",
        "--config", config("simple_cnn"),
        "--data", "datamodules.ImageFolderDataModule",
        "--data.data_dir", str(data_dir),
        "--data.val_split", "16",
        "--data.batch_size", str(batch_size),
        "--data.random_crop_padding", "0",
        "--data.horizontal_flip", "false",
        "--model.num_classes", "3",
        "--trainer.max_epochs", "3",
        "--trainer.logger.init_args.name", name,
        *QUIET,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    # One thread per process: two processes share this machine's cores.
    return subprocess_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_dir(root: Path, name: str) -> Path:
    versions = sorted((root / "lightning_logs" / name).iterdir())
    assert [v.name for v in versions] == ["version_0"], "a second rank created its own run folder"
    return versions[0]


def assert_same_as_single(root: Path, name: str) -> None:
    single = torch.load(run_dir(root, "single") / "checkpoints" / "last.ckpt", weights_only=True)
    multi_dir = run_dir(root, name)
    multi = torch.load(multi_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert multi["global_step"] == single["global_step"] == 3 * 2  # 32 training images, global batch 16
    for key, tensor in single["state_dict"].items():
        # Same batches, gradients averaged in another order: equal up to float rounding.
        torch.testing.assert_close(multi["state_dict"][key], tensor, rtol=1e-4, atol=1e-6, msg=key)
    # val/acc and val/loss were reduced over both ranks' halves of the validation set.
    single_cb = next(v for k, v in single["callbacks"].items() if "val/acc" in k)
    multi_cb = next(v for k, v in multi["callbacks"].items() if "val/acc" in k)
    assert multi_cb["current_score"] == single_cb["current_score"]
    # Rank 0 alone writes: one TensorBoard file, one checkpoint folder, one config.
    assert len(list(multi_dir.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (multi_dir / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert (multi_dir / "config.yaml").is_file()
    # The figures rank 0 drew from both ranks' samples are those of one process.
    for figure in ("val_predictions.png", "confusion_matrix.png"):
        single_png = run_dir(root, "single") / "figures" / figure
        assert (multi_dir / "figures" / figure).read_bytes() == single_png.read_bytes(), figure


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the data and the one-process reference run (batch 16)."""
    root = tmp_path_factory.mktemp("distributed")
    write_image_folder(root / "data", splits={"train": 16, "test": 4}, size=32)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        # On the CPU, as the multi-process runs are: a GPU's arithmetic differs from the CPU's.
        main([*run_args(root / "data", "single", batch_size=16), "--trainer.accelerator", "cpu"])
    finally:
        os.chdir(cwd)
    return root


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(single_run: Path) -> None:
    command = [
        sys.executable, "-m", "experiments",
        *run_args(single_run / "data", "ddp", batch_size=8),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=single_run, env=environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout
    assert_same_as_single(single_run, "ddp")


def test_torchrun_two_nodes_match_one_process(single_run: Path) -> None:
    port = free_port()
    nodes = []
    for node_rank in (0, 1):
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node_rank),
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "experiments",
            *run_args(single_run / "data", "torchrun", batch_size=8),
            "--trainer.accelerator", "cpu", "--trainer.num_nodes", "2", "--trainer.devices", "1",
            "--trainer.strategy", "ddp",
        ]  # fmt: skip
        nodes.append(
            subprocess.Popen(
                command,
                cwd=single_run,
                env=environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=TIMEOUT)[0])
    finally:
        for node in nodes:
            node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    assert_same_as_single(single_run, "torchrun")


class FailOnRank(Callback):
    """On global rank ``rank``, before ``batch`` of ``epoch``: raise (``how="raise"``) or stop answering
    (``how="hang"``: sleep, as a process stuck in I/O or a deadlock would)."""

    def __init__(self, rank: int, epoch: int, batch: int, how: str) -> None:
        self.rank, self.epoch, self.batch, self.how = rank, epoch, batch, how

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int
    ) -> None:
        if (trainer.global_rank, trainer.current_epoch, batch_idx) != (self.rank, self.epoch, self.batch):
            return
        if self.how == "raise":
            raise RuntimeError(f"rank {self.rank} fails on purpose")
        time.sleep(3600)


COLLECTIVE_TIMEOUT = 15  # seconds, set on the command line over the ddp preset's minutes


def living_processes(group: int, wait: float = 10.0) -> list[str]:
    """Command lines of the processes of process group ``group`` still running after up to ``wait``
    seconds; exited ones that nobody reaped (zombies: on this machine PID 1 reaps no orphan) do not count."""
    deadline = time.monotonic() + wait
    while True:
        living = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            state, pgid = fields[0], int(fields[2])
            if pgid == group and state != "Z":
                living.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        if not living or time.monotonic() > deadline:
            return living
        time.sleep(0.5)


@pytest.mark.parametrize("how", ["raise", "hang"])
def test_a_failing_rank_ends_the_whole_job_with_an_error_and_keeps_the_checkpoint(
    tmp_path: Path, how: str
) -> None:
    failure = {
        "class_path": f"{__name__}.FailOnRank",
        "init_args": {"rank": 1, "epoch": 1, "batch": 1, "how": how},
    }
    command = [
        sys.executable, "-m", "experiments", "fit",
        "--config", config("linear_regression"),
        "--config", str(REPO / "configs" / "trainer" / "ddp.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy.init_args.timeout", f"0:00:{COLLECTIVE_TIMEOUT}",
        "--data.n_points", "40", "--data.batch_size", "8",  # 32 training points: 2 steps an epoch
        "--trainer.max_epochs", "3", EVERY_EPOCH,
        f"--trainer.callbacks+={json.dumps(failure)}",
        *QUIET,
    ]  # fmt: skip
    started = time.monotonic()
    # A session of its own, so that a process left behind can be found, and killed, by its group.
    job = subprocess.Popen(
        command, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output = job.communicate(timeout=COLLECTIVE_TIMEOUT + 120)[0]
    except subprocess.TimeoutExpired:
        pytest.fail(f"rank 1 {how}s and the job still runs after {time.monotonic() - started:.0f} s")
    finally:
        left = living_processes(job.pid)
        if left:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode not in (0, None), output[-3000:]
    assert not left, f"processes of the job outlived it: {left}"
    if how == "raise":
        assert "rank 1 fails on purpose" in output
    else:
        assert f"{COLLECTIVE_TIMEOUT * 1000}ms" in output, output[
            -3000:
        ]  # gloo's "Timed out waiting 15000ms"
    # The checkpoint of the last finished epoch is whole: it loads, at the end of epoch 0.
    runs = list((tmp_path / "lightning_logs" / "linear_regression").iterdir())
    assert len(runs) == 1
    checkpoint = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2 and checkpoint["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


class NaNInputOnRank(Callback):
    """Fills rank ``rank``'s inputs with NaN at ``batch`` of ``epoch``: a NaN loss on that rank only."""

    def __init__(self, rank: int, epoch: int, batch: int) -> None:
        self.rank, self.epoch, self.batch = rank, epoch, batch

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int
    ) -> None:
        if (trainer.global_rank, trainer.current_epoch, batch_idx) == (self.rank, self.epoch, self.batch):
            batch[0].fill_(float("nan"))


def test_a_nan_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path: Path) -> None:
    poison = {"class_path": f"{__name__}.NaNInputOnRank", "init_args": {"rank": 1, "epoch": 1, "batch": 1}}
    command = [
        sys.executable, "-m", "experiments", "fit",
        "--config", config("linear_regression"),
        "--config", str(REPO / "configs" / "trainer" / "ddp.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--data.n_points", "40", "--data.batch_size", "8", "--trainer.max_epochs", "3", EVERY_EPOCH,
        f"--trainer.callbacks+={json.dumps(poison)}",
        *QUIET,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    # Both ranks stop with the guard's error (status 2); Lightning's watch over rank 1 may kill rank 0
    # first, once rank 1 has exited (SIGKILL). Without the agreement rank 0 would go on to the next
    # all-reduce and fail there with a traceback ("Connection closed by peer").
    assert done.returncode in (2, -signal.SIGKILL), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    # On several processes the flags are read back every 50 steps and before each checkpoint: the bad
    # step is still the one named, found when epoch 1's checkpoint was about to be written.
    where = "at epoch 1, batch 1 (global step 4, found before writing a checkpoint)"
    assert errors and all(where in line for line in errors), errors
    run = tmp_path / "lightning_logs" / "linear_regression" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.gpu
def test_ddp_on_one_gpu_fits_and_predicts_with_the_lessons_callbacks(tmp_path: Path) -> None:
    """The ddp preset on one GPU: one process, NCCL, the MNIST lesson's figures and its predictions."""
    data = write_mnist(tmp_path / "mnist")
    lesson = ["--config", config("mnist_convnet"), "--data.data_dir", str(data), "--data.val_split", "16"]
    ddp = ["--config", str(REPO / "configs" / "trainer" / "ddp.yaml"), "--trainer.accelerator", "gpu"]
    ddp += ["--trainer.devices", "1", *QUIET]
    for subcommand, extra in (("fit", ["--trainer.max_epochs", "1"]), ("predict", ["--ckpt_path", "last"])):
        done = subprocess.run(
            [sys.executable, "-m", "experiments", subcommand, *lesson, *ddp, *extra],
            cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "lightning_logs" / "mnist_convnet"
    assert (runs / "version_0" / "figures" / "confusion_matrix.png").is_file()
    assert torch.load(runs / "version_0" / "predict" / "predictions.pt").shape == (32, 10)


class RecordDraws(Callback):
    """Writes the first numbers this rank's generator draws in training to ``draws<rank>.json``."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        Path(f"draws{trainer.global_rank}.json").write_text(json.dumps(torch.rand(4).tolist()))


def test_each_rank_draws_from_a_stream_of_its_own(tmp_path: Path) -> None:
    # Else every rank would crop, flip and drop out alike on its own images.
    record = f"--trainer.callbacks+={json.dumps({'class_path': f'{__name__}.RecordDraws'})}"
    command = [
        sys.executable, "-m", "experiments", "fit", "--config", config("linear_regression"),
        "--trainer.max_epochs", "1", record, *QUIET,
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"draws{r}.json").read_text()) for r in (0, 1))
    # Lightning reseeds every rank with the run's seed when the processes join; rank 1 then moves to its
    # own seed. Nothing else draws before training starts in this lesson.
    expected = [
        torch.rand(4, generator=torch.Generator().manual_seed(s)).tolist() for s in (42, rank_seed(42, 1))
    ]
    assert [rank0, rank1] == expected


def test_ddp_resumes_exactly_with_augmentation_dropout_and_figures(tmp_path: Path) -> None:
    """Killed (SIGKILL, every rank) after the first epoch's checkpoint and resumed, a 2-process run with
    shuffling, random shifts, dropout and the lesson's figure callbacks on ends bit-identical to one that
    never stopped: every rank's random state is in the checkpoint and each rank restores its own."""
    data = write_mnist(tmp_path / "mnist")

    def fit(name: str, *extra: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "experiments", "fit", "--config", config("mnist_convnet"),
            "--data.data_dir", str(data), "--data.val_split", "16", "--data.batch_size", "8",
            "--data.random_crop_padding", "2", "--trainer.max_epochs", "3", "--trainer.deterministic", "true",
            "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.logger.init_args.name", name, EVERY_EPOCH, *QUIET, *extra,
        ]  # fmt: skip
        return subprocess.run(
            command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=TIMEOUT
        )

    whole = fit("whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    kill = {
        "class_path": "tests.experiments.test_faults.SignalAt",
        "init_args": {"name": "SIGKILL", "epoch": 1, "batch": 1},
    }
    cut = fit("cut", f"--trainer.callbacks+={json.dumps(kill)}")
    assert cut.returncode == -signal.SIGKILL, cut.stderr[-3000:]
    resumed = fit("cut", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = tmp_path / "lightning_logs"
    reference = torch.load(runs / "whole" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    ours = torch.load(
        runs / "cut" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True
    )  # resumed in place
    assert ours["global_step"] == reference["global_step"] == 3 * 3  # 48 training images, global batch 16
    for key, tensor in reference["state_dict"].items():
        torch.testing.assert_close(ours["state_dict"][key], tensor, rtol=0, atol=0, msg=key)
    assert len(ours["rng_states"]) == 2  # each rank's, gathered by rank 0
