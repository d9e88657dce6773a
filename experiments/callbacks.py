"""The callbacks every run carries (the command adds them): the best and the latest checkpoint, and the
learning rate in TensorBoard."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from time import monotonic
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

from core.distributed import run_dir
from core.domains import FolderPath, NonEmptyText, NonNegativeFloat, PositiveInt


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint that honours ``fast_dev_run`` at the end of training too.

    Lightning 2.6's ``on_train_end`` writes ``last.ckpt`` even under ``fast_dev_run``, where logging is
    off, so a smoke test would leave ``./checkpoints/last.ckpt`` in the working folder.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning puts a logger's checkpoints in save_dir/name/version: for MLflow that is not where
        # its run keeps artifacts (with SQLite not even the store's folder), so they go in the run folder,
        # the run's artifact folder. Rank 0 knows it; Lightning's setup broadcasts rank 0's folder.
        if self.dirpath is None and isinstance(trainer.logger, MLFlowLogger):
            folder = run_dir(trainer)
            if folder is not None:
                self.dirpath = str(folder / "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        super().on_train_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The folder is recorded as the run saw it (often relative to its working folder) and compared
        # as a string: the same folder given as an absolute path (an evaluation pointed at its run's
        # checkpoints) would warn "the dirpath has changed" and drop the state.
        recorded = state_dict.get("dirpath")
        if recorded and self.dirpath and os.path.realpath(recorded) == os.path.realpath(self.dirpath):
            state_dict = {**state_dict, "dirpath": self.dirpath}
            # So are the files it records, so that they compare equal to the paths this callback writes:
            # a fit resumed from another file of the folder (a re-saved copy, a best-*.ckpt) would
            # otherwise take the last.ckpt it has just written, named as here, for the older one named as
            # recorded, and remove it.
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if state_dict.get(key):
                    state_dict[key] = self._named_here(state_dict[key])
            if isinstance(state_dict.get("best_k_models"), dict):
                best = state_dict["best_k_models"]
                state_dict["best_k_models"] = {self._named_here(k): v for k, v in best.items()}
        super().load_state_dict(state_dict)

    def _named_here(self, path: str) -> str:
        """``path``, a file of this callback's folder as a checkpoint recorded it, named as this callback
        names its files (``dirpath/<name>``); any other path unchanged."""
        assert self.dirpath is not None
        if os.path.realpath(os.path.dirname(path)) != os.path.realpath(self.dirpath):
            return path
        return os.path.join(self.dirpath, os.path.basename(path))


#: Lightning's names: ``lr-<Optimizer>[-<n>][-momentum|-weight_decay][/<param group>]``.
_LIGHTNING_NAME = re.compile(r"^lr-[A-Za-z0-9_]+?(?:-(\d+))?(?:-(momentum|weight_decay))?(/.+)?$")


def train_name(name: str) -> str:
    """``lr-SGD`` -> ``train/lr``, ``lr-Adam/pg2`` -> ``train/lr/pg2``, ``lr-SGD-momentum`` ->
    ``train/momentum``, a second optimizer ``lr-Adam-1`` -> ``train/lr/opt1``: one name whatever the
    optimizer class, so runs with different optimizers share a chart. Other names are kept."""
    match = _LIGHTNING_NAME.match(name)
    if match is None:
        return name
    index, kind, group = match.groups()
    return f"train/{kind or 'lr'}" + (f"/opt{index}" if index else "") + (group or "")


class LearningRateLogger(LearningRateMonitor):
    """LearningRateMonitor that logs under ``train/`` (``train/lr``, per param group ``train/lr/pg2``;
    see ``train_name``) and stands aside when the run has no logger (``--trainer.logger false``,
    ``fast_dev_run``) instead of failing the run, since every experiment carries it."""

    def _extract_stats(self, trainer: Trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        for name in stats:  # Lightning also put them in callback_metrics under its own names
            trainer.callback_metrics[train_name(name)] = trainer.callback_metrics.pop(name)
        return {train_name(name): value for name, value in stats.items()}

    def on_train_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class LastCheckpoint(Checkpoint):
    """Writes ``last.ckpt``: the run's latest state, to resume from, at the end of an epoch at most every
    ``min_interval`` seconds, and always when training ends (and at the step, on SIGTERM: see
    ``experiments/preemption.py``).

    The time floor is for lessons whose epochs take milliseconds: a checkpoint written, synced and
    renamed after each of them cost more than the training (about 1 ms of linear_regression's 1.4 ms
    per step on the CPU); a SIGKILL then loses at most ``min_interval`` seconds and an epoch. Lessons
    with epochs longer than the floor write every epoch, as before; ``--last_checkpoint.min_interval 0``
    writes every epoch always.

    ModelCheckpoint's own ``save_last`` (Lightning 2.6) writes ``last.ckpt`` only when it also saves a
    top-k checkpoint, so with a monitored metric ``last.ckpt`` stays at the best epoch, not the latest.
    A ModelCheckpoint without a monitor and ``save_top_k=1`` keeps exactly the latest checkpoint.

    Args:
        filename: The file's name, without ``.ckpt`` (not empty).
        every_n_epochs: Epochs between writes (a count >= 1).
        min_interval: Seconds (>= 0) since the last write below which an epoch's end writes nothing; 0:
            every epoch.
        dirpath: The folder (not a file); by default the run's ``checkpoints/``.
    """

    def __init__(
        self,
        filename: NonEmptyText = "last",
        every_n_epochs: PositiveInt = 1,
        min_interval: NonNegativeFloat = 10.0,
        dirpath: FolderPath | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.min_interval = min_interval
        self._written_at = -math.inf

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._written_at = monotonic()  # a run's first epoch counts from its start

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The same decision on every rank (the write gathers from all of them): rank 0's clock decides.
        recent = monotonic() - self._written_at < self.min_interval
        if trainer.world_size > 1:
            recent = trainer.strategy.broadcast(recent, src=0)
        # max_epochs -1 (or None, with max_steps) trains without an epoch limit: no epoch is the last.
        limit = trainer.max_epochs
        last_epoch = limit is not None and limit > 0 and trainer.current_epoch + 1 >= limit
        if recent and not last_epoch:
            return
        super().on_train_epoch_end(trainer, pl_module)

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._written_at = monotonic()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # With every_n_epochs > 1 the final epochs may not have been saved; the latest state must be.
        # _last_global_step_saved: ModelCheckpoint's own record (Lightning 2.6, no public accessor;
        # tests/experiments/test_lightning_internals.py checks it).
        if (
            trainer.fast_dev_run
            or self.dirpath is None
            or self._last_global_step_saved == trainer.global_step
        ):
            return
        path = Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"
        trainer.save_checkpoint(path, weights_only=False)
        self._last_global_step_saved = trainer.global_step
