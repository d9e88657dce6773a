"""``python -m experiments tune``: Lightning's Tuner on a lesson's config, written back as ``tuned.yaml``.

    python -m experiments tune --config logistic_regression --data.data_dir <folder>
    python -m experiments tune --config boston_housing --tune.scale_batch_size true
    python -m experiments fit --config lightning_logs/logistic_regression/tune/version_0/tuned.yaml

The config, presets and flags are ``fit``'s (``TuneCLI``, an ``ExperimentCLI``), with a ``--tune.*`` group
(``Tune``). What runs, in Lightning's recommended order:

- ``scale_batch_size`` (off unless ``--tune.scale_batch_size true``): the largest batch that trains
  without running out of memory, by ``Tuner.scale_batch_size``, on the datamodule's (or model's)
  ``batch_size`` attribute. It is never larger than the training set; on a CPU nothing runs out of
  memory, so there it grows to that cap (or ``--tune.max_val``) and says so.
- ``lr_find`` (on by default): Lightning's learning-rate range test, ``Tuner.lr_find`` with
  ``update_attr=False``: the lessons inject their optimizer (``model.optimizer``), so the suggestion is
  read from the finder and written to the optimizer's ``init_args.lr`` (or a module's own ``lr`` or
  ``learning_rate`` argument). Its curve goes to TensorBoard (``tune/lr_find``) and to
  ``figures/lr_find.png``.

The tune run is ``lightning_logs/<experiment>/tune/version_N`` (its own numbering, so it is neither a
fit's version nor a run ``--ckpt_path last`` finds). ``tuned.yaml`` there is the lesson's whole config as
``fit`` saves it (the logger's name stays the lesson's experiment, not "tuned") with the suggested
values; one line per value says what changed. A tuner that does not apply (manual optimisation, an
optimizer without a learning rate, a datamodule without ``batch_size``, a training set that already fits
in one batch) is one ``note:`` line when the other one runs, and the command's one ``error:`` line when
nothing can be tuned. Tuning runs on one process: Lightning's batch-size scaler refuses distributed
strategies, and a learning rate found on one process is the one each process of a data-parallel fit
uses with the same per-process batch.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.data import sized_len
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import ArgsType, LightningArgumentParser
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.parsing import lightning_setattr

from core.distributed import run_dir
from core.domains import NonNegativeInt, PositiveInt
from core.errors import ExperimentError
from core.figures import log_figure, new_figure
from core.files import write_atomic
from experiments.cli import PARSER_KWARGS, ExperimentCLI
from experiments.faults import FailedRun
from experiments.messages import closest, parameters
from experiments.progress import OutputPaths
from experiments.runs import RunLayout

#: Lightning's cap on a batch size it tries (``Tuner.scale_batch_size``'s ``max_val`` default).
LIGHTNING_MAX_BATCH = 8192
#: The names Lightning's finder looks for when a module takes its learning rate itself.
LR_NAMES = ("lr", "learning_rate")
TUNED_FILE = "tuned.yaml"


class Tune:
    """Which of Lightning's tuners run on the config, with their arguments (Lightning's defaults).

    Args:
        lr_find: Run the learning-rate finder and write its suggestion as the optimizer's ``lr``.
        min_lr: The finder's first learning rate.
        max_lr: The finder's last learning rate.
        num_training: How many learning rates (training steps) the finder tries.
        lr_mode: How the learning rate grows step to step: exponential or linear.
        early_stop_threshold: The finder stops when the smoothed loss exceeds this many times the best
            so far (null: never).
        skip_begin: Points left out at the curve's start when picking its steepest fall.
        skip_end: Points left out at its end.
        scale_batch_size: Run the batch-size scaler and write its batch size.
        batch_mode: power (double until memory runs out) or binsearch (then bisect).
        init_val: The first batch size tried.
        max_trials: The most batch sizes tried.
        steps_per_trial: Training steps run with each batch size.
        max_val: The largest batch size tried; null: the training set's size (at most 8192, Lightning's
            cap), which on a CPU, where nothing runs out of memory, is where the search ends.
        margin: binsearch's safety margin: the batch found is made this fraction smaller.
        batch_arg_name: The datamodule's (or model's) attribute and argument that hold the batch size.
    """

    def __init__(
        self,
        lr_find: bool = True,
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: PositiveInt = 100,
        lr_mode: Literal["exponential", "linear"] = "exponential",
        early_stop_threshold: float | None = 4.0,
        skip_begin: NonNegativeInt = 10,
        skip_end: PositiveInt = 1,
        scale_batch_size: bool = False,
        batch_mode: Literal["power", "binsearch"] = "power",
        init_val: PositiveInt = 2,
        max_trials: PositiveInt = 25,
        steps_per_trial: PositiveInt = 3,
        max_val: PositiveInt | None = None,
        margin: float = 0.05,
        batch_arg_name: str = "batch_size",
    ) -> None:
        pass  # only its signature is used: the command's parser reads it


@dataclass
class Change:
    """A value ``tuned.yaml`` sets: its key in the config (``key``, a path of names), the flag that names
    it (``flag``), its value before and after, and which tuner found it (``why``)."""

    key: tuple[str, ...]
    flag: str
    old: Any
    new: Any
    why: str

    def line(self) -> str:
        if self.old == self.new:  # the config's value is what the tuner found: nothing to change
            return f"{self.flag}: {_short(self.new)}, unchanged: the config's value already ({self.why})"
        return f"{self.flag}: {_short(self.old)} -> {_short(self.new)} ({self.why})"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _get(data: dict[str, Any], key: tuple[str, ...]) -> Any:
    for name in key:
        data = data[name]
    return data


def _set(data: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    for name in key[:-1]:
        data = data[name]
    data[key[-1]] = value


class TuneCLI(ExperimentCLI):
    """``fit``'s parser with a ``tune`` section: it builds the model, data and trainer, and runs no
    subcommand; ``main`` runs the tuners on them."""

    def __init__(self, args: list[str]) -> None:
        self.lesson_config: dict[str, Any] = {}
        super().__init__(
            args=list(args),
            run=False,
            parser_kwargs={
                **PARSER_KWARGS,
                "prog": "python -m experiments tune",
                "description": "Find a learning rate (Lightning's lr_find) and a batch size "
                "(scale_batch_size) for an experiment, and write its config with them as tuned.yaml in the "
                "tune run's folder; `python -m experiments fit --config <that file>` trains it.",
            },
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(Tune, "tune")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Its lines name a fit's run and best checkpoint; the tune prints its own (``Tuning._write``).
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, OutputPaths)]
        return trainer

    def complete_config(self, config: Namespace, layout: RunLayout) -> None:
        # The lesson's config as fit saves it (names and folders filled in: the logger's name is the
        # lesson's experiment, so a fit of tuned.yaml runs under it), before the tune run's changes.
        data = yaml.safe_load(self.parser.dump(config, skip_none=False))
        data.pop("tune", None)
        self.lesson_config = data
        trainer = config.trainer
        if layout.kind == "none" and not trainer.get("default_root_dir"):
            raise ExperimentError(
                "--trainer.logger false: a tune writes tuned.yaml and its curve in its run folder; give "
                "--trainer.default_root_dir <folder> for them, or keep a logger"
            )
        if layout.kind == "folders":
            # The tune run's own numbering beside the fits' (lightning_logs/<experiment>/tune/version_N);
            # Lightning's tuners keep their temporary checkpoint in default_root_dir: there, not in the
            # working folder.
            args = trainer.logger.init_args
            args.name = f"{args.name}/tune"
            if not trainer.get("default_root_dir"):
                trainer.default_root_dir = str(Path(str(args.save_dir)) / str(args.name))
        # A tune trains nothing to keep: no checkpoints (the tuners restore the weights they start from).
        for part in ("checkpoint", "last_checkpoint"):
            if isinstance(config.get(part), Namespace):
                config[part].enabled = False
        # The tuners count their own steps; the lesson's epochs must not end the search early.
        trainer.max_epochs, trainer.min_epochs, trainer.min_steps = -1, None, None
        if trainer.get("fast_dev_run"):
            raise ExperimentError(
                "--trainer.fast_dev_run: Lightning's tuners skip a fast_dev_run; leave it out"
            )


def learning_rate_key(config: dict[str, Any]) -> tuple[tuple[str, ...], str] | str:
    """Where the config keeps the learning rate, as (key, flag), or why it has none: the injected
    optimizer's ``init_args.lr``, else a module's own ``lr`` or ``learning_rate`` argument."""
    model = config.get("model") or {}
    init_args = model.get("init_args") or {}
    optimizer = init_args.get("optimizer")
    if isinstance(optimizer, dict) and "class_path" in optimizer:
        if "lr" in (optimizer.get("init_args") or {}):
            return ("model", "init_args", "optimizer", "init_args", "lr"), "model.optimizer.init_args.lr"
        return f"the optimizer, {optimizer['class_path']}, takes no learning rate (lr)"
    for name in LR_NAMES:
        if name in init_args:
            return ("model", "init_args", name), f"model.{name}"
    return (
        "the config holds no learning rate (model.optimizer.init_args.lr, or a model argument lr or "
        "learning_rate) to write the suggestion to"
    )


def batch_size_key(
    config: dict[str, Any], model: LightningModule, datamodule: LightningDataModule | None, name: str
) -> tuple[tuple[str, ...], str] | str:
    """Where the config keeps the batch size Lightning's scaler changes, as (key, flag), or why it has none:
    the datamodule's argument ``name`` (the model's for a module that loads its own data)."""
    holders = [("data", datamodule), ("model", model)]
    for section, holder in holders:
        if holder is None:
            continue
        init_args = (config.get(section) or {}).get("init_args") or {}
        held = hasattr(holder, name) or name in getattr(holder, "hparams", {})
        if held and name in init_args:
            return (section, "init_args", name), f"{section}.{name}"
    owner = type(datamodule).__name__ if datamodule is not None else type(model).__name__
    return (
        f"{owner} has no {name} that Lightning's scaler can change and the config can hold (an init "
        f"argument kept as self.{name} or in save_hyperparameters; --tune.batch_arg_name names another)"
    )


def training_samples(
    datamodule: LightningDataModule | None, model: LightningModule
) -> tuple[int, int] | None:
    """The training loader's (samples, batches), or None when it is not sized. Asked before tuning, so
    that a training set that fits in one batch is said, not searched."""
    source = datamodule if datamodule is not None else model
    if datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("fit")
    loader = source.train_dataloader()
    batches = sized_len(loader)
    if batches is None:
        return None
    samples = sized_len(getattr(loader, "dataset", None)) or sized_len(getattr(loader, "sampler", None))
    if samples is None:
        size = getattr(getattr(loader, "sampler", None), "size", None)  # TensorBatches' EpochPermutation
        samples = size if isinstance(size, int) else None
    return (samples if samples is not None else batches, batches)


def steepest_fall(
    results: dict[str, list[float]], mode: str, skip_begin: int, skip_end: int
) -> tuple[float, int] | None:
    """Lightning's suggestion (``_LRFinder.suggestion``: the learning rate where the smoothed loss falls
    fastest, ``skip_begin`` and ``skip_end`` points left out, non-finite losses ignored), as (lr, index of
    the point), or None with fewer than two points left.

    One difference: in exponential mode the slope is taken against log10(lr), the axis the rates are
    spaced on and the curve is drawn on. Lightning 2.6 takes it against lr itself, which weighs a small
    fall among the smallest rates thousands of times more than a large one further on and picks a rate
    at the top of the curve's descent (Lightning issue #21141; on MNIST's logistic regression 4.4e-4,
    where the loss has barely started to fall).
    """
    losses = torch.tensor(results["loss"], dtype=torch.float64)
    lrs = torch.tensor(results["lr"], dtype=torch.float64)
    index = torch.arange(len(losses))[skip_begin : len(losses) - skip_end]
    index = index[torch.isfinite(losses[index])]
    if len(index) < 2:
        return None
    axis = lrs[index].log10() if mode == "exponential" else lrs[index]
    slope = torch.gradient(losses[index], spacing=[axis])[0]
    best = int(index[int(slope.argmin())])
    return float(lrs[best]), best


class Tuning:
    """The tuners of one ``tune`` command on its built model, data and trainer (see the module)."""

    def __init__(self, cli: TuneCLI) -> None:
        self.cli = cli
        self.settings: Namespace = cli.config.tune
        self.model: LightningModule = cli.model
        self.datamodule: LightningDataModule | None = cli.datamodule
        self.trainer: Trainer = cli.trainer
        self.config = cli.lesson_config
        self.changes: list[Change] = []
        self.figure: Path | None = None
        self.samples: int | None = None  # the training set's size, when the batch-size scaler runs

    def plan(self) -> tuple[tuple[tuple[str, ...], str] | None, tuple[tuple[str, ...], str] | None]:
        """The (key, flag) each requested tuner writes, or None for one not run; a tuner that does not
        apply is a ``note:`` line when the other runs, and the whole command's error when none can."""
        settings = self.settings
        if not settings.lr_find and not settings.scale_batch_size:
            raise ExperimentError(
                "tune: nothing to run; set --tune.lr_find true or --tune.scale_batch_size true"
            )
        if not 0 < settings.min_lr < settings.max_lr:
            raise ExperimentError(
                f"--tune.min_lr {settings.min_lr:g} and --tune.max_lr {settings.max_lr:g}: the finder needs "
                "0 < min_lr < max_lr"
            )
        if not 0 <= settings.margin < 1:
            raise ExperimentError(f"--tune.margin {settings.margin:g}: give a fraction in [0, 1)")
        if self.trainer.world_size > 1:
            raise ExperimentError(
                f"tune runs on one process, and this trainer has {self.trainer.world_size}: tune with "
                "--trainer.devices 1 --trainer.num_nodes 1 (the learning rate found is each process's), "
                "then fit tuned.yaml on as many as you like"
            )
        reasons: list[str] = []
        lr: tuple[tuple[str, ...], str] | None = None
        batch: tuple[tuple[str, ...], str] | None = None
        if settings.lr_find:
            found = self._lr_plan()
            lr = found if isinstance(found, tuple) else None
            if isinstance(found, str):
                reasons.append(f"lr_find does not apply: {found}")
        if settings.scale_batch_size:
            found = self._batch_plan()
            batch = found if isinstance(found, tuple) else None
            if isinstance(found, str):
                reasons.append(f"scale_batch_size does not apply: {found}")
        if lr is None and batch is None:
            raise ExperimentError(f"tune: nothing can be tuned: {'; '.join(reasons)}")
        if rank_zero_only.rank == 0:
            for reason in reasons:
                print(f"note: {reason}")
        return lr, batch

    def _lr_plan(self) -> tuple[tuple[str, ...], str] | str:
        if not self.model.automatic_optimization:
            return (
                f"{type(self.model).__name__} updates its weights itself (automatic_optimization is False), "
                "and Lightning's finder steps the optimizer and reads the loss of each step"
            )
        return learning_rate_key(self.config)

    def _batch_plan(self) -> tuple[tuple[str, ...], str] | str:
        name = self.settings.batch_arg_name
        found = batch_size_key(self.config, self.model, self.datamodule, name)
        if isinstance(found, str):
            return found
        sizes = training_samples(self.datamodule, self.model)
        holder = self.datamodule if found[0][0] == "data" and self.datamodule is not None else self.model
        current = getattr(holder, name, None)
        if current is None:
            current = holder.hparams.get(name)
        self.samples = sizes[0] if sizes is not None else None
        if sizes is not None and (sizes[1] <= 1 or (isinstance(current, int) and sizes[0] <= current)):
            return (
                f"the training set's {sizes[0]} samples already fit in one batch of {current}: the batch "
                "size cannot grow"
            )
        return found

    def run(self) -> Path:
        """Run the planned tuners, then write ``tuned.yaml`` (rank 0) and return its path."""
        lr_key, batch_key = self.plan()
        tuner = Tuner(self.trainer)
        try:
            # Lightning's finder draws its own tqdm bar on stderr; to stdout with Lightning's other
            # output, so that stderr holds only what went wrong (experiments/progress.py).
            with contextlib.redirect_stderr(sys.stdout):
                if batch_key is not None:
                    self._scale_batch_size(tuner, batch_key)
                if lr_key is not None:
                    self._lr_find(tuner, lr_key)
        except ExperimentError:
            self._drop_run()
            raise
        return self._write()

    def _scale_batch_size(self, tuner: Tuner, key: tuple[tuple[str, ...], str]) -> None:
        settings = self.settings
        samples = self.samples
        cap = settings.max_val or min(LIGHTNING_MAX_BATCH, samples or LIGHTNING_MAX_BATCH)
        old = _get(self.config, key[0])
        found = tuner.scale_batch_size(
            self.model,
            datamodule=self.datamodule,
            mode=settings.batch_mode,
            steps_per_trial=settings.steps_per_trial,
            init_val=min(settings.init_val, cap),
            max_trials=settings.max_trials,
            batch_arg_name=settings.batch_arg_name,
            margin=settings.margin,
            max_val=cap,
        )
        if found is None:
            raise ExperimentError("scale_batch_size found no batch size (Lightning skipped its search)")
        # Lightning's power mode can end one doubling past max_val (its doubling step does not cap);
        # the model and data keep the capped size for lr_find, which runs next.
        found = min(int(found), cap)
        lightning_setattr(self.model, settings.batch_arg_name, found)
        why = f"scale_batch_size {settings.batch_mode}, {settings.steps_per_trial} steps per size"
        if isinstance(self.trainer.accelerator, CPUAccelerator):
            # Nothing ends the search but its limits: say which one it met.
            why += "; on a CPU nothing runs out of memory, so it "
            margin = settings.margin if settings.batch_mode == "binsearch" else 0.0
            if found >= int(cap * (1 - margin)):
                why += f"grows to max_val {cap}"
                if not settings.max_val:
                    why += " (the training set's size)" if cap == samples else " (Lightning's cap)"
                why += f", less the {margin:g} margin" if margin else ""
            else:
                why += f"stops after --tune.max_trials {settings.max_trials}"
        self.changes.append(Change(key[0], key[1], old, found, why))
        _set(self.config, key[0], found)

    def _lr_find(self, tuner: Tuner, key: tuple[tuple[str, ...], str]) -> None:
        settings = self.settings
        finder = tuner.lr_find(
            self.model,
            datamodule=self.datamodule,
            min_lr=settings.min_lr,
            max_lr=settings.max_lr,
            num_training=settings.num_training,
            mode=settings.lr_mode,
            early_stop_threshold=settings.early_stop_threshold,
            update_attr=False,  # the optimizer is injected: the suggestion goes to the config instead
        )
        if finder is None:
            raise ExperimentError("lr_find found no learning rate (Lightning skipped its search)")
        points = len(finder.results.get("loss", []))
        suggestion = steepest_fall(finder.results, finder.mode, settings.skip_begin, settings.skip_end)
        if suggestion is None:
            raise ExperimentError(
                f"lr_find: its {points} points leave too few after skipping {settings.skip_begin} + "
                f"{settings.skip_end} to suggest a learning rate (the loss diverged at once, or the data is "
                "short); raise --tune.num_training or --tune.early_stop_threshold, or lower --tune.skip_begin"
            )
        # Three significant digits: the suggestion is the steepest point of a noisy curve, no finer.
        lr = float(f"{suggestion[0]:.3g}")
        self._plot(finder.results, finder.mode, suggestion[1], lr, (settings.skip_begin, settings.skip_end))
        why = (
            f"lr_find: steepest fall of the loss over {points} steps from {settings.min_lr:g} to "
            f"{settings.max_lr:g}, {settings.lr_mode}"
        )
        self.changes.append(Change(key[0], key[1], _get(self.config, key[0]), lr, why))
        _set(self.config, key[0], lr)

    def _plot(
        self, results: dict[str, list[float]], mode: str, index: int, lr: float, skip: tuple[int, int]
    ) -> None:
        """The finder's loss against the learning rate, the suggestion marked: into TensorBoard as
        ``tune/lr_find`` and as the run's ``figures/lr_find.png``; every point as ``lr_find.csv``.

        The figure draws the points the suggestion was read from (``skip``: those left out at the start
        and the end): the first ones are the smoothing's warm-up, which Lightning's bias correction
        under-estimates (about half the loss at the first step), a dip that is no property of the model."""
        lrs = [float(v) for v in results["lr"]]
        losses = [float(v) for v in results["loss"]]
        shown = range(skip[0], len(losses) - skip[1])

        def draw() -> Any:
            figure = new_figure((6.4, 4.8), dpi=100)
            axes = figure.add_subplot()
            axes.plot([lrs[i] for i in shown], [losses[i] for i in shown])
            if mode == "exponential":
                axes.set_xscale("log")
            axes.plot(lrs[index], losses[index], marker="o", markersize=10, color="red")
            axes.set_xlabel("learning rate")
            axes.set_ylabel("training loss (smoothed)")
            axes.set_title(f"lr_find: suggested lr {lr:g}")
            figure.tight_layout()
            return figure

        log_figure(self.trainer, draw, "tune/lr_find", png_name="lr_find")
        folder = run_dir(self.trainer)
        if folder is not None:
            self.figure = folder / "figures" / "lr_find.png"
            rows = "".join(f"{a!r},{b!r}\n" for a, b in zip(lrs, losses, strict=True))
            write_atomic(folder / "lr_find.csv", "lr,loss\n" + rows)
        for logger in self.trainer.loggers:
            logger.finalize("success")  # the tuners' fits closed the writers; the figure reopened them

    def _drop_run(self) -> None:
        """A tune that fails after its fits leaves no run folder (what ``FailedRun`` does inside a fit)."""
        folder = run_dir(self.trainer)
        for callback in self.trainer.callbacks:
            if not isinstance(callback, FailedRun):
                continue
            callback.drop_run_folder(self.trainer)
            # It removes the run and the two folders above it that the run made; a tune run sits one
            # deeper (<log root>/<experiment>/tune/version_N): the log root too, if the run made it.
            root = folder.parents[2] if folder is not None and len(folder.parents) > 2 else None
            if folder is None or folder.exists() or root is None or not root.is_dir():
                continue
            if root.resolve() not in callback.existing and not any(root.iterdir()):
                root.rmdir()

    def _write(self) -> Path:
        folder = run_dir(self.trainer)
        if folder is None:
            folder = Path(self.trainer.default_root_dir)
        path = folder / TUNED_FILE
        if rank_zero_only.rank == 0:
            for change in self.changes:
                print(change.line())
            text = "".join(f"# {change.line()}\n" for change in self.changes)
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text + yaml.safe_dump(self.config, sort_keys=False))
            if self.figure is not None:
                print(f"lr_find curve: {self.figure}")
            print(f"tuned config: {path}")
            print(f"train it: python -m experiments fit --config {path}")
        return path


