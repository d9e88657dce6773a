"""``ExperimentCLI``: LightningCLI with the defaults every lesson shares (the command's entry point,
which turns mistakes into one line, is experiments/main.py).

    python -m experiments fit --config configs/linear_regression.yaml
    python -m experiments test --config configs/linear_regression.yaml --ckpt_path best
    python -m experiments fit --model FeedForwardNet --data RandomTensorDataModule
    python -m experiments fit --model.help SineRNN

What every lesson inherits, and any config or flag can override:
- models and datamodules are any class of ``modules/`` and ``datamodules/``, by name;
- TensorBoard logs in ``lightning_logs/<experiment>/version_N``; ``<experiment>`` is the first config
  file's name (``linear_regression``), else the model class's name; set ``trainer.logger.init_args.name``
  to choose another (experiments/runs.py);
- the parts of experiments/parts.py, each a callback with its flags (``--checkpoint.*``,
  ``--last_checkpoint.*``, ...), each switched off by ``--<part>.enabled false``; and the callbacks
  every run carries whatever it is given: ``RunLogs`` (experiments/tensorboard.py), ``FailedRun``
  (experiments/faults.py), and in a sweep's trial its report (experiments/sweep/trial.py);
- ``seed_everything: 42``; the resolved config saved as ``config.yaml`` in the run folder;
- sizes the data decides (``num_classes``, ``vocab_size``, ``in_features``) reach the model through
  the data-to-model links (experiments/links.py);
- ``--ckpt_path last`` / ``best`` find the newest run of the same experiment that has checkpoints, and a
  checkpoint keeps its work in its run (experiments/ckpt_path.py).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse._actions import _ActionPrintConfig
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import (
    ModelCheckpoint,
    ModelSummary,
    RichModelSummary,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from core.distributed import artifacts_elsewhere, run_dir
from core.errors import ExperimentError
from core.figures import figure_worker
from experiments.checkpoint_io import use_atomic_checkpoints
from experiments.ckpt_path import EvaluationPoint, resolve_ckpt_path
from experiments.domains import check_config
from experiments.faults import FailedRun
from experiments.links import DataAttributeError, DataToModel
from experiments.manifest import RunManifest
from experiments.messages import one_line
from experiments.parameters import given_names, run_parameters
from experiments.parts import add_parts, build_parts
from experiments.preemption import slurm_topology
from experiments.progress import (
    TRIAL_VARIABLE,
    EpochLines,
    LayerSummary,
    OutputPaths,
    RichBar,
    RichLayerSummary,
    in_sweep_trial,
    round_printed_results,
    silence_known_warnings,
    stdout_is_terminal,
)
from experiments.runs import LOG_ROOT, RunLayout, experiment_name
from experiments.tensorboard import RunLogs

# No abbreviated flags: --trainer.max_epoch would run as max_epochs; a typo gets "did you mean".
PARSER_KWARGS: dict[str, Any] = {"exit_on_error": False, "allow_abbrev": False}

#: The callback with which a sweep trial's fit (``TRIAL_VARIABLE`` set, experiments/progress.py) reports to
#: its trial. It is imported by name when a trial runs: the sweep command builds on this module, so this
#: module does not import it.
TRIAL_REPORT = "experiments.sweep.trial.TrialReport"


class ExperimentArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, except that a dumped config (``config.yaml``, ``--print_config``) keeps the
    values of link targets, and ``config.yaml`` is written without validating the parsed config again.

    jsonargparse leaves link targets out of dumps by default, as values the links recompute. The
    data-to-model links target the image classifiers' ``num_classes`` too, so that default would drop an
    image lesson's configured ``num_classes: 3`` from the run's ``config.yaml``, which then rebuilds a
    10-class model that its checkpoint does not fit. A value the data provides is recomputed on reuse
    anyway, so keeping targets loses nothing.
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


class RunConfig(SaveConfigCallback):
    """Saves the run's ``config.yaml`` in its run folder whatever the logger (Lightning's saves it in
    ``trainer.log_dir``, which for MLflow is the store shared by every run): with MLflow the run's
    artifact folder (experiments/runs.py). With an MLflow tracking server that keeps the artifacts
    itself, the run folder (config, checkpoints, figures, predictions) is uploaded to the run at the end
    of each stage that ends normally. Rank 0 writes; nothing here communicates."""

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

    def teardown(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        logger = artifacts_elsewhere(trainer)
        folder = run_dir(trainer)
        if logger is None or folder is None or not folder.is_dir():
            return
        worker = figure_worker()
        if worker is not None:  # the stage's last figures are still being drawn
            worker.flush()
        logger.experiment.log_artifacts(str(logger.run_id), str(folder))


@contextlib.contextmanager
def configuration_mistakes() -> Iterator[None]:
    """Building the config's classes: a constructor that rejects its arguments (ValueError) is a
    configuration mistake, not a bug, and so is a size the data cannot give (experiments/links.py)."""
    try:
        yield
    except ValueError as error:
        raise ExperimentError(one_line(error)) from error
    except DataAttributeError as carrier:
        raise carrier.error from None


class ExperimentCLI(LightningCLI):
    """LightningCLI whose models and datamodules are any class of ``modules/`` and ``datamodules/``, with
    the parts, links, run layout and checkpoint handling every lesson shares (see the module)."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        silence_known_warnings()  # also when the CLI is used in-process (tests, notebooks), not via main
        self.links = DataToModel(self._model_config)
        #: The folders there were before this run (a run that fails early removes only what it made), and
        #: for an evaluation of a checkpoint, the step to log it at.
        self._existing_runs: set[Path] = set()
        self._evaluation: EvaluationPoint | None = None
        self._arguments: ArgsType = None  # the command line, for the parameters it sets
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
        add_parts(parser)
        self.links.add_to(parser)

    def _run_config(self) -> Namespace:
        """The parsed config of this run: the subcommand's part, or the whole of it without one."""
        subcommand = self.config.get("subcommand")
        return self.config.get(subcommand) if subcommand else self.config

    def _model_config(self) -> Namespace:
        return self._run_config().get("model") or Namespace()

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # --print_config prints after the names and folders are filled in, so that its output, given
        # back with --config, runs the same experiment (jsonargparse would print before).
        self._arguments = sys.argv[1:] if args is None else args
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
        self._evaluation = resolve_ckpt_path(config, layout, self.config.get("subcommand"))

    def complete_config(self, config: Namespace, layout: RunLayout) -> None:
        """Fill in what the parsed ``config`` leaves to the command, before ``--print_config`` shows it
        (the sweep command's defaults); the logger's names and folders are already filled by ``layout``."""

    def before_instantiate_classes(self) -> None:
        trainer = self._run_config().trainer
        trainer.num_nodes, trainer.devices = slurm_topology(trainer.num_nodes, trainer.devices)
        check_config(self._run_config())  # values outside their domain: one line naming the flag

    def instantiate_classes(self) -> None:
        with configuration_mistakes():
            super().instantiate_classes()
            self.links.drop_foreign(self.model)
        self.links.note()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._run_config()
        chosen = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        chosen = chosen if isinstance(chosen, list) else [chosen]
        callbacks = [*chosen, *build_parts(config)]
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            # With its checkpoint parts left out, a run writes no checkpoints: Lightning would add one.
            kwargs["enable_checkpointing"] = False
        trainer = super().instantiate_trainer(**kwargs, callbacks=callbacks)
        use_atomic_checkpoints(trainer)
        # Not configurable: there is nothing to set, and a run must never go without them.
        trainer.callbacks.append(FailedRun(self._existing_runs))
        trainer.callbacks.append(RunLogs(self._run_parameters(config), self._evaluation))
        trainer.callbacks.append(RunManifest(config))  # run.json (experiments/manifest.py)
        if os.environ.get(TRIAL_VARIABLE) and self.config.get("subcommand") == "fit":
            module, _, name = TRIAL_REPORT.rpartition(".")
            trainer.callbacks.append(getattr(importlib.import_module(module), name).from_environment())
        if not self._chosen_callback("ModelSummary"):
            # Lightning's default summary also lists the lessons' metric objects as layers, and FLOPs it
            # did not count; a sweep's trial shows none: every trial's would be the same table.
            swap = {ModelSummary: LayerSummary, RichModelSummary: RichLayerSummary}
            trial = in_sweep_trial()
            callbacks = trainer.callbacks
            callbacks[:] = [
                swap[type(c)](max_depth=c._max_depth) if type(c) in swap else c
                for c in callbacks
                if not (trial and type(c) in swap)
            ]
        if not stdout_is_terminal() and not self._chosen_callback("ProgressBar"):
            # Lightning's default bar (tqdm's, or rich's when rich is installed) redraws itself with
            # carriage returns: in a log file, one line per epoch instead (experiments/progress.py).
            bars = (TQDMProgressBar, RichProgressBar)
            callbacks = trainer.callbacks
            callbacks[:] = [EpochLines() if type(c) in bars else c for c in callbacks]
        elif not self._chosen_callback("ProgressBar"):
            # In a terminal, rich's bar with its metrics as the epoch lines give them.
            callbacks = trainer.callbacks
            callbacks[:] = [RichBar() if type(c) is RichProgressBar else c for c in callbacks]
        # Results to 4 significant digits, and where the run went as its last lines (experiments/progress.py).
        round_printed_results(trainer)
        trainer.callbacks.append(OutputPaths())
        return trainer

    def _run_parameters(self, config: Namespace) -> dict[str, Any]:
        """The parameters every logger records (experiments/parameters.py); in a sweep's trial, the keys
        the sweep varies are among them whatever their values."""
        subcommand = self.config.get("subcommand")
        trial = json.loads(os.environ.get(TRIAL_VARIABLE) or "{}")
        given = given_names(self._arguments, subcommand)
        defaults = self._parser(subcommand).get_defaults()
        return run_parameters(config, defaults, given, trial.get("parameters") or [])

    def _chosen_callback(self, kind: str) -> bool:
        """Whether the config or command line names a callback whose class name contains ``kind``."""
        callbacks = self._run_config().trainer.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        return any(kind in str(getattr(c, "class_path", c)) for c in callbacks)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        # Every checkpoint Lightning loads (--ckpt_path, the SLURM requeue checkpoint) is read weights-only,
        # so that none runs code: Lightning's default (None) leaves it to torch, which loads everything
        # when TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set; an explicit True it cannot override. resolve_ckpt_path
        # refuses --weights_only false and reads the checkpoint weights-only first, for its one error line.
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            kwargs["weights_only"] = True
        return kwargs
