"""The sweep command's command line: ``fit``'s (``SweepCLI``, an ``ExperimentCLI``) with a ``sweep`` section
(``Sweep``), checked before any trial runs; ``main`` runs a worker (experiments/sweep/worker.py)."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser

from core.errors import ExperimentError
from experiments.cli import PARSER_KWARGS, ExperimentCLI
from experiments.messages import closest, parameters
from experiments.runs import RunLayout, experiment_name
from experiments.sweep.storage import sweeps_folder
from experiments.sweep.worker import Interrupted, Worker


class Sweep:
    """A hyperparameter search of the configured experiment.

    Args:
        space: Config keys (as flags name them) mapped to distributions: ``{type: float, low: 0.0001,
            high: 0.1, log: true}``, ``{type: int, low: 1, high: 4, step: 1}``, ``{type: categorical,
            choices: [32, 64]}``.
        n_trials: How many finished (complete or pruned) trials the study should have, counted over every
            worker and every run of this command: the same command continues a study up to it.
        timeout: This worker's time budget: seconds, or a duration such as 90m, 2h or 1h30m. No trial
            starts after it; the running one finishes.
        metric: The metric to optimise (a trial's value is its best over the validations); by default the
            checkpoint's monitor.
        direction: minimize or maximize; by default the checkpoint's mode when the metric is its monitor.
        sampler: The Optuna sampler. A sampler that takes a seed draws trial n with seed + n, so that
            workers started together do not repeat each other's draws and a sweep on one worker repeats.
        pruner: The Optuna pruner (optuna.pruners.NopPruner prunes nothing).
        storage: The study's database, any URL Optuna accepts; by default an SQLite file,
            lightning_logs/<experiment>/sweeps/optuna.db. Workers on many machines share a study in a
            server's database, e.g. postgresql://user:password@host:5432/database.
        study: The study's name; by default the sweep file's name, else the experiment's.
        heartbeat: Seconds between a worker's heartbeats; a trial whose worker missed two is marked failed
            by the next worker that takes a trial.
        max_failures: The worker stops after this many failed trials in a row.
        patience: How long a worker, and its trial's fit, wait for a database that cannot be reached (a
            server restarting, a failover): seconds, or a duration such as 10m. The trial's training goes
            on meanwhile; only its reports wait. Past it the worker ends with an error, and its trial is
            failed as stale and run again by a worker that goes on (or the same command run again).
    """

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        n_trials: int | None = None,
        timeout: str | float | None = None,
        metric: str | None = None,
        direction: Literal["minimize", "maximize"] | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        storage: str | None = None,
        study: str | None = None,
        heartbeat: int = 30,
        max_failures: int = 3,
        patience: str | float = "10m",
    ) -> None:
        pass  # only its signature is used: the command's parser reads it, nothing builds a Sweep


class SweepCLI(ExperimentCLI):
    """``fit``'s parser with a ``sweep`` section; it parses and checks, and builds nothing."""

    def __init__(self, args: list[str]) -> None:
        self.args = list(args)
        super().__init__(
            args=self.args,
            run=False,
            parser_kwargs={
                **PARSER_KWARGS,
                "prog": "python -m experiments sweep",
                "description": "Search the hyperparameters of an experiment with Optuna: each trial is a "
                "`fit` of the config with the trial's values, in its own run folder.",
            },
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(Sweep, "sweep")
        parser.set_defaults(
            {
                "sweep.sampler": {"class_path": "optuna.samplers.TPESampler", "init_args": {"seed": 42}},
                "sweep.pruner": {"class_path": "optuna.pruners.MedianPruner"},
            }
        )

    def complete_config(self, config: Namespace, layout: RunLayout) -> None:
        # The sweep's defaults made explicit, so that --print_config shows what will run.
        self.layout = layout
        sweep = config.sweep
        if not sweep.get("metric"):
            monitor = config.checkpoint.get("monitor")
            # A plain str: the monitor may be parsed as a typed name, which --print_config cannot write.
            sweep.metric = str(monitor) if monitor else None
            if not sweep.metric:
                raise ExperimentError(
                    "sweep.metric: the config's checkpoint monitors nothing; name the metric"
                )
        if not sweep.get("direction"):
            if sweep.metric != config.checkpoint.get("monitor"):
                raise ExperimentError(
                    f"sweep.direction: give minimize or maximize for {sweep.metric} (only the checkpoint's "
                    f"monitor, {config.checkpoint.get('monitor')}, has a known mode)"
                )
            sweep.direction = "maximize" if config.checkpoint.get("mode") == "max" else "minimize"
        if not sweep.get("study"):
            source = sweep.get("__path__")
            sweep.study = Path(str(source)).stem if source else layout.experiment
        if not sweep.get("storage"):
            sweep.storage = f"sqlite:///{sweeps_folder(layout) / 'optuna.db'}"

    def before_instantiate_classes(self) -> None:
        pass  # the trials are fits of their own; nothing is built here

    def instantiate_classes(self) -> None:
        pass

    def trial_config(self, flags: list[str]) -> str:
        """The YAML config of a trial: this command's config with ``flags`` applied, without ``sweep``."""
        config = self.parser.parse_args([*self.args, *flags])
        RunLayout.configure(config.trainer, experiment_name(config))
        data = yaml.safe_load(self.parser.dump(config, skip_none=False))
        data.pop("sweep", None)
        return yaml.safe_dump(data, sort_keys=False)


def main(args: ArgsType) -> None:
    """``python -m experiments sweep <args>``."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Optuna expects heartbeats only from its optimize loop; this worker beats for its ask-and-tell trials.
    warnings.filterwarnings(
        "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
    )
    try:
        cli = SweepCLI(list(args))
    except ArgumentError as error:
        unknown = re.search(r"Group 'sweep' does not accept option '(\w+)'", str(error))
        if unknown is None:
            raise
        name = unknown.group(1)
        known = parameters(Sweep)
        match = closest(name, known)
        hint = f"did you mean {match}?" if match else f"it takes: {', '.join(known)}"
        raise ExperimentError(f"sweep.{name}: the sweep file has no setting {name!r}; {hint}") from None
    worker = Worker(cli.config.sweep, cli.layout, cli.trial_config)
    try:
        worker.run()
    except Interrupted as interrupted:
        sys.exit(128 + interrupted.signum)
