"""How every run appears in its logs: the lessons' own groups first, train, val and test of a metric on
one chart, the run's arguments beside its results, and an evaluation at the end of its run's curves.

- ``TensorBoard``, the default logger: Lightning's TensorBoardLogger, except that Lightning's epoch
  counter is logged as ``train/epoch`` instead of a top-level ``epoch`` group, which sorted first and
  opened before ``train/``, ``val/`` and ``test/``, and that a new run claims its ``version_N`` by
  making the folder, so runs started at once (sweep workers) never share one. Images follow the same
  scheme (``train/inputs``, ``val/predictions``; the filters, which no phase owns, as
  ``weights/filters/<layer>``, after them).
- ``RunLogs``, a callback every run carries, writes (global rank 0; nothing here communicates)
  - a custom-scalars layout (TensorBoard's "Custom Scalars" tab) with one chart per metric holding its
    ``train/``, ``val/`` and ``test/`` curves, and one for the learning rate, once the first epoch's
    metrics are known and again at the end if new metrics appeared;
  - the run's HPARAMS session (TensorBoard's HPARAMS tab): its start, with the run's parameters
    (experiments/parameters.py), when fit starts, and its end, with the best value of the checkpoint's
    monitored metric as ``<monitor>_best``, when training ends. No experiment header: the hparams plugin
    shows the first header it finds for the whole logdir, which hid every other experiment's columns and
    metrics; without one it builds the table from every session, each parameter a column and each
    scalar of a run a metric, the test metrics that ``test --ckpt_path`` writes into the run's ``test``
    folder included (as ``test.test/acc``). It ticks the first five parameters that differ between runs
    and the first five metrics (the frontend's choice);
  - the same parameters to every other logger (``log_hyperparams``: MLflow, CSV) and as the run's
    ``hparams.yaml``, instead of the module's and datamodule's ``save_hyperparameters()``, which
    Lightning would log by itself (LightningCLI's ``_instantiator``, every library default, no optimizer
    and no seed);
  - for an evaluation of a checkpoint (``validate``, ``test``, ``predict``), its metrics at the training
    step the checkpoint was written at (experiments/ckpt_path.py), for every logger, instead of at
    step 0: the test accuracy sits at the end of the run's curves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

if TYPE_CHECKING:  # experiments/ckpt_path.py reads checkpoints; only its type is needed here
    from experiments.ckpt_path import EvaluationPoint

PHASES = ("train", "val", "test")


class TensorBoard(TensorBoardLogger):
    """TensorBoardLogger that files Lightning's ``epoch`` counter under ``train/epoch``.

    Args:
        log_epoch: Log the counter at all; the command turns it off for an evaluation written into its
            training run, where Lightning would log epoch 0 at the checkpoint's step.
        **kwargs: TensorBoardLogger's.
    """

    def __init__(self, *args: Any, log_epoch: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_epoch = log_epoch

    def _get_next_version(self) -> int:
        # The next free version_N, claimed by making its folder (on rank 0, the rank whose folder
        # trainer.log_dir gives every rank): two runs of one experiment started at once, such as two sweep
        # workers on one machine, would otherwise both take the same number and write into one folder.
        version = super()._get_next_version()
        if rank_zero_only.rank != 0 or "://" in str(self.root_dir):
            return version  # remote stores (s3://...) as Lightning names them
        root = Path(self.root_dir)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                (root / f"version_{version}").mkdir()
                return version
            except FileExistsError:
                version += 1

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        renamed = {("train/epoch" if name == "epoch" else name): value for name, value in metrics.items()}
        if not self.log_epoch:
            renamed.pop("train/epoch", None)
        super().log_metrics(renamed, step)


def scalars_layout(names: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout for the logged scalar ``names``: a "metrics" category with one multiline
    chart per metric ``X`` logged under at least one of ``train/X``, ``val/X``, ``test/X`` (regular
    expressions, so all three phases land on it), and the learning rates."""
    metrics = sorted(
        {
            name.split("/", 1)[1]
            for name in names
            if name.split("/", 1)[0] in PHASES
            and "/" in name
            and not name.startswith(("train/lr", "train/epoch"))
        }
    )
    charts = {metric: ["Multiline", [rf"^({'|'.join(PHASES)})/{metric}$"]] for metric in metrics}
    layout: dict[str, dict[str, list[Any]]] = {"metrics": charts}
    if any(name.startswith("train/lr") for name in names):
        layout["optimizer"] = {"learning rate": ["Multiline", [r"^train/lr(/.*)?$"]]}
    return layout


def session_start(parameters: Mapping[str, Any]) -> Summary:
    """The summary that opens a run's session in the HPARAMS tab: its parameters (numbers, booleans, text;
    anything else as its text) and its start time, as the hparams plugin's own ``session_start_pb``
    writes it (that one needs TensorFlow)."""
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in parameters.items():
        if isinstance(value, bool):
            info.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[name].number_value = value
        else:
            info.hparams[name].string_value = str(value)
    return _hparams_summary(
        metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info)
    )


