"""The ``experiments`` command: LightningCLI with the defaults every lesson shares.

    python -m experiments fit --config configs/linear_regression.yaml
    python -m experiments test --config configs/linear_regression.yaml --ckpt_path best
    python -m experiments fit --model FeedForwardNet --data RandomTensorDataModule
    python -m experiments fit --model.help SineRNN

What every lesson inherits, and any config or flag can override:
- TensorBoard logs in ``lightning_logs/<experiment>/version_N``; ``<experiment>`` is the first config
  file's name (``linear_regression``), else the model class's name; set ``trainer.logger.init_args.name``
  to choose another.
- ``checkpoint``: a ModelCheckpoint keeping the best epoch on ``checkpoint.monitor`` (``val/loss``
  unless the lesson's config says otherwise), and ``last_checkpoint``: ``last.ckpt``, rewritten every
  epoch; both in the run folder's ``checkpoints/``.
- ``lr_monitor``: the learning rate in TensorBoard. ``prediction_writer``: ``predict`` output saved as
  ``predictions.pt`` in the run folder.
- ``seed_everything: 42``; the resolved config saved as ``config.yaml`` beside the logs.
- ``--ckpt_path last`` / ``best`` find the newest run of the same experiment that has checkpoints.

A user's mistake (missing file, unknown class or key, wrong type) ends with one ``error:`` line and exit
status 2; set ``EXPERIMENTS_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import datamodules
import modules
from experiments.callbacks import Checkpoint, LastCheckpoint, LearningRateLogger, PredictionWriter
from experiments.errors import ExperimentError

LOG_ROOT = "lightning_logs"
DEBUG_VARIABLE = "EXPERIMENTS_DEBUG"


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


def find_checkpoint(log_root: Path, which: str) -> Path | None:
    """The ``last`` or ``best`` checkpoint of the newest ``version_N`` under ``log_root`` that has one."""
    versions = sorted(
        (p for p in log_root.glob("version_*") if p.name.split("_")[-1].isdigit()),
        key=lambda p: int(p.name.split("_")[-1]),
        reverse=True,
    )
    for version in versions:
        last = version / "checkpoints" / "last.ckpt"
        if not last.is_file():
            continue
        if which == "last":
            return last
        # ModelCheckpoint records its best file in its state inside last.ckpt.
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        for value in state.get("callbacks", {}).values():
            if isinstance(value, dict) and value.get("best_model_path"):
                best = Path(value["best_model_path"])
                if best.is_file():
                    return best
    return None


class ExperimentCLI(LightningCLI):
    """LightningCLI whose models and datamodules are any class of ``modules/`` and ``datamodules/``."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("seed_everything_default", 42)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # Each module takes its optimiser as an argument (dependency injection), so no top-level one.
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"exit_on_error": False})
        trainer_defaults = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
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
                # last.ckpt comes from last_checkpoint, which writes it every epoch.
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

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        config = (
            self.config.get(self.config.get("subcommand")) if self.config.get("subcommand") else self.config
        )
        name = experiment_name(config)
        logger = config.trainer.get("logger")
        save_dir = Path(LOG_ROOT)
        if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
            if logger.init_args.get("name") is None:
                logger.init_args.name = name
            name = logger.init_args.name
            save_dir = Path(logger.init_args.get("save_dir") or LOG_ROOT)
        self._resolve_ckpt_path(config, save_dir / name)

    def instantiate_classes(self) -> None:
        # A constructor that rejects its arguments (ValueError) is a configuration mistake, not a bug.
        try:
            super().instantiate_classes()
        except ValueError as error:
            raise ExperimentError(one_line(error)) from error

    def _resolve_ckpt_path(self, config: Namespace, log_root: Path) -> None:
        ckpt_path = config.get("ckpt_path")
        if ckpt_path not in ("last", "best"):
            if ckpt_path and not Path(ckpt_path).is_file():
                raise ExperimentError(f"checkpoint file not found: {ckpt_path}")
            return
        found = find_checkpoint(log_root, ckpt_path)
        if found is not None:
            config.ckpt_path = str(found)
        elif self.config.get("subcommand") != "fit":
            raise ExperimentError(
                f"--ckpt_path {ckpt_path}: no checkpoint under {log_root}/version_*/checkpoints; "
                "run fit first or give a checkpoint file"
            )
        else:
            # Resuming a run that never saved a checkpoint: start from scratch, as Lightning does.
            config.ckpt_path = None


# Errors that come from what the user typed or pointed at, not from a bug: shown as one line. Lesson
# code raises subclasses of ExperimentError, so no lesson error type needs listing here.
USER_ERRORS = (
    ArgumentError,
    ExperimentError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    MisconfigurationException,
)


def known_classes(package: Any, base: type) -> list[str]:
    """Names of the classes of ``package`` derived from ``base``, leaving out shared base classes."""
    found = [c for c in vars(package).values() if isinstance(c, type) and issubclass(c, base)]
    return sorted(c.__name__ for c in found if not any(o is not c and issubclass(o, c) for o in found))


# Lines of jsonargparse's union-type reports that say nothing to a user: every lesson argument is
# "a class or None", so each error also reports that the value is not None.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
)


def one_line(error: BaseException) -> str:
    """The useful part of an error message, on one line."""
    text = str(error).strip()
    unknown = re.search(r'Parser key "(model|data)":.*?Expected a dot import path string: (\S+)', text, re.S)
    if unknown:
        key, name = unknown.groups()
        package, base = (modules, LightningModule) if key == "model" else (datamodules, LightningDataModule)
        choices = ", ".join(known_classes(package, base))
        return f'--{key}: unknown class "{name}"; choose one of: {choices}'
    parts = []
    for raw in text.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        for marker in _NOISE:
            line = line.split(marker)[0].strip() if marker in line else line
        if not line or (line.endswith(":") and not line.startswith("Parser key") and not parts):
            continue
        if line.startswith("Given value:") and (len(line) > 80 or "NestedArg" in line):
            continue
        parts.append(line)
    return " ".join(parts) if parts else type(error).__name__


def main(args: ArgsType = None) -> None:
    """Entry point of ``python -m experiments`` and the ``experiments`` script."""
    # Lightning 2.6 on torch 2.14 warns about its own use of a torch API on every run; not actionable.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Batch indices are only known for DataLoader samplers; nothing here uses them.
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices")
    try:
        ExperimentCLI(args=args)
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
