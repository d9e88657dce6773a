"""Surviving faults: exact resumption, NaN losses, and runs that fail.

Every experiment carries these (the command adds them), so a run can be killed at any moment and
resumed:

- ``ExactResume`` gives each data-parallel rank its own random stream, stores every rank's random
  number generator states in every checkpoint and, when a run resumes mid-epoch, makes the in-memory
  loader skip the batches the checkpoint had already trained on: a resumed run draws the same batches,
  augmentations and dropout masks as one that never stopped.
- ``FiniteLossGuard`` stops the run at a NaN or infinite training loss, naming the step, before a
  checkpoint of it is written, so the last good checkpoint is the newest one on disk; on every rank.
- ``FailedRun``: when a run fails, the processes rank 0 launched for the other ranks end with it (a
  failed data-parallel job leaves none of them behind), and a run that failed before it trained a step
  leaves no run folder.

Checkpoint files written whole or not at all are experiments/checkpoint_io.py's; signals that stop a run
from outside (SIGTERM, SLURM's requeue) are experiments/preemption.py's.
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from core.distributed import gather_objects, run_dir
from core.domains import NonNegativeInt
from core.errors import ExperimentError
from datamodules.tensors import TensorBatches


class NonFiniteLossError(ExperimentError):
    """The training loss became NaN or infinite."""


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
            # Lightning warns, when the epoch loop starts, that a loader without `state_dict` cannot
            # resume mid-epoch; these just did. Silenced until the first batch, for this warning only.
            self._quiet = warnings.catch_warnings()
            self._quiet.__enter__()
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self._end_quiet()

    def on_exception(self, *args: Any, **kwargs: Any) -> None:
        self._end_quiet()

    def _end_quiet(self) -> None:
        if getattr(self, "_quiet", None) is not None:
            self._quiet.__exit__(None, None, None)
            self._quiet = None


class FiniteLossGuard(Callback):
    """Stops training at a NaN or infinite loss, before a checkpoint of the bad state is written.

    Every step's loss is checked: on the CPU as a Python float (free there), on an accelerator on the
    device without waiting for it (the first bad step and its loss are kept there). Every
    ``every_n_steps`` training steps, and before any checkpoint of a fit is written, the result is read
    (on an accelerator, a host sync). A non-finite loss at any step stops the run then, naming that
    step, so every checkpoint on disk is of an earlier, finite step. On several processes the ranks
    agree at each check (one all-reduce of the first bad step), and all stop together.

    Args:
        every_n_steps: Training steps between checks (>= 0); None (the default) checks every step in one CPU
            process and every 50 steps otherwise (each check waits for the device, or for the other
            ranks); 0 turns the guard off.
    """

    #: Steps between checks when ``every_n_steps`` is None and a check costs a sync.
    SYNC_EVERY = 50

    def __init__(self, every_n_steps: NonNegativeInt | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 (0 turns the check off), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._every = every_n_steps or 0
        self._reset()

    def _reset(self) -> None:
        #: (epoch, batch, global step) of each training step since the last check
        self._window: list[tuple[int, int, int]] = []
        # Index into _window of the first bad step (or -1) and its loss: tensors on the device, numbers on
        # the CPU, where reading a value costs nothing.
        self._first_bad: torch.Tensor | int | None = None
        self._bad_loss: torch.Tensor | float | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset()
        self._every = self.every_n_steps
        if self._every is None:
            alone_on_cpu = trainer.world_size == 1 and pl_module.device.type == "cpu"
            self._every = 1 if alone_on_cpu else self.SYNC_EVERY

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._every:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._window.append((trainer.current_epoch, batch_idx, trainer.global_step))
        if loss.device.type == "cpu":
            # Nothing to overlap with on the CPU: a Python float costs less than the device-side flags.
            value = float(loss.detach().sum())
            if not math.isfinite(value) and self._first_bad is None:
                self._first_bad, self._bad_loss = len(self._window) - 1, value
        else:
            self._flag_on_device(loss.detach())
        # By steps, not batch indices: those start again each epoch, and a check every N of them would
        # skip an epoch's batches past the last multiple of N.
        if len(self._window) >= self._every:
            self._check(trainer, "")

    def _flag_on_device(self, loss: torch.Tensor) -> None:
        value = loss.float().sum()  # a NaN or an inf anywhere stays one
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=value.device)
            self._bad_loss = torch.zeros((), device=value.device)
        # Element-wise on the device, with Python scalars: nothing waits for the step to finish.
        newly = ~torch.isfinite(value) & (self._first_bad < 0)
        self._first_bad = torch.where(newly, len(self._window) - 1, self._first_bad)
        self._bad_loss = torch.where(newly, value, self._bad_loss)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        # Called while the checkpoint is put together, before a byte of it is written; also for the
        # checkpoints written at validation's end, and by the preemption handlers.
        if self._every and trainer.state.fn == TrainerFn.FITTING:
            self._check(trainer, ", found before writing a checkpoint")

    def _check(self, trainer: Trainer, when: str) -> None:
        first = -1 if self._first_bad is None else int(self._first_bad)
        loss = None if self._bad_loss is None else float(self._bad_loss)
        window = self._window
        self._reset()
        # Every rank stops at the same step: a rank that stopped alone would leave the others waiting in
        # the next gradient all-reduce. One all-reduce gives every rank the first bad step of any rank
        # (the ranks step together, so the step names the same batch everywhere).
        never = 2**62
        mine = window[first][2] if first >= 0 else never
        step = mine
        if trainer.world_size > 1:
            first_step = torch.tensor(mine, dtype=torch.long, device=trainer.strategy.root_device)
            step = int(trainer.strategy.reduce(first_step, reduce_op="min"))
        if step == never:
            return
        if step == mine:
            epoch, batch, _ = window[first]
            what = str(loss)
        else:
            epoch, batch = next(((e, b) for e, b, s in window if s == step), (trainer.current_epoch, -1))
            what = "non-finite on another process"
        raise NonFiniteLossError(
            f"training loss is {what} at epoch {epoch}, batch {batch} (global step {step}{when}); stopped "
            "before it was saved, so every checkpoint on disk is of an earlier step: lower the learning "
            "rate, set --trainer.gradient_clip_val, or use bf16-mixed instead of 16-mixed"
        )


class FailedRun(Callback):
    """What happens when a run fails: the processes rank 0 launched end with it, and a run that trained
    nothing leaves no folder behind.

    - Started from a plain command, ``--trainer.strategy ddp`` makes rank 0 launch ranks 1..N-1 as its
      child processes. Lightning 2.6 stops them when one of them fails or on Ctrl-C, but when rank 0
      itself fails (an error, a collective that timed out because a rank stopped answering) it exits and
      leaves them running: blocked in their next collective or stuck where they hung, holding their
      devices. On any exception this gives them ``grace`` seconds to end on their own (a failure every
      rank meets, such as a NaN loss, lets each print its own message), then kills those left. torchrun
      and SLURM's srun stop a failed job's processes themselves (their ranks have no children here).
    - A run that fails before it has trained a step or written a checkpoint (a data error at setup)
      would leave an empty ``version_N`` that shows up in TensorBoard and among the runs: its folder is
      removed (and the experiment's folder and the log root, if the run made them). Folders that existed
      before the command (``existing``) are never touched, nor is a run that trained (its logs show how
      it failed).

    Args:
        existing: The log root, experiment and run folders there were when the command started.
        grace: Seconds the other ranks get to end on their own.
    """

    def __init__(self, existing: set[Path], grace: float = 10.0) -> None:
        self.existing = {path.resolve() for path in existing}
        self.grace = grace
        self._trained = False

    def on_train_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._trained = True

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.end_launched_ranks(trainer)
        self.drop_run_folder(trainer)

    def end_launched_ranks(self, trainer: Trainer) -> None:
        """Wait up to ``grace`` seconds for the ranks this process launched, then kill those left."""
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

    def drop_run_folder(self, trainer: Trainer) -> None:
        """Remove the run's folder when the run made it and trained nothing."""
        folder = run_dir(trainer)
        if folder is None or self._trained or not folder.is_dir() or folder.resolve() in self.existing:
            return
        if any(folder.rglob("*.ckpt")):
            return
        shutil.rmtree(folder, ignore_errors=True)
        # And the experiment's folder and the log root, when this run made them and they are now empty.
        for parent in (folder.parent, folder.parent.parent):
            if parent.resolve() in self.existing or any(parent.iterdir()):
                break
            parent.rmdir()
