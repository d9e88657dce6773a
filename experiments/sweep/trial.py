"""The trial side of a sweep: a ``fit`` started by ``python -m experiments sweep`` reports to its trial.

The sweep worker (experiments/sweep/worker.py) runs each trial as an ordinary ``fit --config <trial
config>`` in a child process and names the Optuna trial in the environment (``EXPERIMENTS_SWEEP_TRIAL``),
not in the config: the run's ``config.yaml`` then reruns the trial with ``fit --config`` and no study.
The command adds ``TrialReport`` to such a fit (experiments/cli.py, by name: the command does not
import the sweep package). It does what optuna-integration's
PyTorchLightningPruningCallback does, for a trial that lives in another process than the study's
``optimize`` loop: it reports the sweep's metric after every validation, asks the pruner, and stops the
fit (after that epoch, checkpoints written as usual) when the pruner says so. Optuna is imported only
here, and only by a trial, so a plain ``fit`` does not pay for it.

When the study's database cannot be reached, a report waits for it (``Patience``, for the sweep's
``patience``), so a trial outlives a database restart; it stops waiting at once if its worker is gone.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from core.distributed import run_dir
from core.errors import ExperimentError
from experiments.cli import TRIAL_VARIABLE
from experiments.messages import import_path
from experiments.sweep.storage import Patience, open_storage, shown_url

#: Trial user attributes the trial writes: its run folder and host, the validation it was pruned at, and
#: an error that no other trial can escape either (the sweep stops on it).
RUN, HOST, PRUNED, FATAL = "run", "host", "pruned_at", "fatal"

T = TypeVar("T")


@dataclass
class TrialAddress:
    """Where a trial's reports go: the study's storage URL and name, the trial's id, the metric it reports,
    the pruner (``class_path``/``init_args``) that decides on them, how many seconds a report waits for an
    unreachable database, and the config keys the sweep varies, as its file writes them
    (``model.optimizer.init_args.lr``): the fit logs each of them as a parameter of the run even when the
    trial's value is the default (experiments/cli.py)."""

    storage: str
    study: str
    trial_id: int
    metric: str
    pruner: dict[str, Any]
    patience: float = 600.0
    parameters: list[str] = field(default_factory=list)

    def to_environment(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> TrialAddress | None:
        text = os.environ.get(TRIAL_VARIABLE)
        return cls(**json.loads(text)) if text else None


def class_spec(value: Any) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": {...}}`` of a parsed sampler or pruner."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    return {"class_path": value["class_path"], "init_args": dict(value.get("init_args") or {})}


def build(spec: dict[str, Any], **overrides: Any) -> Any:
    """An instance of ``spec`` (``{"class_path": ..., "init_args": {...}}``, a class the sweep's parser
    has resolved) with ``overrides``."""
    return import_path(str(spec["class_path"]))(**{**(spec.get("init_args") or {}), **overrides})


class TrialReport(Callback):
    """Reports the sweep's metric to the trial after each validation and stops a pruned fit.

    Global rank 0 talks to the study; the pruning decision is broadcast from it, so every rank of a DDP
    trial stops at the same epoch. The step reported is the validation's index (0, 1, ...): the same in
    every trial of a sweep even when the batch size, and so the number of steps per epoch, differs.

    Args:
        address: The trial (from ``EXPERIMENTS_SWEEP_TRIAL``).
    """

    def __init__(self, address: TrialAddress) -> None:
        self.address = address
        self._trial: Any = None
        self._validations = 0
        self._patience: Patience | None = None

    @classmethod
    def from_environment(cls) -> TrialReport:
        """The report of the trial that ``EXPERIMENTS_SWEEP_TRIAL`` names (the command adds it then)."""
        address = TrialAddress.from_environment()
        if address is None:
            raise ExperimentError("no sweep trial is named in the environment (EXPERIMENTS_SWEEP_TRIAL)")
        return cls(address)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        import optuna

        worker = os.getppid()  # the sweep worker that started this fit; PR_SET_PDEATHSIG ends it with it
        self._patience = patience = Patience(
            shown_url(self.address.storage),
            self.address.patience,
            who="this trial's fit",
            give_up=lambda: os.getppid() != worker,
        )

        storage = patience(lambda: open_storage(self.address.storage))
        pruner = build(self.address.pruner)
        study = patience(
            lambda: optuna.load_study(study_name=self.address.study, storage=storage, pruner=pruner)
        )
        self._trial = trial = patience(lambda: optuna.trial.Trial(study, self.address.trial_id))
        folder = run_dir(trainer)
        if folder is not None:
            patience(lambda: trial.set_user_attr(RUN, str(folder.resolve())))
            patience(lambda: trial.set_user_attr(HOST, socket.gethostname()))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = self.address.metric
        value = trainer.callback_metrics.get(metric)
        if value is None:  # the same logged names on every rank, so every rank stops here alike
            logged = ", ".join(sorted(n for n in trainer.callback_metrics if not n.startswith("train/")))
            message = (
                f"the sweep's metric {metric} is not logged by this lesson's validation (it logs: "
                f"{logged or 'nothing'}); set sweep.metric to one of them"
            )
            if self._trial is not None:
                self._wait(lambda: self._trial.set_user_attr(FATAL, message))
            raise ExperimentError(message)
        prune = False
        step = self._validations
        if self._trial is not None:
            # A value stored just as the connection died is stored again, not twice: a step holds one.
            self._wait(lambda: self._trial.report(float(value), step=step))
            prune = self._wait(self._trial.should_prune)
        self._validations += 1
        if trainer.world_size > 1:
            prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            trainer.should_stop = True
            if self._trial is not None:
                self._wait(lambda: self._trial.set_user_attr(PRUNED, step))
            rank_zero_info(
                f"Pruned: {metric} {float(value):.6g} at validation {step} (epoch {trainer.current_epoch})"
            )

    def _wait(self, action: Callable[[], T]) -> T:
        """``action``, waiting out an unreachable database (``setup`` made the patience with the trial)."""
        assert self._patience is not None
        return self._patience(action)
