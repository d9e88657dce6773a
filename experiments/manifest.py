"""The run manifest: ``run.json`` in every run folder, saying what ran, where, with which code, and how
it ended, so that runs can be listed and compared later (``python -m experiments runs`` and ``diff``,
experiments/history.py) whatever the logger.

Written by global rank 0 into the run folder (``core.distributed.run_dir``), atomically (a temporary
file renamed over it), at three moments:

- when a fit starts: ``status: running``; the code (for this project's checkout and, when the model's
  class lives in another git repository, for that one too: the commit, the branch, whether tracked files
  differ from it, ``dirty``, with ``git diff HEAD`` saved beside as ``code.diff`` / ``model_code.diff``,
  and the untracked files listed; ``null`` outside a git checkout or without git), the versions (python,
  torch, lightning, torchmetrics, jsonargparse, the project; CUDA, cuDNN, NCCL and the GPUs' names on a
  CUDA run, else the accelerator's name), the host, user, pid, the command line as typed, the
  experiment's name, devices, nodes, world size and precision, and the start time (UTC, ISO 8601);
- when the fit ends: ``status`` ``finished``, ``failed`` (with ``error``, one line) or ``stopped`` (by
  ``signal``: SIGTERM, SIGINT or a SLURM ``requeue``, experiments/preemption.py), with the end time, the
  duration, the epochs trained, the global step and the checkpoint's ``monitor``, ``best`` value and
  ``best_checkpoint``. A process killed outright (SIGKILL, a lost node) writes no end: its manifest
  stays ``running``, and ``runs`` shows it as ``died`` once its pid is gone from the host that ran it;
- when a checkpoint of the run is evaluated (``test`` or ``validate`` with ``--ckpt_path``): its
  metrics, unrounded, under ``evaluations.<test|validate>``, with the checkpoint and the time.

A resumed fit (``fit --ckpt_path last``, which continues in the same run folder) starts a new manifest
there (``resumed_from``: the checkpoint) and keeps each earlier attempt's summary, with the evaluations
of its checkpoints, under ``attempts``.

Git runs when a fit is set up, on the rank that writes (tens of ms on a 2-core CPU; ``--no-optional-locks``,
so a manifest never writes to a repository); a repository git takes longer than ``GIT_TIMEOUT`` to read is
recorded as unknown. A run that failed before training (experiments/faults.py ``FailedRun`` removes its
folder) gets no manifest: the end is written only into a folder that still exists.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from core.distributed import run_dir
from core.files import write_atomic
from experiments.preemption import Preemption
from experiments.runs import experiment_name

#: The manifest's file name in a run folder, and the version of its layout.
MANIFEST = "run.json"
SCHEMA = 1
#: The installed distribution of this project.
DISTRIBUTION = "lightning-tutorial-experiments"
#: Seconds git may take to describe a repository before it is recorded as unknown.
GIT_TIMEOUT = 5.0
#: At most this many untracked files are listed.
UNTRACKED_LISTED = 50

#: The command's arguments as the user typed them (before config names are resolved), set by
#: experiments/main.py; None when the CLI runs in-process without it (sys.argv is used then).
_typed_arguments: list[str] | None = None


def note_command(arguments: Sequence[str]) -> None:
    """Remember the command's arguments as typed, for the manifest's ``command``."""
    global _typed_arguments
    _typed_arguments = [str(a) for a in arguments]


def command_line() -> str:
    """The command as typed: ``python -m experiments fit --config linear_regression``."""
    # The `experiments` script, else `python -m experiments` (also what an in-process main() amounts to).
    script = Path(sys.argv[0]).name if sys.argv else ""
    program = script if script == "experiments" else "python -m experiments"
    global _typed_arguments
    arguments = _typed_arguments if _typed_arguments is not None else sys.argv[1:]
    _typed_arguments = None  # one command, one run: a later in-process CLI has its own
    return f"{program} {shlex.join(arguments)}".strip()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the run in ``folder``, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest; a write that fails (a full disk, a folder gone) is a warning, never the run's
    failure: the run's own writes meet the same disk and say so, and a manifest must not hide why a run
    failed by failing in its ``on_exception``."""
    try:
        write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
    except OSError as error:
        rank_zero_warn(f"{folder / MANIFEST} not written: {error}")


def repository_of(path: Path, stop_at_packages: bool = True) -> Path | None:
    """The root of the git checkout holding ``path`` (a folder with ``.git``), None outside one. The walk
    stops at ``site-packages``: an installed package inside a virtual environment that happens to sit in
    a checkout is not that checkout's code."""
    for folder in (path, *path.parents):
        if stop_at_packages and folder.name in ("site-packages", "dist-packages"):
            return None
        if (folder / ".git").exists():
            return folder
    return None