def _restore_note(record: logging.LogRecord) -> bool:
    """Whether to show a log line of Lightning's checkpoint loading: not its note that ``weights_only``
    was not set, which the tuners' restore of their own temporary checkpoint (written moments before)
    gives every time. A function, so that adding it again (a second command in one process) does nothing."""
    return "`weights_only` was not set" not in record.getMessage()


def main(args: ArgsType) -> None:
    """``python -m experiments tune <args>``."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").addFilter(_restore_note)
    args = [str(a) for a in args or []]
    for arg in args:  # a mistyped --tune.<name>: "did you mean", as fit's flags get
        flag = re.match(r"--tune\.(\w+)", arg)
        if flag and flag.group(1) not in ("help", *parameters(Tune)):
            unknown_setting(flag.group(1))
    try:
        cli = TuneCLI(args)
    except ArgumentError as error:  # the same mistake in a config file's tune section
        unknown = re.search(r"Group 'tune' does not accept option '(\w+)'", str(error))
        if unknown is None:
            raise
        unknown_setting(unknown.group(1))
    Tuning(cli).run()


def unknown_setting(name: str) -> None:
    """Refuse ``tune.<name>``, a setting ``Tune`` does not have, naming the closest one."""
    known = parameters(Tune)
    match = closest(name, known)
    hint = f"did you mean {match}?" if match else f"it takes: {', '.join(known)}"
    raise ExperimentError(f"tune.{name}: tune has no setting {name!r}; {hint}")
