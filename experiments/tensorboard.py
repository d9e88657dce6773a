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
  - when training ends, an hparams summary (TensorBoard's HPARAMS tab) of the run's flattened model,
    data and optimizer arguments and the seed, with the checkpoint's monitored metric (its final value,
    the curve already logged) and its best value (``<monitor>_best``), so runs of one experiment can be
    compared side by side;
  - for an evaluation of a checkpoint (``validate``, ``test``, ``predict``), its metrics at the training
    step the checkpoint was written at (experiments/ckpt_path.py), for every logger, instead of at
    step 0: the test accuracy sits at the end of the run's curves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

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


def flat_arguments(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model.optimizer": "torch.optim.SGD", "model.optimizer.lr": 0.1, "data.batch_size": 32}`` from
    a parsed config's nested ``class_path``/``init_args`` sections: each class by its path, each argument
    by its dotted name without ``init_args``; values TensorBoard cannot show as numbers become text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        if key == "class_path":
            flat[prefix] = str(value)
        elif isinstance(value, Mapping):
            flat.update(flat_arguments(value, name))
        elif hasattr(value, "as_dict"):  # a jsonargparse Namespace
            flat.update(flat_arguments(value.as_dict(), name))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            flat[name] = "None" if value is None else value
        else:
            flat[name] = str(value)
    return flat


class RunLogs(Callback):
    """Writes the run's custom-scalars layout and hparams summary into its TensorBoard logs, and logs an
    evaluation of a checkpoint at the checkpoint's step (see the module's docstring).

    Args:
        config: The run's parsed config (``model``, ``data`` and ``seed_everything`` are taken).
        evaluation_step: For an evaluation of a checkpoint, the step the checkpoint's training logged its
            last values at (``experiments.ckpt_path.checkpoint_step``); None otherwise.
    """

    def __init__(self, config: Mapping[str, Any], evaluation_step: int | None = None) -> None:
        self.arguments: dict[str, Any] = {}
        for section in ("model", "data"):
            if config.get(section) is not None:
                self.arguments.update(flat_arguments({section: config[section]}))
        if config.get("seed_everything") is not None:
            self.arguments["seed_everything"] = config["seed_everything"]
        self.evaluation_step = evaluation_step
        self._written: frozenset[str] = frozenset()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # From the second epoch on, the first epoch's train and val metrics are all known.
        if trainer.current_epoch >= 1 and not self._written:
            self._write_layout(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write_layout(trainer)
        self._write_hparams(trainer)

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

    def _write_hparams(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics: dict[str, float] = {}
        checkpoint = trainer.checkpoint_callback
        monitor = checkpoint.monitor if isinstance(checkpoint, ModelCheckpoint) else None
        if monitor and monitor in trainer.callback_metrics:
            # The tag's logged curve holds the final value; TensorBoard reads it from there.
            metrics[monitor] = float(trainer.callback_metrics[monitor])
        best = getattr(checkpoint, "best_model_score", None)
        best_tag = f"{monitor}_best"
        if monitor and best is not None:
            metrics[best_tag] = float(best)
        summaries = hparams(self.arguments, metrics)
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            if best_tag in metrics and best_tag not in trainer.callback_metrics:  # val/acc_best: logged
                logger.experiment.add_scalar(best_tag, metrics[best_tag], trainer.global_step)
            # Not TensorBoardLogger.log_hyperparams(params, metrics): it also logs the metrics as
            # scalars at step 0, a false first point on the run's val/loss curve.
            writer = logger.experiment._get_file_writer()
            for summary in summaries:
                writer.add_summary(summary)
            logger.experiment.flush()

    def _at_evaluation_step(self, trainer: Trainer) -> None:
        # Lightning logs evaluation metrics at the fit loop's count of batches that stepped, which an
        # evaluation never restores from the checkpoint. A fit's own validation has no evaluation step.
        if self.evaluation_step is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = self.evaluation_step

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._at_evaluation_step(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._at_evaluation_step(trainer)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._at_evaluation_step(trainer)