def project_repository() -> Path | None:
    """This project's checkout: the folder holding the ``experiments`` package, when it is a git root
    (an installed wheel has none)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / ".git").exists() else None


class GitState:
    """``git status`` and ``git diff HEAD`` of one repository, started at once in the background;
    ``result()`` waits for them (at most ``GIT_TIMEOUT`` seconds in all)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._started = time.monotonic()
        base = ["git", "--no-optional-locks", "-C", str(root)]
        environment = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
        self._processes: list[subprocess.Popen[bytes]] = []
        try:
            for arguments in (["status", "--porcelain=v2", "--branch"], ["diff", "HEAD", "--no-ext-diff"]):
                self._processes.append(
                    subprocess.Popen(
                        base + arguments,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        stdin=subprocess.DEVNULL,
                        env=environment,
                    )
                )
        except OSError:  # no git on this machine
            self.stop()

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self._processes = []

    def result(self) -> tuple[dict[str, Any], str]:
        """The repository's state (``repo``, ``commit``, ``branch``, ``dirty``, ``untracked``; the
        unknown ones None) and its diff against the commit ('' when clean)."""
        state: dict[str, Any] = {"repo": str(self.root), "commit": None, "branch": None, "dirty": None}
        if len(self._processes) != 2:
            return state, ""
        outputs: list[bytes | None] = []
        for process in self._processes:
            left = max(0.1, GIT_TIMEOUT - (time.monotonic() - self._started))
            try:
                out, _ = process.communicate(timeout=left)
                outputs.append(out if process.returncode == 0 else None)
            except subprocess.TimeoutExpired:
                outputs.append(None)
        self.stop()
        status, diff = outputs
        if status is None:
            return state, ""
        lines = status.decode("utf-8", "replace").splitlines()
        headers = dict(line[2:].split(" ", 1) for line in lines if line.startswith("# ") and " " in line[2:])
        commit = headers.get("branch.oid")
        state["commit"] = None if commit in (None, "(initial)") else commit
        branch = headers.get("branch.head")
        state["branch"] = None if branch in (None, "(detached)") else branch
        untracked = [line[2:] for line in lines if line.startswith("? ")]
        state["dirty"] = any(line[:2] in ("1 ", "2 ", "u ") for line in lines)
        state["untracked"] = untracked[:UNTRACKED_LISTED]
        if len(untracked) > UNTRACKED_LISTED:
            state["untracked_more"] = len(untracked) - UNTRACKED_LISTED
        text = diff.decode("utf-8", "replace") if diff is not None and state["dirty"] else ""
        return state, text


def versions() -> dict[str, Any]:
    """The versions of what computes a run (the accelerator's are ``accelerator()``'s)."""
    import jsonargparse
    import lightning
    import torchmetrics

    try:
        project = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        project = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "jsonargparse": jsonargparse.__version__,
        "project": project,
    }


def accelerator(trainer: Trainer) -> dict[str, Any]:
    """The hardware and its software stack: for a CUDA run the CUDA, cuDNN and NCCL versions and the
    GPUs' names, else ``mps`` or ``cpu``; with the devices, nodes, world size and precision."""
    device = trainer.strategy.root_device
    stack: dict[str, Any] = {
        "type": device.type,
        "strategy": type(trainer.strategy).__name__,
        "precision": str(trainer.precision),
        "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        # Only on a CUDA run: naming the GPUs initialises CUDA, which a CPU run must not pay for.
        nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
        stack.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
            gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        )
    return stack


def checkpoint_summary(trainer: Trainer) -> dict[str, Any]:
    """The monitored checkpoint's metric, best value and file (None each without one)."""
    monitored = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor]
    if not monitored:
        return {"monitor": None, "mode": None, "best": None, "best_checkpoint": None}
    checkpoint = monitored[0]
    score, path = checkpoint.best_model_score, checkpoint.best_model_path
    return {
        "monitor": checkpoint.monitor,
        "mode": checkpoint.mode,
        "best": float(score) if score is not None else None,
        "best_checkpoint": str(Path(path).resolve()) if path else None,
    }


def stopped_by(trainer: Trainer, exception: BaseException) -> str | None:
    """The signal that stopped a run (``SIGTERM``, ``SIGINT``, ``requeue``), None for a failure."""
    if isinstance(exception, KeyboardInterrupt):
        return signal.Signals.SIGINT.name
    if isinstance(exception, SIGTERMException):
        # experiments/preemption.py says which of its signals it stopped on; Lightning's own handler
        # (before training starts) raises this on SIGTERM.
        told = [c.stopped_by for c in trainer.callbacks if isinstance(c, Preemption) and c.stopped_by]
        return told[0] if told else signal.Signals.SIGTERM.name
    return None


def error_line(exception: BaseException) -> str:
    text = str(exception).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exception).__name__}: {first}"[:500] if first else type(exception).__name__


