"""Surviving faults: atomic checkpoint writes, exact resumption, NaN losses and SLURM preemption.

Every experiment carries these (the CLI adds them), so a run can be killed at any moment and resumed:

- ``AtomicCheckpointIO`` writes each checkpoint to a temporary file in the same folder, flushes it to
  disk and renames it into place, so a write that is interrupted (a kill, a full disk, a node crash)
  leaves the previous file intact. Lightning's own writer goes through fsspec, which stages the file in
  the system temporary folder and moves it with ``shutil.move``: a copy, not a rename, whenever that
  folder is on another file system (a node's local /tmp and a shared checkpoint folder), and no fsync.
- ``ExactResume`` gives each data-parallel rank its own random stream, stores every rank's random
  number generator states in every checkpoint and, when a run resumes mid-epoch, makes the in-memory
  loader skip the batches the checkpoint had already trained on: a resumed run draws the same batches,
  augmentations and dropout masks as one that never stopped.
- ``FiniteLossGuard`` stops the run at the first NaN or infinite training loss, naming the step, before
  anything is saved, so the last good checkpoint is the newest one on disk; on every rank at once.
- ``EndTogether`` ends the processes rank 0 launched for the other ranks when rank 0 fails, so a
  failed data-parallel job leaves none of them behind.
- ``SlurmRequeue`` replaces Lightning's SIGUSR1 handler on SLURM. Lightning saves the HPC checkpoint
  inside the signal handler, wherever the main thread happens to be (possibly halfway through an
  optimiser step); here the handler only raises a flag and the checkpoint is written after the step
  that is running completes, then the job is requeued and the process exits.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from core.distributed import gather_objects
from core.errors import ExperimentError
from datamodules.tensors import TensorBatches


class NonFiniteLossError(ExperimentError):
    """The training loss became NaN or infinite."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that never leaves a half-written checkpoint under the final name.

    The checkpoint is serialised into a temporary file beside the target (same file system, so the
    rename is atomic), flushed to disk, then renamed over the target. Paths on remote file systems
    (``s3://`` and the like) fall back to Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options}")
        fs = get_filesystem(path)
        if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Give ``trainer`` an ``AtomicCheckpointIO`` unless a plugin chose another checkpoint format."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, position, has_gauss, gauss = np.random.get_state()
        # As a tensor and plain numbers: a checkpoint must load with torch.load(weights_only=True).
        states["numpy"] = (name, torch.from_numpy(keys.copy()), position, has_gauss, gauss)
    except ImportError:  # numpy is optional for torch; nothing of ours draws from it then
        pass
    return states


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)  # every device's generator too
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream in a run seeded with ``seed``: rank 0 keeps ``seed``."""
    return (seed + rank * 0x9E3779B97F4A7C15) % 2**63  # a large odd step: no two ranks share a seed


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        import numpy as np

        name, keys, position, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy(), position, has_gauss, gauss))


class ExactResume(Callback):
    """Gives each data-parallel rank a random stream of its own, and makes a resumed fit continue exactly
    where the checkpoint left it.

    Every rank runs ``seed_everything`` with the run's seed, so the ranks of a data-parallel run would
    draw the same augmentations and dropout masks for their different samples: every rank's first image
    cropped and flipped alike. When fit starts, each rank other than 0 reseeds from the run's seed and its
    rank (``rank_seed``); rank 0 keeps the run's stream, so one process computes what it always has.

    Lightning restores weights, optimiser, schedulers and loop counters. Two things it leaves out:

    - the random number generators, which draw augmentations and dropout masks. Every rank's states are
      saved in each checkpoint (gathered to rank 0, which writes it) and each rank restores its own.
    - the position inside an epoch. Lightning knows how many batches of the interrupted epoch were
      trained; an in-memory loader (``TensorBatches``, whose order is a function of seed and epoch)
      is told to start at the next one. Other loaders restart the epoch, and Lightning warns.
    """

    KEY = "rng_states"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # After the process group is up (ranks known) and before a checkpoint is restored over it.
        if stage == "fit" and trainer.global_rank > 0:
            _seed_all(rank_seed(torch.initial_seed(), trainer.global_rank))

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        # Every rank saves a checkpoint (rank 0 writes it), so every rank takes part in the gather.
        every_rank = gather_objects(trainer, _rng_states())
        checkpoint[self.KEY] = every_rank if every_rank is not None else []

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get(self.KEY)
        if saved is None or trainer.state.fn != "fit":
            return
        # A list by rank; a checkpoint of before that holds one dict, rank 0's.
        per_rank = saved if isinstance(saved, list) else [saved]
        if trainer.global_rank < len(per_rank):
            _set_rng_states(per_rank[trainer.global_rank])
        # A rank the checkpoint had none for (resumed on more processes) keeps the stream setup gave it.

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Loop counters are restored by now. A checkpoint written at a batch end of an unfinished epoch
        # (an HPC checkpoint) records that batch as processed; Lightning counts it completed only later.
        # A loader is iterated after this hook, so telling it where to start here is in time.
        if not trainer.fit_loop.restarted_mid_epoch:
            return
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if not 0 < done < trainer.num_training_batches:
            return  # nothing trained yet, or saved at the epoch's last batch: Lightning starts the next one
        given = trainer.train_dataloader  # one loader, or a list or dict of them
        loaders = list(given.values()) if isinstance(given, Mapping) else given
        loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
        if loaders and all(isinstance(loader, TensorBatches) for loader in loaders):
            for loader in loaders:
                loader.resume_at(done)
            rank_zero_info(f"Resuming epoch {trainer.current_epoch} at batch {done}")


class FiniteLossGuard(Callback):
    """Stops training at the first NaN or infinite loss, with the step in the message.

    The check reads the loss back from the device every ``every_n_steps`` training steps (a host sync);
    raise it on a GPU where that costs. The error is raised before any checkpoint of the bad state can
    be written, so the newest checkpoint on disk is the last good one. On several processes the ranks
    agree at each check (one all-reduce), and all stop at the step where any loss is not finite.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 (0 turns the check off), got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.every_n_steps or batch_idx % self.every_n_steps:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = loss.detach().float()
        finite_here = bool(torch.isfinite(value).all())
        # Every rank stops at the same step: a rank that stopped alone would leave the others waiting in
        # the next gradient all-reduce.
        finite = finite_here
        if trainer.world_size > 1:
            finite = trainer.strategy.reduce_boolean_decision(finite_here, all=True)
        if finite:
            return
        if finite_here:
            shown = "non-finite on another process"
        else:
            shown = value.item() if value.numel() == 1 else "non-finite"
        raise NonFiniteLossError(
            f"training loss is {shown} at epoch {trainer.current_epoch}, batch {batch_idx} "
            f"(global step {trainer.global_step}); stopped without saving, so the newest checkpoint is the "
            f"last good one: lower the learning rate, set --trainer.gradient_clip_val, or use bf16-mixed "
            f"instead of 16-mixed"
        )


