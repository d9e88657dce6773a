"""The ``experiments`` command: LightningCLI with the defaults every lesson shares.

    python -m experiments fit --config configs/linear_regression.yaml
    python -m experiments test --config configs/linear_regression.yaml --ckpt_path best
    python -m experiments fit --model FeedForwardNet --data RandomTensorDataModule
    python -m experiments fit --model.help SineRNN
    python -m experiments sweep --config mnist_convnet --sweep mnist_convnet   # experiments/sweep.py

What every lesson inherits, and any config or flag can override:
- TensorBoard logs in ``lightning_logs/<experiment>/version_N``; ``<experiment>`` is the first config
  file's name (``linear_regression``), else the model class's name; set ``trainer.logger.init_args.name``
  to choose another.
- ``checkpoint``: a ModelCheckpoint keeping the best epoch on ``checkpoint.monitor`` (``val/loss``
  unless the lesson's config says otherwise), and ``last_checkpoint``: ``last.ckpt``, written at an
  epoch's end at most every ``last_checkpoint.min_interval`` seconds and when training ends; both in the
  run folder's ``checkpoints/``.
- ``lr_monitor``: the learning rate in TensorBoard. ``prediction_writer``: ``predict`` output saved as
  ``predictions.pt`` in the run folder.
- ``seed_everything: 42``; the resolved config saved as ``config.yaml`` beside the logs.
- Sizes the data decides reach the model without being repeated in the config: a datamodule with a
  ``vocab_size`` or ``num_classes`` attribute (a property, or set in ``__init__``) gives it to the
  model's ``__init__`` argument of the same name (``DATA_TO_MODEL``); a datamodule without it leaves
  the model's configured value alone.
- ``--ckpt_path last`` / ``best`` find the newest run of the same experiment that has checkpoints.

A user's mistake (missing file, unknown class or key, wrong type) ends with one ``error:`` line and exit
status 2; set ``EXPERIMENTS_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import logging
import os
import random
import re
import sys
import warnings
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse._actions import _ActionPrintConfig
from jsonargparse._deprecated import JsonargparseDeprecationWarning
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, RichModelSummary, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from core.callbacks import PredictionWriter
from core.distributed import run_dir
from core.errors import ExperimentError
from core.figures import FigureThread
from experiments.callbacks import Checkpoint, LastCheckpoint, LearningRateLogger
from experiments.compile import Compile, compile_failure
from experiments.configs import resolve_main_args
from experiments.faults import (
    DropFailedRun,
    EndTogether,
    ExactResume,
    FiniteLossGuard,
    remove_stale_temporaries,
    use_atomic_checkpoints,
)
from experiments.messages import USER_ERRORS, check_config_files, checkpoint_model, one_line, read_checkpoint
from experiments.preemption import Preemption, slurm_topology
from experiments.progress import EpochLines, LayerSummary, RichLayerSummary, stdout_is_terminal
from experiments.runs import LOG_ROOT, EvaluationStep, RunLayout, checkpoint_step
from experiments.sweep_trial import TrialAddress, TrialReport
from experiments.tensorboard import HParams, ScalarsLayout

DEBUG_VARIABLE = "EXPERIMENTS_DEBUG"
# No abbreviated flags: --trainer.max_epoch would run as max_epochs; a typo gets "did you mean".
PARSER_KWARGS: dict[str, Any] = {"exit_on_error": False, "allow_abbrev": False}
DESCRIPTION = (
    "Train and evaluate the lessons' experiments (fit, validate, test, predict). `python -m experiments "
    "sweep --help`: the hyperparameter search, with Optuna."
)

#: Datamodule attributes that become the model's init argument of the same name when the datamodule has
#: them (properties computed from the data, or attributes set in ``__init__``).
DATA_TO_MODEL = ("in_features", "num_classes", "vocab_size")


def _plain(value: Any) -> Any:
    """A value as a config and a checkpoint can both hold it (tuples and lists alike)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def experiment_name(config: Namespace) -> str:
    """The first config file's stem, else the model class name in snake case."""
    files = config.get("config") or []
    if files:
        return Path(str(files[0])).stem
    model = config.get("model")
    class_path = model.get("class_path") if isinstance(model, Namespace) else None
    return snake_case(class_path.rsplit(".", 1)[-1]) if class_path else "experiment"


class ExperimentArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, except that a dumped config (``config.yaml``, ``--print_config``) keeps the
    values of link targets, and ``config.yaml`` is written without validating the parsed config again.

    jsonargparse leaves link targets out of dumps by default, as values the links recompute. The
    ``DATA_TO_MODEL`` links target the image classifiers' ``num_classes`` too, so that default would
    drop an image lesson's configured ``num_classes: 3`` from the run's ``config.yaml``, which then
    rebuilds a 10-class model that its checkpoint does not fit. A value the data provides is recomputed
    on reuse anyway, so keeping targets loses nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # jsonargparse builds the parser of `fit --model.help <class>` without the subcommand in its
        # usage line ("usage: python -m experiments [--model...]"); the command line names it.
        if str(kwargs.get("description", "")).startswith("Help for "):
            subcommand = next((a for a in sys.argv[1:] if a in ("fit", "validate", "test", "predict")), None)
            if subcommand and not self.prog.endswith(subcommand):
                self.prog = f"{self.prog} {subcommand}"

    def format_help(self) -> str:
        # Docstrings (Lightning's and ours) mark code with reStructuredText's double back-quotes.
        return super().format_help().replace("``", "`")

    def dump(self, namespace: Namespace, *args: Any, skip_link_targets: bool = False, **kwargs: Any) -> str:
        return super().dump(namespace, *args, skip_link_targets=skip_link_targets, **kwargs)

    def save(self, namespace: Namespace, *args: Any, skip_validation: bool = True, **kwargs: Any) -> None:
        # Only SaveConfigCallback saves, at the start of each fit, a config that parsing has already
        # validated: validating it again took 23 of the 36 ms of writing config.yaml.
        super().save(namespace, *args, skip_validation=skip_validation, **kwargs)


class _DataAttributeError(BaseException):
    """Carries a user error raised by a datamodule attribute out of jsonargparse's link machinery.

    jsonargparse turns any ``Exception`` from a link's ``compute_fn`` into a ValueError whose message
    formats the datamodule with ``str()``, and a LightningDataModule's ``__str__`` builds every loader
    (reading, or failing on, the data). A BaseException passes through; the CLI unwraps it.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class RunConfig(SaveConfigCallback):
    """Saves the run's ``config.yaml`` in its run folder whatever the logger (Lightning's saves it in
    ``trainer.log_dir``, which for MLflow is the store shared by every run). Rank 0 writes; nothing here
    communicates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        folder = run_dir(trainer)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = self.config_filename
        if stage != "fit" and not isinstance(trainer.loggers[0], (TensorBoardLogger, CSVLogger)):
            # An evaluation logged into an MLflow run: beside the training's config, not over it.
            name = f"{Path(name).stem}_{getattr(stage, 'value', stage)}{Path(name).suffix}"
        path = str(folder / name)
        self.parser.save(
            self.config, path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile
        )