class RunManifest(Callback):
    """Writes the run's ``run.json`` (see the module): at the start and end of a fit, and an evaluation's
    metrics into the manifest of the run its checkpoint came from. Global rank 0 writes; every rank runs
    every hook, and nothing here communicates.

    Args:
        config: The run's parsed config; the experiment's name is its logger's (experiments/runs.py).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.experiment = _experiment(config)
        self._manifest: dict[str, Any] | None = None
        self._folder: Path | None = None
        self._started = 0.0
        # Started in setup, on the rank that writes, and only for a fit: a run that fails before it
        # (a compiler refusal, a bad config) leaves no git process behind.
        self._git: list[tuple[str, GitState]] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING or not trainer.is_global_zero:
            self._stop_git()
            return
        folder = run_dir(trainer)
        if folder is None:
            self._stop_git()
            return
        self._folder = folder
        self._started = time.monotonic()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            rank_zero_warn(f"{folder / MANIFEST} not written: {error}")
            self._stop_git()
            return
        project = project_repository()
        if project is not None:
            self._git.append(("code", GitState(project)))
        # The model class's file (none for a class made in a notebook), for the repository it lives in.
        model_file = getattr(sys.modules.get(type(pl_module).__module__), "__file__", None)
        model_repo = repository_of(Path(model_file).resolve().parent) if model_file else None
        if model_repo is not None and model_repo not in {state.root for _, state in self._git}:
            self._git.append(("model_code", GitState(model_repo)))
        manifest: dict[str, Any] = {
            "schema": SCHEMA,
            "experiment": self.experiment,
            "run": str(folder.resolve()),
            "status": "running",
            "start": utc_now(),
            "end": None,
            "duration_s": None,
            "command": command_line(),
            "cwd": os.getcwd(),
            "host": socket.gethostname(),
            "user": _user(),
            "pid": os.getpid(),
            "model": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "resumed_from": None,  # known once the checkpoint is restored: on_train_start
            "code": self._code(folder),
            "versions": versions(),
            "accelerator": accelerator(trainer),
        }
        earlier = read_manifest(folder)
        if earlier is not None:  # a resumed fit, in the folder of the run it continues
            # Its evaluations were of checkpoints this fit is about to replace: they go with its attempt.
            attempts = earlier.pop("attempts", [])
            keep = ("start", "end", "status", "signal", "error", "epochs", "global_step", "best", "command")
            attempt = {key: earlier.get(key) for key in keep}
            manifest["attempts"] = [*attempts, {**attempt, "evaluations": earlier.get("evaluations", {})}]
        self._manifest = manifest
        write_manifest(folder, manifest)

    def _code(self, folder: Path) -> list[dict[str, Any]]:
        code = []
        for name, state in self._git:
            repository, diff = state.result()
            if not diff:  # clean now: a diff left by an earlier attempt of this run would mislead
                (folder / f"{name}.diff").unlink(missing_ok=True)
            else:
                try:
                    write_atomic(folder / f"{name}.diff", diff)
                    repository["diff"] = f"{name}.diff"
                except OSError as error:
                    rank_zero_warn(f"{folder / name}.diff not written: {error}")
            code.append({"role": "project" if name == "code" else "model", **repository})
        self._git = []
        return code

    def _stop_git(self) -> None:
        for _, state in self._git:
            state.stop()
        self._git = []

    def _end(self, trainer: Trainer, status: str, **extra: Any) -> None:
        manifest, folder = self._manifest, self._folder
        self._manifest = None
        # The folder may be gone: FailedRun removes the folder of a run that failed before training.
        if manifest is None or folder is None or not folder.is_dir():
            return
        manifest.update(
            status=status,
            end=utc_now(),
            duration_s=round(time.monotonic() - self._started, 3),
            epochs=trainer.current_epoch,
            global_step=trainer.global_step,
            **checkpoint_summary(trainer),
            **extra,
        )
        write_manifest(folder, manifest)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._manifest is not None and self._folder is not None and trainer.ckpt_path:
            self._manifest["resumed_from"] = str(Path(trainer.ckpt_path).resolve())
            write_manifest(self._folder, self._manifest)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, "finished")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # A fit that Lightning's tuner ends once it has its answer (``tune``: lr_find, scale_batch_size)
        # exits without on_fit_end or on_exception: it is finished, as far as it was meant to go. Any
        # other fit has ended its manifest already.
        if stage == TrainerFn.FITTING:
            self._end(trainer, "finished")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop_git()
        signal_name = stopped_by(trainer, exception)
        if signal_name is not None:
            self._end(trainer, "stopped", signal=signal_name)
        else:
            self._end(trainer, "failed", error=error_line(exception))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._record_evaluation(trainer, "validate")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record_evaluation(trainer, "test")

    def _record_evaluation(self, trainer: Trainer, label: str) -> None:
        """The evaluation's metrics into the manifest of the run its checkpoint came from."""
        if not trainer.is_global_zero or trainer.sanity_checking or not trainer.ckpt_path:
            return
        checkpoint = Path(trainer.ckpt_path).resolve()
        run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
        manifest = read_manifest(run) if run is not None else None
        if run is None or manifest is None:
            return
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if isinstance(value, (torch.Tensor, float, int)) and getattr(value, "numel", lambda: 1)() == 1
        }
        evaluations = manifest.setdefault("evaluations", {})
        evaluations[label] = {"metrics": metrics, "checkpoint": str(checkpoint), "time": utc_now()}
        write_manifest(run, manifest)


def _experiment(config: Mapping[str, Any]) -> str:
    logger = (config.get("trainer") or {}).get("logger")
    arguments = getattr(logger, "init_args", None) or {}
    name = arguments.get("experiment_name") or arguments.get("name")
    return str(name) if name else experiment_name(config)  # type: ignore[arg-type]


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal still runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True