class EndTogether(Callback):
    """When this process fails, the processes it launched for the other ranks end with it.

    Started from a plain command, ``--trainer.strategy ddp`` makes rank 0 launch ranks 1..N-1 as its child
    processes. Lightning 2.6 stops them when one of them fails or on Ctrl-C, but when rank 0 itself fails
    (an error, a collective that timed out because a rank stopped answering) it exits and leaves them
    running: blocked in their next collective or stuck where they hung, holding their devices. On any
    exception this gives them ``grace`` seconds to end on their own (a failure every rank meets, such as a
    NaN loss, lets each print its own message), then kills those left. torchrun and SLURM's srun stop a
    failed job's processes themselves (their ranks have no children here).

    Args:
        grace: Seconds the other ranks get to end on their own.
    """

    def __init__(self, grace: float = 10.0) -> None:
        self.grace = grace

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        launcher = trainer.strategy.launcher
        if launcher is None:
            return
        # The children of Lightning 2.6's _SubprocessScriptLauncher (no public accessor;
        # tests/experiments/test_lightning_internals.py fails if it moves); other launchers have none.
        children = getattr(launcher, "procs", None) or []
        deadline = time.monotonic() + self.grace
        while any(child.poll() is None for child in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        launcher.kill(signal.SIGKILL)  # SIGTERM does not end a process blocked in a collective


class SlurmRequeue(Callback):
    """On SLURM, SIGUSR1 (``#SBATCH --signal=SIGUSR1@90``) saves a checkpoint after the current step,
    requeues the job and exits; the requeued job resumes from that checkpoint.

    Active only when Lightning detects a SLURM job whose environment has ``auto_requeue`` on (the
    default); it then turns off Lightning's own handler for the same signal. The checkpoint goes where
    Lightning looks for it on the next start, ``<default_root_dir>/hpc_ckpt_<n>.ckpt``: a ``fit`` with no
    ``--ckpt_path`` on SLURM resumes from the newest one.
    """

    def __init__(self, scontrol: str = "scontrol") -> None:
        self.scontrol = scontrol
        self._environment: SLURMEnvironment | None = None
        self._signal: int | None = None
        self._previous: Any = None
        self._requested = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning 2.6 has no public accessor for a one-device run's cluster environment (a strategy has
        # one only when it is parallel); tests/experiments/test_lightning_internals.py checks it is there.
        environment = trainer._accelerator_connector.cluster_environment
        if stage != "fit" or not isinstance(environment, SLURMEnvironment) or not environment.auto_requeue:
            return
        self._environment = environment
        self._signal = environment.requeue_signal or signal.SIGUSR1
        # Lightning registers its handlers after `setup`; with auto_requeue off it leaves this signal to us.
        environment.auto_requeue = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._signal is not None:
            self._previous = signal.signal(self._signal, self._flag)

    def _flag(self, signum: int, frame: FrameType | None) -> None:
        self._requested = True

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._signal is None or not self._agreed(trainer):
            return
        # Where Lightning 2.6 looks for it on the next start (no public API names it; checked in
        # tests/experiments/test_lightning_internals.py).
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        rank_zero_info(f"Requeue signal: checkpoint written to {path}")
        if trainer.is_global_zero:
            self._requeue()
        raise SIGTERMException()

    def _agreed(self, trainer: Trainer) -> bool:
        # Every rank must stop at the same step; rank 0's flag decides.
        flag = torch.tensor([int(self._requested)], device=trainer.strategy.root_device)
        return bool(trainer.strategy.broadcast(flag, src=0).item())

    def _requeue(self) -> None:
        array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        job_id = f"{array_job}_{task}" if array_job else os.environ["SLURM_JOB_ID"]
        try:
            result = subprocess.run([self.scontrol, "requeue", job_id], check=False).returncode
        except FileNotFoundError:
            result = -1
        if result == 0:
            rank_zero_info(f"Requeued SLURM job {job_id}")
        else:
            rank_zero_warn(
                f"`{self.scontrol} requeue {job_id}` failed ({result}); resubmit the job to resume it"
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._signal is not None and self._previous is not None:
            signal.signal(self._signal, self._previous)
        if self._environment is not None:
            self._environment.auto_requeue = True
        self._signal, self._previous, self._environment, self._requested = None, None, None, False


def slurm_topology(num_nodes: int, devices: Any) -> tuple[int, Any]:
    """Nodes and processes per node of this SLURM job, for settings left at their defaults (1, "auto").

    Lightning takes them from the Trainer's arguments and only checks them against SLURM's, so a
    config written for one node would fail (or hang) on an allocation of several. Outside SLURM, or
    when a value was set, the values are returned unchanged.
    """
    if not SLURMEnvironment.detect():
        return num_nodes, devices
    nodes = os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES")
    if num_nodes == 1 and nodes and int(nodes) > 1:
        num_nodes = int(nodes)
    per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "")
    # SLURM writes e.g. "4" or, for uneven layouts, "4(x2),2"; the first count is this layout's.
    if devices == "auto" and (count := per_node.split("(")[0].split(",")[0]).isdigit():
        devices = int(count)
    return num_nodes, devices
