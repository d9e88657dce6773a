"""Multi-process runs on this CPU: DDP with 2 processes on gloo, and a two-node run launched by torchrun.

Each must compute what one process computes with the same global batch (batch 8 on each of 2 ranks
versus 16 in one): ``TensorBatches`` shards an epoch so that the ranks' batches together are the single
process's batch, DDP averages the gradients, and torchmetrics reduces the validation metrics over both
ranks. The lesson is the SimpleCNN (no dropout) on a class-per-folder JPEG dataset, without
augmentation: random draws are per rank, so with them the runs could not match.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.cli import main
from tests.conftest import QUIET, REPO, config, free_port
from tests.image_data import write_image_folder

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
        "--trainer.callbacks=[]",
        "--trainer.logger.init_args.name", name,
        *QUIET,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    # One thread per process: two processes share this machine's cores.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_dir(root: Path, name: str) -> Path:
    versions = sorted((root / "lightning_logs" / name).iterdir())
    assert [v.name for v in versions] == ["version_0"], "a second rank created its own run folder"
    return versions[0]


def assert_same_as_single(root: Path, name: str) -> None:
    single = torch.load(run_dir(root, "single") / "checkpoints" / "last.ckpt", weights_only=False)
    multi_dir = run_dir(root, name)
    multi = torch.load(multi_dir / "checkpoints" / "last.ckpt", weights_only=False)
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


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the data and the one-process reference run (batch 16)."""
    root = tmp_path_factory.mktemp("distributed")
    write_image_folder(root / "data", splits={"train": 16, "test": 4}, size=32)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        main(run_args(root / "data", "single", batch_size=16))
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
