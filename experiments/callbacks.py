"""The callbacks every run carries (the command adds them): the best and the latest checkpoint, the
learning rate in TensorBoard, and early stopping when it is switched on."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from time import monotonic
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_info

from core.distributed import run_dir
from core.domains import FolderPath, NonEmptyText, NonNegativeFloat, NonNegativeInt, PositiveInt
from core.errors import ExperimentError


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


class EarlyStop(EarlyStopping):
    """Lightning's ``EarlyStopping`` that watches the checkpoint's metric unless told otherwise, says in one
    line why it stopped, and names a metric the lesson never logs in one line.

    A fit stops when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` validations
    in a row. On several processes every rank reads the same synchronised metric, and Lightning's
    ``reduce_boolean_decision`` stops them all at the same epoch when any rank would stop.

    Args:
        monitor: The logged metric to watch (``val/loss``...); null: the best checkpoint's
            (``--checkpoint.monitor``), in its mode.
        mode: min: lower is better; max: higher is better; null: the checkpoint's mode, for its metric.
        patience: Validations without improvement before the fit stops (>= 0).
        min_delta: The least change that counts as an improvement (>= 0).
        stopping_threshold: Stop as soon as the metric reaches this value; null: no such stop.
        divergence_threshold: Stop as soon as the metric is worse than this value; null: no such stop.
        check_finite: Stop when the metric is NaN or infinite.
    """

    def __init__(
        self,
        monitor: NonEmptyText | None = None,
        mode: Literal["min", "max"] | None = None,
        patience: NonNegativeInt = 3,
        min_delta: NonNegativeFloat = 0.0,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_finite: bool = True,
    ) -> None:
        self._given = {"monitor": monitor, "mode": mode}
        settings = {
            "patience": patience,
            "min_delta": min_delta,
            "stopping_threshold": stopping_threshold,
            "divergence_threshold": divergence_threshold,
            "check_finite": check_finite,
        }
        self._settings = settings
        # A placeholder until setup: the checkpoint callback the metric may come from is the trainer's.
        super().__init__(monitor=monitor or "", mode=mode or "min", **settings)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            monitor, mode = self._resolved(trainer)
            # The mode decides the sign of min_delta and the starting best score: set both again.
            EarlyStopping.__init__(self, monitor=monitor, mode=mode, **self._settings)
        super().setup(trainer, pl_module, stage)

    def _resolved(self, trainer: Trainer) -> tuple[str, str]:
        """The metric and mode to watch: as given, else the best checkpoint's."""
        checkpoint = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
        monitor, mode = self._given["monitor"], self._given["mode"]
        if monitor is None:
            if checkpoint is None:
                raise ExperimentError(
                    "--early_stopping.monitor: no checkpoint monitors a metric to follow; name the metric "
                    "to watch (e.g. --early_stopping.monitor val/loss)"
                )
            monitor = str(checkpoint.monitor)
        if mode is None:
            if checkpoint is None or checkpoint.monitor != monitor:
                raise ExperimentError(
                    f"--early_stopping.mode: give min or max for {monitor} (only the checkpoint's metric "
                    "has a known mode)"
                )
            mode = str(checkpoint.mode)
        return monitor, mode

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._check_on_train_epoch_end and not self._should_skip_check(trainer):
            self._require_metric(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._check_on_train_epoch_end and not self._should_skip_check(trainer):
            self._require_metric(trainer)
        super().on_validation_end(trainer, pl_module)

    def _require_metric(self, trainer: Trainer) -> None:
        # Lightning's own message is a multi-line RuntimeError; the same on every rank (the metrics are).
        if trainer.fast_dev_run or self.monitor in trainer.callback_metrics:
            return
        logged = sorted(k for k in trainer.callback_metrics if not k.startswith("train/lr"))
        raise ExperimentError(
            f"--early_stopping.monitor {self.monitor}: the lesson logs no such metric; it logs "
            f"{', '.join(logged) or 'none'}"
        )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stopping_reason is EarlyStoppingReason.NOT_STOPPED:
            return
        best = float(self.best_score)
        # Epochs counted from 1, as the epoch lines count them.
        rank_zero_info(
            f"Stopped early after epoch {self.stopped_epoch + 1}: {self.monitor} {self._why()}; "
            f"best {best:.4g}"
        )

    def _why(self) -> str:
        reason = self.stopping_reason
        if reason is EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return f"did not improve by more than {abs(self.min_delta):g} in {self.patience} validations"
        if reason is EarlyStoppingReason.STOPPING_THRESHOLD:
            return f"reached --early_stopping.stopping_threshold {self.stopping_threshold:g}"
        if reason is EarlyStoppingReason.DIVERGENCE_THRESHOLD:
            return f"passed --early_stopping.divergence_threshold {self.divergence_threshold:g}"
        return "is not finite"