def session_end(status: int = api_pb2.STATUS_SUCCESS) -> Summary:
    """The summary that closes a run's session in the HPARAMS tab, with its status."""
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _hparams_summary(
        metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info)
    )


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    summary = Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary


class RunLogs(Callback):
    """Writes the run's custom-scalars layout and its HPARAMS session into its TensorBoard logs, gives
    every logger the run's parameters, and logs an evaluation of a checkpoint at the checkpoint's step
    (see the module's docstring).

    Args:
        parameters: The run's parameters, flat names to values (``experiments.parameters.run_parameters``).
        evaluation: For an evaluation of a checkpoint, the step and epoch at which the checkpoint's
            training logged its last values (``experiments.ckpt_path.EvaluationPoint``); None otherwise.
    """

    def __init__(self, parameters: Mapping[str, Any], evaluation: EvaluationPoint | None = None) -> None:
        self.parameters: dict[str, Any] = dict(parameters)
        self.evaluation = evaluation
        self._written: frozenset[str] = frozenset()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning would give every logger the module's and the datamodule's save_hyperparameters()
        # (LightningCLI's _instantiator, every library default, no optimizer, no seed) right after the
        # on_fit_start hooks, for every stage: the loggers get the run's parameters instead.
        pl_module._log_hyperparams = False
        if trainer.datamodule is not None:
            trainer.datamodule._log_hyperparams = False
        if stage != TrainerFn.FITTING and trainer.is_global_zero:
            # An evaluation's own folder (version_N/test) gets its parameters in its hparams.yaml, and no
            # session of its own: its metrics join its training run's session (as its "test" group). A
            # logger that writes into the training's own run (MLflow) keeps the training's parameters.
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.hparams = dict(self.parameters)
                elif isinstance(logger, CSVLogger):
                    logger.log_hyperparams(self.parameters)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        # A resumed fit continues its run, which holds the parameters already: TensorBoard keeps the
        # first session start it reads, and MLflow refuses a changed value (a raised max_epochs, say).
        resumed = trainer.ckpt_path is not None
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # hparams.yaml (written by the logger's save()) holds them; the HPARAMS tab reads the
                # session's start, written now so that a run still training, or killed, is listed too.
                logger.hparams = dict(self.parameters)
                self._write_session(logger, session_start(self.parameters), trainer.global_step)
            elif not resumed or isinstance(logger, CSVLogger):
                logger.log_hyperparams(self.parameters)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._at_evaluation_step(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._at_evaluation_step(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._at_evaluation_step(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # From the second epoch on, the first epoch's train and val metrics are all known.
        if trainer.current_epoch >= 1 and not self._written:
            self._write_layout(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write_layout(trainer)
        self._write_results(trainer)

    def _write_layout(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        names = frozenset(trainer.callback_metrics) - self._written
        if not names:
            return
        self._written |= names
        layout = scalars_layout(self._written)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(layout)

    def _write_results(self, trainer: Trainer) -> None:
        """The best value of the checkpoint's monitored metric as ``<monitor>_best`` (the HPARAMS tab
        shows the last value of each of the run's scalars), and the end of the run's session."""
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        checkpoint = trainer.checkpoint_callback
        monitor = checkpoint.monitor if isinstance(checkpoint, ModelCheckpoint) else None
        best = getattr(checkpoint, "best_model_score", None)
        best_tag = f"{monitor}_best"
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            if monitor and best is not None and best_tag not in trainer.callback_metrics:  # val/acc_best
                logger.experiment.add_scalar(best_tag, float(best), trainer.global_step)
            self._write_session(logger, session_end(), trainer.global_step)

    @staticmethod
    def _write_session(logger: TensorBoardLogger, summary: Summary, step: int) -> None:
        # Not TensorBoardLogger.log_hyperparams(params, metrics): it also writes an experiment header,
        # which hides every other experiment's columns (see the module), and logs the metrics as scalars
        # at step 0, a false first point on the run's curves.
        logger.experiment._get_file_writer().add_summary(summary, step)
        logger.experiment.flush()

    def _at_evaluation_step(self, trainer: Trainer) -> None:
        # Lightning logs evaluation metrics at the fit loop's count of batches that stepped, with an
        # "epoch" value of the fit loop's epoch, neither of which an evaluation restores from the
        # checkpoint: without them every logger but our TensorBoard would get a point at step 0 and an
        # "epoch" of 0 (MLflow's run page showed epoch 0). A fit's own validation has no evaluation point.
        if self.evaluation is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = self.evaluation.step
            trainer.fit_loop.epoch_progress.current.completed = self.evaluation.epoch
