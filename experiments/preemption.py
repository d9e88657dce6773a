"""A fit stopped from outside, cleanly: SIGTERM, and on SLURM the requeue signal.

Schedulers take machines back. Slurm's ``#SBATCH --signal=SIGUSR1@90`` warns a job 90 s before its time
limit; schedulers, ``kill`` and Kubernetes end a process with SIGTERM. Lightning 2.6 handles both itself,
less well: it writes the SLURM checkpoint inside the signal handler, wherever the main thread happens to
be (possibly halfway through an optimiser step); its SIGTERM handler broadcasts from inside the handler
(a collective the other ranks are not in) and a SIGTERM'd fit exits with status 0, as if it had finished.
Here the handlers only raise a flag; after the step that is running, every rank agrees on it (one
all-reduce, on several processes only), a checkpoint of that step is written, and the process exits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from core.domains import NonEmptyText
from experiments.callbacks import LastCheckpoint

#: The exit status of a fit stopped by SIGTERM: 128 + 15, what a process killed by the signal reports.
SIGTERM_STATUS = 128 + signal.SIGTERM


class Preemption(Callback):
    """SIGTERM, and on SLURM the requeue signal, stop a fit after its current step with a checkpoint.

    - SIGTERM: the run's ``last.ckpt`` is written at that step and the process exits with status 143, so
      shells, schedulers and sweep drivers see that the run did not finish; ``--ckpt_path last``
      resumes it exactly, in the middle of the epoch.
    - The requeue signal on SLURM (``#SBATCH --signal=SIGUSR1@90``), when Lightning detects a SLURM job
      whose environment has ``auto_requeue`` on (the default): ``hpc_ckpt_<n>.ckpt`` is written where
      Lightning looks for it on the next start, the job is requeued (``scontrol requeue``) and the process
      exits; the requeued job (the same command, no ``--ckpt_path``) resumes from it.

    Args:
        scontrol: The program that requeues the job (not empty).
    """

    def __init__(self, scontrol: NonEmptyText = "scontrol") -> None:
        self.scontrol = scontrol
        self._environment: SLURMEnvironment | None = None
        self._requeue_signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._received: dict[int, bool] = {}
        #: What stopped the fit (``SIGTERM`` or ``requeue``), for its manifest (experiments/manifest.py).
        self.stopped_by: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.stopped_by = None
        # Lightning 2.6 has no public accessor for a one-device run's cluster environment (a strategy has
        # one only when it is parallel); tests/experiments/test_lightning_internals.py checks it is there.
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            self._environment = environment
            self._requeue_signal = environment.requeue_signal or signal.SIGUSR1
            # Lightning registers its handlers after `setup`; with auto_requeue off it leaves this signal.
            environment.auto_requeue = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After Lightning registered its own handlers (they return at the run's end with the originals).
        for signum in (signal.SIGTERM, self._requeue_signal):
            if signum is not None:
                self._received[signum] = False
                self._previous[signum] = signal.signal(signum, self._flag)

    def _flag(self, signum: int, frame: FrameType | None) -> None:
        self._received[signum] = True

    def _agreed(self, trainer: Trainer) -> tuple[bool, bool]:
        """(SIGTERM, requeue) as every rank sees them: a signal any rank received stops them all, at the
        same step."""
        flags = [
            self._received.get(signal.SIGTERM, False),
            self._received.get(self._requeue_signal or -1, False),
        ]
        if trainer.world_size > 1:
            both = torch.tensor(flags, dtype=torch.int32, device=trainer.strategy.root_device)
            torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
            flags = [bool(v) for v in both.tolist()]
        return flags[0], flags[1]

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._received:
            return
        terminated, requeue = self._agreed(trainer)
        if requeue:
            # Where Lightning 2.6 looks for it on the next start (no public API names it; checked in
            # tests/experiments/test_lightning_internals.py).
            path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
            trainer.save_checkpoint(path, weights_only=False)
            rank_zero_info(f"Requeue signal: checkpoint written to {path}")
            if trainer.is_global_zero:
                self._requeue()
            self.stopped_by = "requeue"
            raise SIGTERMException()
        if terminated:
            where = f"epoch {trainer.current_epoch}, batch {batch_idx} (global step {trainer.global_step})"
            path = last_checkpoint_path(trainer)
            if path is not None:
                trainer.save_checkpoint(path, weights_only=False)
                rank_zero_info(f"SIGTERM: stopped after {where}; resume with --ckpt_path last ({path})")
            else:
                rank_zero_info(f"SIGTERM: stopped after {where}; no last_checkpoint to write")
            self.stopped_by = "SIGTERM"
            raise SIGTERMException(SIGTERM_STATUS)

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
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if self._environment is not None:
            self._environment.auto_requeue = True
        self._environment, self._requeue_signal, self._previous, self._received = None, None, {}, {}


def last_checkpoint_path(trainer: Trainer) -> Path | None:
    """Where the run's ``LastCheckpoint`` writes ``last.ckpt`` (None without one)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint) and callback.dirpath is not None:
            return Path(callback.dirpath) / f"{callback.filename}{callback.FILE_EXTENSION}"
    return None


def hpc_resume_checkpoint(default_root_dir: str | os.PathLike[str] | None) -> Path | None:
    """The requeue checkpoint a run on SLURM without ``--ckpt_path`` resumes from, found as Lightning 2.6
    finds it (``_CheckpointConnector._hpc_resume_path``, no public API; tests/experiments/
    test_untrusted_checkpoints.py compares the two): ``hpc_ckpt_<n>.ckpt`` of the highest ``n`` in the
    trainer's ``default_root_dir`` (the working folder when unset). None outside SLURM, when there is
    none, or for a folder on a remote file system (Lightning still reads that one weights-only)."""
    if not SLURMEnvironment.detect() or "://" in str(default_root_dir or ""):
        return None
    folder = Path(default_root_dir) if default_root_dir else Path.cwd()
    if not folder.is_dir():
        return None
    # Lightning's reading of a name: the digits after "hpc_ckpt_", whatever else the name holds.
    versions = [re.sub("[^0-9]", "", entry.name.split("hpc_ckpt_")[-1]) for entry in folder.iterdir()
                if "hpc_ckpt_" in entry.name]  # fmt: skip
    numbers = [int(digits) for digits in versions if digits]
    path = folder / f"hpc_ckpt_{max(numbers)}.ckpt" if numbers else None
    return path if path is not None and path.is_file() else None


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