class ExperimentCLI(LightningCLI):
    """LightningCLI whose models and datamodules are any class of ``modules/`` and ``datamodules/``."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        silence_known_warnings()  # also when the CLI is used in-process (tests, notebooks), not via main
        kwargs.setdefault("seed_everything_default", 42)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", RunConfig)
        # Each module takes its optimiser as an argument (dependency injection), so no top-level one.
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", PARSER_KWARGS)
        kwargs.setdefault("parser_class", ExperimentArgumentParser)
        trainer_defaults = {
            "logger": {
                # TensorBoardLogger with its epoch counter under train/ (experiments/tensorboard.py).
                "class_path": "experiments.tensorboard.TensorBoard",
                # name None means "the experiment's name", filled in after parsing.
                # default_hp_metric off: it only writes a placeholder "hp_metric" of -1 to every run.
                "init_args": {"save_dir": LOG_ROOT, "name": None, "default_hp_metric": False},
            },
            **kwargs.pop("trainer_defaults", {}),
        }
        super().__init__(
            model_class=None,
            datamodule_class=None,
            trainer_defaults=trainer_defaults,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                # last.ckpt comes from last_checkpoint (experiments/callbacks.py).
                "checkpoint.save_last": False,
                "checkpoint.save_top_k": 1,
                # No metric names in file names: "val/loss" would make a sub-folder.
                "checkpoint.filename": "best-epoch={epoch}-step={step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(LearningRateLogger, "lr_monitor")
        # Once per epoch: the lessons' schedulers step per epoch, and a write per step costs more than a
        # step of the small lessons. --lr_monitor.logging_interval step for per-step schedules.
        parser.set_defaults({"lr_monitor.logging_interval": "epoch"})
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        self.link_data_to_model(parser)
        # Fault tolerance (experiments/faults.py): exact resumption, NaN stop, SLURM requeue.
        parser.add_lightning_class_args(ExactResume, "exact_resume")
        parser.add_lightning_class_args(FiniteLossGuard, "nan_guard")
        parser.add_lightning_class_args(Preemption, "preemption")
        parser.add_lightning_class_args(Compile, "compile")
        # Figures drawn on a background thread, at most 5 % of the run's time (core/figures.py).
        parser.add_lightning_class_args(FigureThread, "figures")

    def link_data_to_model(self, parser: LightningArgumentParser) -> None:
        """Link each ``DATA_TO_MODEL`` attribute of the datamodule to the model's argument of that name.

        A link ``data -> model.init_args.<name>`` applied on instantiation: the datamodule is built first,
        the link reads its attribute and passes it to the model's ``__init__``, and the model's argument
        is not required in the config. The classes are chosen by the config, so each link meets four
        cases, and jsonargparse 4.x / Lightning 2.6 need help with three of them:
        - data has it, model takes it: the data's value is used; it wins over one in the config, as
          link targets do in jsonargparse.
        - data lacks it, model takes it (the image lessons, ``num_classes: 10`` in their configs): a
          link from ``data.<name>`` would be skipped, but jsonargparse's debug message for the skip
          formats the datamodule with ``str()``, and a LightningDataModule's ``__str__`` builds every
          dataloader (loading the data, and failing for loaders that are not DataLoaders). So the link's
          source is the whole datamodule and its ``compute_fn`` reads the attribute; an absent or None
          attribute ("not known from the data") gives back the model's configured value.
        - model lacks it: jsonargparse drops the value ("target not found") but reports the link as
          applied, and LightningCLI writes applied link values into the model's hyperparameters, so
          every checkpoint would carry a ``vocab_size: None`` its class does not take;
          ``_drop_foreign_link_values`` removes those after instantiation.
        Linking in ``before_instantiate_classes``, only for the model chosen, would avoid the last case
        but comes after parsing, which already rejects a config that omits a required ``vocab_size``.
        """
        for name in DATA_TO_MODEL:
            compute = self._data_attribute(name)
            parser.link_arguments("data", f"model.init_args.{name}", compute, apply_on="instantiate")

    def _data_attribute(self, name: str) -> Callable[[LightningDataModule], Any]:
        def compute(datamodule: LightningDataModule) -> Any:
            if name not in self._model_parameters():
                return None  # dropped; and a property that reads the data need not run for nothing
            # Looked up statically, so an AttributeError raised inside a property is a bug that
            # surfaces, not an attribute taken for absent.
            if inspect.getattr_static(datamodule, name, None) is None:
                return self._configured_model_argument(name)
            try:
                value = getattr(datamodule, name)
            except ExperimentError as error:
                raise _DataAttributeError(error) from error
            return self._configured_model_argument(name) if value is None else value

        compute.__name__ = f"{name}_of"  # jsonargparse names links "<compute_fn>(data) --> <target>"
        return compute

    def _run_config(self) -> Namespace:
        """The parsed config of this run: the subcommand's part, or the whole of it without one."""
        subcommand = self.config.get("subcommand")
        return self.config.get(subcommand) if subcommand else self.config

    def _model_config(self) -> Namespace:
        return self._run_config().get("model") or Namespace()

    def _model_parameters(self) -> Container[str]:
        """Names of the chosen model class's ``__init__`` parameters, from its class path in the config."""
        module_name, _, class_name = str(self._model_config().get("class_path", "")).rpartition(".")
        if not module_name:
            return ()
        return inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters

    def _configured_model_argument(self, name: str) -> Any:
        """The model's ``name`` as parsed from the config and command line (None if it has none)."""
        init_args = self._model_config().get("init_args")
        return init_args.get(name) if isinstance(init_args, Namespace) else None

    def _drop_foreign_link_values(self) -> None:
        """Remove ``DATA_TO_MODEL`` values from the hyperparameters of a model whose ``__init__`` does not
        take them (see ``link_data_to_model``); checkpoints and logged hyperparameters hold what it took."""
        parameters = inspect.signature(type(self.model)).parameters
        foreign = {name for name in DATA_TO_MODEL if name not in parameters and name in self.model.hparams}
        if foreign:
            for name in foreign:
                self.model.hparams.pop(name)
            # Saving the hyperparameters again refreshes the copy Lightning logs when training starts
            # (hparams_initial, read-only): the public way to change what a module reports.
            self.model.save_hyperparameters(dict(self.model.hparams))

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # --print_config prints after the names and folders are filled in, so that its output, given
        # back with --config, runs the same experiment (jsonargparse would print before).
        with _ActionPrintConfig.skip_print_config():
            super().parse_arguments(parser, args)
        config = self._run_config()
        layout = RunLayout.configure(config.trainer, experiment_name(config))
        self.complete_config(config, layout)
        if _ActionPrintConfig.is_print_config_requested(parser):
            if config.get("seed_everything") is True:  # "a random seed": print the one it would be
                config.seed_everything = random.SystemRandom().randrange(2**32)
            _ActionPrintConfig.print_config_if_requested(parser, self.config)
        # The folders there are now: a run that fails before training removes only what it made.
        if layout.kind == "folders" and layout.root is not None:
            made_before = [layout.root.parent, layout.root, *layout.runs()]
            self._existing_runs = {folder for folder in made_before if folder.exists()}
        self._resolve_ckpt_path(config, layout)

    def complete_config(self, config: Namespace, layout: RunLayout) -> None:
        """Fill in what the parsed ``config`` leaves to the command, before ``--print_config`` shows it
        (the sweep command's defaults); the logger's names and folders are already filled by ``layout``."""

    def before_instantiate_classes(self) -> None:
        trainer = self._run_config().trainer
        trainer.num_nodes, trainer.devices = slurm_topology(trainer.num_nodes, trainer.devices)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        # Not configurable callbacks: there is nothing to set, and a run must never go without them.
        trainer.callbacks.append(EndTogether())
        trainer.callbacks.append(DropFailedRun(getattr(self, "_existing_runs", set())))
        trainer.callbacks.append(ScalarsLayout())
        trainer.callbacks.append(HParams(self._run_config()))
        address = TrialAddress.from_environment()
        if address is not None and self.config.get("subcommand") == "fit":
            trainer.callbacks.append(TrialReport(address))  # a sweep's trial (experiments/sweep.py)
        if getattr(self, "_evaluation_step", None) is not None:
            trainer.callbacks.append(EvaluationStep(self._evaluation_step))
        if not self._chosen_callback("ModelSummary"):
            # Lightning's default summary also lists the lessons' metric objects as layers.
            swap = {ModelSummary: LayerSummary, RichModelSummary: RichLayerSummary}
            callbacks = trainer.callbacks
            callbacks[:] = [
                swap[type(c)](max_depth=c._max_depth) if type(c) in swap else c for c in callbacks
            ]
        if not stdout_is_terminal() and not self._chosen_callback("ProgressBar"):
            # Lightning's default bar (tqdm's, or rich's when rich is installed) redraws itself with
            # carriage returns: in a log file, one line per epoch instead (experiments/progress.py).
            bars = (TQDMProgressBar, RichProgressBar)
            callbacks = trainer.callbacks
            callbacks[:] = [EpochLines() if type(c) in bars else c for c in callbacks]
        return trainer

    def _chosen_callback(self, kind: str) -> bool:
        """Whether the config or command line names a callback whose class name contains ``kind``."""
        callbacks = self._run_config().trainer.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        return any(kind in str(getattr(c, "class_path", c)) for c in callbacks)

    def instantiate_classes(self) -> None:
        # A constructor that rejects its arguments (ValueError) is a configuration mistake, not a bug.
        try:
            super().instantiate_classes()
            self._drop_foreign_link_values()
        except ValueError as error:
            raise ExperimentError(one_line(error)) from error
        except _DataAttributeError as carrier:
            raise carrier.error from None

    def _resolve_ckpt_path(self, config: Namespace, layout: RunLayout) -> None:
        ckpt_path = config.get("ckpt_path")
        subcommand = self.config.get("subcommand")
        if ckpt_path in ("last", "best"):
            found = layout.find_checkpoint(ckpt_path)
            if found is None and subcommand != "fit":
                last = layout.find_checkpoint("last") if ckpt_path == "best" else None
                if last is not None:
                    raise ExperimentError(
                        f"--ckpt_path best: {last} has no best checkpoint yet (a best one is kept only "
                        "after a validation has run); give --ckpt_path last, or fit with validation"
                    )
                where = layout.root if layout.kind == "none" else f"the runs of {layout.experiment}"
                raise ExperimentError(
                    f"--ckpt_path {ckpt_path}: no checkpoint in {where} ({layout.logger}, under "
                    f"{layout.root}); run fit first or give a checkpoint file"
                )
            # Resuming a run that never saved a checkpoint starts from scratch, as Lightning does.
            config.ckpt_path = ckpt_path = str(found) if found is not None else None
        if not ckpt_path:
            return
        path = Path(ckpt_path)
        if not path.exists():
            raise ExperimentError(f"checkpoint file not found: {ckpt_path}")
        # A write of a checkpoint beside it that was killed left a temporary file: gone at this start
        # (rank 0's job; rank_zero_only.rank is read from the launcher's environment).
        if rank_zero_only.rank == 0:
            remove_stale_temporaries(path.parent)
        checkpoint = read_checkpoint(path)
        self._check_checkpoint_model(checkpoint, path)
        # One of the experiment's own checkpoints keeps its work in the run that made it: a resumed fit
        # continues there, an evaluation writes into it at the checkpoint's step (experiments/runs.py).
        run = layout.run_of(path) if layout.kind != "none" else None
        if run is not None:
            # A config of another name evaluating this experiment's checkpoint (feature_extraction.yaml
            # of mnist_convnet's) gets a folder of its own beside the experiment's own evaluations.
            config_name = experiment_name(config)
            label = subcommand if config_name == layout.experiment else f"{subcommand}_{config_name}"
            layout.log_into(config.trainer, run, label)
        # The checkpoint callbacks pointed at the folder the checkpoint was written in reload their state
        # as saved instead of warning that "the dirpath has changed": a resumed fit writes on there; an
        # evaluation writes nothing, so the folder recorded in the file serves even for a copied file.
        if subcommand in ("validate", "test", "predict"):
            self._evaluation_step = checkpoint_step(checkpoint)
            states = checkpoint.get("callbacks", {}).values()
            recorded = [s["dirpath"] for s in states if isinstance(s, dict) and s.get("dirpath")]
            folder = recorded[0] if recorded else str(path.parent)
            config.checkpoint.dirpath = config.last_checkpoint.dirpath = folder
        elif run is not None:
            config.checkpoint.dirpath = config.last_checkpoint.dirpath = str(path.parent)
            # Resuming in the run means its checkpoints folder is not empty, which Lightning warns of.
            folder = re.escape(os.path.realpath(path.parent))
            warnings.filterwarnings("ignore", message=rf"Checkpoint directory {folder} exists and is not")

    def _check_checkpoint_model(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Lightning builds the model a checkpoint names, whatever the config says: another lesson's
        checkpoint is an error naming both; a configured argument the checkpoint overrides is said."""
        saved = checkpoint_model(checkpoint)
        configured = str(self._model_config().get("class_path", "")) or None
        if saved is None or configured is None:
            return
        if saved.rsplit(".", 1)[-1] != configured.rsplit(".", 1)[-1]:
            raise ExperimentError(
                f"--ckpt_path {path} holds a {saved.rsplit('.', 1)[-1]}, but the config builds a "
                f"{configured.rsplit('.', 1)[-1]}: give a checkpoint of this lesson, or the config it was "
                "trained with (config.yaml in its run folder)"
            )
        hparams = checkpoint.get("hyper_parameters") or {}
        init_args = self._model_config().get("init_args")
        differ = [
            f"{key}={hparams[key]!r} (configured {value!r})"
            for key, value in (vars(init_args).items() if isinstance(init_args, Namespace) else [])
            if key in hparams and key not in DATA_TO_MODEL and not isinstance(value, Namespace)
            and _plain(hparams[key]) != _plain(value)
        ]  # fmt: skip
        if differ:
            print(f"note: {path} was trained with {', '.join(differ)}: the checkpoint's values are used")


def lightning_output_to_stdout() -> None:
    """Lightning's messages (the seed, the devices, the model summary) go to stdout, where a program's
    output goes: stderr keeps what went wrong, so a mistake is its one line there."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                handler.setStream(sys.stdout)
    # Lightning 2.6 advertises its cloud logger on every run; nothing a lesson's user asked about.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvert())


class _NoAdvert(logging.Filter):
    """Drops Lightning's "💡 Tip: ... litlogger" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def silence_known_warnings(*messages: str) -> None:
    """Ignore Lightning's warnings that say nothing a user of the lessons can act on, and ``messages``
    (regular expressions) as well; benchmarks that run the CLI in-process call it too."""
    # Lightning 2.6 on torch 2.14 warns about its own use of a torch API on every run; not actionable.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Batch indices are only known for DataLoader samplers; nothing here uses them.
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices")
    # Lessons log epoch values computed by torchmetrics, which has already reduced them over all ranks;
    # Lightning cannot tell and asks for sync_dist, which would only average identical numbers again.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(train|val|test)/")
    # Lightning 2.6 calls jsonargparse APIs that jsonargparse 4.49 deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", category=JsonargparseDeprecationWarning, module=r"lightning\.")
    # Every lesson logs per epoch (core/metrics.py), so a run shorter than log_every_n_steps loses nothing.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than")
    # On a machine with SLURM's programs, Lightning warns on every run started outside `srun`: a hint for
    # a multi-process job, noise for the one-process runs, sweeps and bad-config errors of a login node.
    # scripts/slurm.sbatch starts jobs with srun; the README's SLURM lines say so.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not")
    for message in messages:
        warnings.filterwarnings("ignore", message=message)


def refuse_shell_completion(args: list[str]) -> None:
    """One line instead of jsonargparse's completion flags. Its generated bash script for this command is
    114 MB and takes 18 s to write and 3 s to load in every shell (it expands the arguments of every
    class a flag can take, torch's included), so the command does not offer one."""
    flags = [a for a in args if a.split("=")[0] in ("--print_shtab", "--print_completion")]
    if flags:
        raise ExperimentError(
            f"{flags[0].split('=')[0]}: this command has no shell completion (jsonargparse's script for "
            "it is over 100 MB); see `python -m experiments fit --help` and `--model.help <class>`"
        )


def sweep(args: list[str]) -> None:
    """``python -m experiments sweep``; Optuna is an extra (``pip install -e ".[sweep]"``)."""
    try:
        from experiments import sweep as sweep_command
    except ImportError as error:
        if error.name not in ("optuna", "sqlalchemy"):
            raise
        raise ExperimentError(
            f'the sweep command needs {error.name}, which is not installed: pip install -e ".[sweep]"'
        ) from None
    sweep_command.main(args)


def main(args: ArgsType = None) -> None:
    """Entry point of ``python -m experiments`` and the ``experiments`` script."""
    lightning_output_to_stdout()
    try:
        args = resolve_main_args(args)
        given = sys.argv[1:] if args is None else [str(a) for a in args]
        refuse_shell_completion(given)
        check_config_files(given)
        if given[:1] == ["sweep"]:
            sweep(given[1:])
        else:
            ExperimentCLI(args=args, parser_kwargs={**PARSER_KWARGS, "description": DESCRIPTION})
    except Exception as error:
        disk_full = isinstance(error, OSError) and error.errno == errno.ENOSPC
        compiler = compile_failure(error)
        known = isinstance(error, USER_ERRORS) or disk_full or compiler is not None
        if not known or os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"error: {compiler or one_line(error)}", file=sys.stderr)
        sys.exit(2)
