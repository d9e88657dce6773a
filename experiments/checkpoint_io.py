"""Checkpoints written whole or not at all: an interrupted write never leaves a torn file under the
checkpoint's name.

``AtomicCheckpointIO`` (every run's, set by the command) writes each checkpoint to a temporary file in the
same folder, flushes it to disk and renames it into place, so a write that is interrupted (a kill, a full
disk, a node crash) leaves the previous file intact; a full disk is one error line. Lightning's own
writer goes through fsspec, which stages the file in the system temporary folder and moves it with
``shutil.move``: a copy, not a rename, whenever that folder is on another file system (a node's local
/tmp and a shared checkpoint folder), and no fsync. The temporary files of killed writes are removed
when a run starts from a checkpoint beside them (``remove_stale_temporaries``).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from core.errors import ExperimentError


class DiskFullError(ExperimentError, OSError):
    """A write found the disk full; the message names the file."""


#: This process's umask: a checkpoint gets the permissions any file written here would (mkstemp's are
#: 0600, which would hide a team's shared runs from the others).
_UMASK = os.umask(0)
os.umask(_UMASK)


def temporary_files(target: Path) -> list[Path]:
    """The temporary files a write of ``target`` leaves when it is killed (``.<name>.<random>.tmp``)."""
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of checkpoint writes that were killed, in ``folder``; returns them."""
    removed = sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


class _WriteErrors:
    """A binary file for ``torch.save`` that keeps the ``OSError`` of a failed write (torch replaces it
    with an error about zip positions)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as error:
            self.error = error
            raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that never leaves a half-written checkpoint under the final name.

    The checkpoint is serialised into a temporary file beside the target (same file system, so the
    rename is atomic), flushed to disk, given the permissions of any file written here (the umask's),
    then renamed over the target. A temporary file a killed write left for the same target is removed
    first. A full disk is one error naming the file, with the previous checkpoint intact. Paths on remote
    file systems (``s3://`` and the like) fall back to Lightning's own writer.
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
        for stale in temporary_files(target):
            stale.unlink(missing_ok=True)
        recorder: _WriteErrors | None = None
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(handle, 0o666 & ~_UMASK)
            with os.fdopen(handle, "wb") as file:
                recorder = _WriteErrors(file)
                torch.save(checkpoint, recorder)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_name, target)
        except BaseException as error:
            Path(tmp_name).unlink(missing_ok=True)
            # torch.save reports a failed write as a RuntimeError about zip positions; the OSError it
            # swallowed says why.
            cause = error if isinstance(error, OSError) else recorder and recorder.error
            if cause is not None and cause.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"the disk is full: writing the checkpoint {target} failed, and the previous one is "
                    "intact; free some space, or write the runs elsewhere "
                    "(--trainer.logger.init_args.save_dir)"
                ) from error
            raise


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Give ``trainer`` an ``AtomicCheckpointIO`` unless a plugin chose another checkpoint format."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
