"""``python -m experiments sweep``: a hyperparameter search with Optuna, from one machine to a cluster.

    python -m experiments sweep --config configs/mnist_convnet.yaml --sweep configs/sweeps/mnist_convnet.yaml
    python -m experiments sweep --config mnist_convnet --sweep mnist_convnet --sweep.n_trials 40 \\
        --sweep.storage postgresql://user:password@db-host/sweeps      # the same, on every machine

The command line is ``fit``'s (stacked ``--config`` files, flags that override, ``--help``,
``--print_config``) plus a ``sweep`` section (``Sweep``), given as a file (``--sweep FILE``) and flags
(``--sweep.n_trials 20``).

- Each trial is an ordinary run: the worker writes the trial's config (the command's config with the
  trial's values) and runs ``fit --config`` on it in a child process, which gets its own
  ``lightning_logs/<experiment>/version_N`` with ``config.yaml``, checkpoints and TensorBoard events
  (and hparams), so ``fit --config <that config.yaml>`` reruns it. The child reports the sweep's metric
  after every validation (experiments/sweep_trial.py); the pruner stops it early.
- A trial's value is the best value of the metric over its validations, as the best checkpoint keeps.
- The study lives in a database: by default an SQLite file beside the runs
  (``lightning_logs/<experiment>/sweeps/optuna.db``), or any URL Optuna accepts. Workers that run the
  same command on one study share its trials: ``sweep.n_trials`` counts the study's finished trials
  over all of them (and over reruns: the same command continues a study until it has that many). A
  worker takes a trial under a lock (a file lock for SQLite, an advisory lock for PostgreSQL), so
  workers started together never run more than that many.
- Each worker beats a heartbeat while its trial runs. A worker that is killed stops beating, and the
  next worker to take a trial marks that one failed; a worker interrupted (Ctrl-C, SIGTERM) stops its
  trial (which writes ``last.ckpt``) and marks it failed itself.
- When a worker ends it writes the study's report in ``lightning_logs/<experiment>/sweeps/<study>/``:
  ``best.yaml`` (the best trial's config, for ``fit --config``), ``trials.csv``, and Optuna's
  optimisation-history and parameter-importance plots as PNGs and in TensorBoard; it prints the table.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser
from optuna.trial import TrialState

from core.errors import ExperimentError
from experiments.cli import PARSER_KWARGS, ExperimentCLI, experiment_name
from experiments.messages import USER_ERRORS, closest, import_path, one_line, parameters
from experiments.runs import LOG_ROOT, RunLayout
from experiments.sweep_report import write_report
from experiments.sweep_space import Parameter, search_space, seconds
from experiments.sweep_trial import (
    ENVIRONMENT,
    FATAL,
    PRUNED,
    TrialAddress,
    build,
    open_storage,
    storage_url,
)

#: The states of trials that count toward ``n_trials`` (failed ones do not: a replacement runs).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Study user attributes that every worker of a study must agree on.
AGREED = ("space", "metric")


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
    ) -> None:
        pass  # only its signature is used: the command's parser reads it, nothing builds a Sweep


def _class_spec(value: Any) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": {...}}`` of a parsed sampler or pruner."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    return {"class_path": value["class_path"], "init_args": dict(value.get("init_args") or {})}


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
            sweep.metric = config.checkpoint.get("monitor")
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


def check_space(cli: SweepCLI, space: list[Parameter]) -> None:
    """Every key takes the ends of its range and each of its choices, as the config's parser reads them:
    a wrong key or type is one error line before the sweep starts, not a failed trial later."""
    probes = [p.probe_values() for p in space]
    for i in range(max(len(values) for values in probes)):
        flags = [p.flag(values[i % len(values)]) for p, values in zip(space, probes, strict=True)]
        try:
            cli.trial_config(flags)
        except USER_ERRORS as error:
            # Which key: the one whose flag alone fails.
            for parameter, flag in zip(space, flags, strict=True):
                try:
                    cli.trial_config([flag])
                except USER_ERRORS as alone:
                    raise ExperimentError(f"sweep.space: {parameter.key}: {one_line(alone)}") from None
            raise ExperimentError(f"sweep.space: {one_line(error)}") from None


@contextlib.contextmanager
def database_lock(url: str, name: str, engine: Any = None) -> Iterator[None]:
    """Holds the lock ``name`` among every process using the database at ``url``: a file lock beside an
    SQLite file, an advisory lock in PostgreSQL (through ``engine``'s connections, else a connection of
    its own); released when the process dies. Other databases get no lock: workers started at the same
    moment may then run a trial or two more than asked."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        with open(f"{parsed.database}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif backend == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        own = engine is None
        engine = create_engine(url) if own else engine
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
        finally:
            if own:
                engine.dispose()
    else:
        yield


def sweeps_folder(layout: RunLayout) -> Path:
    """Where an experiment's sweeps keep their database and reports: ``<experiment's runs>/sweeps``."""
    root = (
        layout.root
        if layout.kind == "folders" and layout.root is not None
        else Path(LOG_ROOT) / layout.experiment
    )
    return root / "sweeps"


class Interrupted(Exception):
    """The worker got SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds on a thread, as Optuna's optimize
    loop does for the trials it runs (this worker runs its trials by ask and tell)."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)  # at once: a trial with no beat is never found stale
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)
        self._thread.start()

    def _beat(self, storage: Any, trial_id: int, interval: int) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # a database hiccup: the next beat tries again
                storage.record_heartbeat(trial_id)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exception: object) -> None:
        self._stop.set()
        self._thread.join()


class Worker:
    """Runs trials of one study until it has ``n_trials`` finished ones or the time budget is spent."""

    def __init__(self, cli: SweepCLI) -> None:
        self.cli = cli
        self.settings = cli.config.sweep
        self.parameters = search_space(self.settings.space)
        self.budget = seconds(self.settings.timeout)
        if self.settings.n_trials is None and self.budget is None:
            raise ExperimentError("give sweep.n_trials or sweep.timeout (or both): the sweep needs an end")
        if self.settings.n_trials is not None and self.settings.n_trials < 1:
            raise ExperimentError(f"sweep.n_trials must be at least 1, got {self.settings.n_trials}")
        if self.settings.heartbeat < 1:
            raise ExperimentError(
                f"sweep.heartbeat must be a whole number of seconds >= 1, got {self.settings.heartbeat}"
            )
        self.sampler = _class_spec(self.settings.sampler)
        self.pruner = _class_spec(self.settings.pruner)
        self.metric: str = self.settings.metric
        self.folder = sweeps_folder(cli.layout) / self.settings.study
        check_space(cli, self.parameters)
        try:
            self.url = storage_url(self.settings.storage)
        except Exception as error:  # SQLAlchemy's ArgumentError
            raise ExperimentError(
                f"sweep.storage: {self.settings.storage!r} is not a database URL ({one_line(error)}); give "
                "e.g. sqlite:///path/to/file.db or postgresql://user:password@host:5432/database"
            ) from None
        self.storage = self.open_storage()
        self.study = self.open_study()

    def open_storage(self) -> Any:
        if self.url.startswith("sqlite:"):
            from sqlalchemy.engine import make_url

            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        try:
            # Workers started together on a new database would all create Optuna's tables, and all but
            # one fail ("duplicate key value violates unique constraint", seen on PostgreSQL under SLURM).
            with database_lock(self.url, "optuna-schema"):
                return open_storage(self.url, heartbeat=self.settings.heartbeat)
        except Exception as error:  # a driver's or server's own exception types
            reason = re.sub(r"\s*\(Background on this error at: \S+\)", "", one_line(error))
            raise ExperimentError(f"sweep.storage: cannot open {self.shown_url()}: {reason}") from None

    def shown_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def open_study(self) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.settings.study,
            storage=self.storage,
            direction=self.settings.direction,
            load_if_exists=True,
        )
        mine = {"space": [p.describe() | {"key": p.key} for p in self.parameters], "metric": self.metric}
        theirs = study.user_attrs
        for name in AGREED:
            if name in theirs and theirs[name] != mine[name]:
                raise ExperimentError(
                    f"sweep.study: study {self.settings.study!r} in {self.shown_url()} was started with "
                    f"another {name} ({theirs[name]!r}); give the same sweep file, or a new study name with "
                    "--sweep.study"
                )
            if name not in theirs:
                study.set_user_attr(name, mine[name])
        if study.direction != optuna.study.StudyDirection[self.settings.direction.upper()]:
            raise ExperimentError(
                f"sweep.direction: study {self.settings.study!r} {study.direction.name.lower()}s its metric; "
                "give that direction, or a new study name with --sweep.study"
            )
        return study

    def take_trial(self) -> optuna.Trial | None:
        """A new trial of the study, or None when the study has ``n_trials`` finished or running ones."""
        with database_lock(self.url, f"sweep:{self.settings.study}", self.storage.engine):
            optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            taken = [t for t in trials if t.state in (*FINISHED, TrialState.RUNNING, TrialState.WAITING)]
            if self.settings.n_trials is not None and len(taken) >= self.settings.n_trials:
                return None
            overrides = {}
            seed = self.sampler["init_args"].get("seed")
            if seed is not None and "seed" in parameters(import_path(self.sampler["class_path"])):
                overrides["seed"] = int(seed) + len(trials)
            self.study.sampler = build(self.sampler, **overrides)  # the pruner decides in the trial's fit
            return self.study.ask()

    def run(self) -> None:
        """Takes and runs trials until the study has its ``n_trials`` or the budget is spent, then writes
        the report (also when the worker stops on an error or a signal)."""
        started = time.monotonic()
        self.say_start()
        previous = {s: signal.signal(s, self._interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._run_trials(started)
        except BaseException:
            with contextlib.suppress(Exception):  # the error in flight is the one to report
                write_report(self.study, self.parameters, self.metric, self.folder)
            raise
        else:
            write_report(self.study, self.parameters, self.metric, self.folder)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run_trials(self, started: float) -> None:
        failures = 0
        while self.budget is None or time.monotonic() - started < self.budget:
            trial = self.take_trial()
            if trial is None:
                return
            # trial._trial_id: the storage's id of the trial (no public accessor in Optuna 5; the child
            # rebuilds its Trial from it, as optuna.trial.Trial(study, trial_id)).
            with Heartbeat(self.storage, trial._trial_id, self.settings.heartbeat):
                state, error = self.run_trial(trial)
            failures = failures + 1 if state == TrialState.FAIL else 0
            if error is not None:
                raise ExperimentError(error)
            if failures >= self.settings.max_failures:
                last = self.storage.get_trial(trial._trial_id).user_attrs.get("error", "see its output")
                raise ExperimentError(
                    f"{failures} trials in a row failed (the last, trial {trial.number}: {last}); the sweep "
                    "stopped. Fix the config, then run the same command to continue the study"
                )

    def _interrupt(self, signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    def say_start(self) -> None:
        optuna.storages.fail_stale_trials(self.study)  # a killed worker's trial is not "running"
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        goal = (
            f"to {self.settings.n_trials} finished trials" if self.settings.n_trials else "until the timeout"
        )
        print(
            f"sweep: study {self.settings.study!r} in {self.shown_url()}: {self.metric} "
            f"({self.settings.direction}), {finished} trials finished, {running} running, {failed} failed; "
            f"running {goal}",
            flush=True,
        )

    def run_trial(self, trial: optuna.Trial) -> tuple[TrialState, str | None]:
        """Runs ``trial`` as a fit in a child process and tells the study how it ended. Returns its state
        and, when it revealed an error no other trial can escape, that error."""
        started = time.monotonic()
        try:
            values = {p.key: p.suggest(trial) for p in self.parameters}
            flags = [p.flag(values[p.key]) for p in self.parameters]
            shown = ", ".join(f"{p.label}={values[p.key]}" for p in self.parameters)
            print(f"sweep: trial {trial.number}: {shown}", flush=True)
            text = self.cli.trial_config(flags)
            trial.set_user_attr("config", text)
            status, error_line = self.run_child(trial, text)
        except Interrupted as interrupted:
            self._tell(trial, state=TrialState.FAIL)
            print(f"sweep: trial {trial.number} stopped ({interrupted}) and marked failed", flush=True)
            raise
        frozen = self.storage.get_trial(trial._trial_id)
        attrs = frozen.user_attrs
        elapsed = f"{time.monotonic() - started:.0f} s"
        run = attrs.get("run", "no run folder")
        if status != 0 or not frozen.intermediate_values:
            reason = error_line or (f"exit status {status}" if status else f"no {self.metric} was reported")
            trial.set_user_attr("error", reason)
            self._tell(trial, state=TrialState.FAIL)
            print(f"sweep: trial {trial.number} failed after {elapsed}: {reason} ({run})", flush=True)
            fatal = attrs.get(FATAL) or (
                None
                if status
                else f"trial {trial.number} reported no {self.metric}: "
                "does the lesson validate (trainer.limit_val_batches > 0)?"
            )
            return TrialState.FAIL, fatal
        if PRUNED in attrs:
            self._tell(trial, state=TrialState.PRUNED)
            last = frozen.intermediate_values[frozen.last_step]
            print(
                f"sweep: trial {trial.number} pruned at validation {attrs[PRUNED]} ({self.metric} "
                f"{last:.6g}) after {elapsed} ({run})",
                flush=True,
            )
            return TrialState.PRUNED, None
        reported = list(frozen.intermediate_values.values())
        value = max(reported) if self.settings.direction == "maximize" else min(reported)
        self._tell(trial, values=value)
        print(
            f"sweep: trial {trial.number} finished: {self.metric} {value:.6g} after {elapsed} ({run})",
            flush=True,
        )
        return TrialState.COMPLETE, None

    def _tell(self, trial: optuna.Trial, **kwargs: Any) -> None:
        try:
            self.study.tell(trial, **kwargs)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
            # Another worker found this worker's heartbeat late and failed the trial already.
            print(f"sweep: trial {trial.number}: {one_line(error)}", flush=True)

    def run_child(self, trial: optuna.Trial, text: str) -> tuple[int, str | None]:
        """Runs ``fit --config <trial config>`` in a child process; its exit status and error line."""
        address = TrialAddress(self.url, self.settings.study, trial._trial_id, self.metric, self.pruner)
        env = dict(os.environ, **{ENVIRONMENT: address.to_environment()})
        # A trial is one Lightning run on this worker's devices: SLURM's task count is the workers', and
        # Lightning would take it for the trial's process count (see scripts/sweep.sbatch).
        env.pop("SLURM_NTASKS", None)
        with tempfile.TemporaryDirectory(prefix="sweep-trial-") as folder:
            path = Path(folder) / f"trial_{trial.number}.yaml"
            path.write_text(text)
            command = [sys.executable, "-m", "experiments", "fit", "--config", str(path)]
            child = subprocess.Popen(
                command, env=env, stderr=subprocess.PIPE, text=True, errors="replace",
                start_new_session=True, preexec_fn=_end_with_parent,
            )  # fmt: skip
            lines: list[str] = []
            relay = threading.Thread(target=_relay, args=(child.stderr, lines), daemon=True)
            relay.start()
            try:
                status = child.wait()
            except Interrupted:
                _stop(child)
                raise
            finally:
                relay.join(timeout=10)
        errors = [line for line in lines if line.startswith("error: ")]
        return status, errors[-1].removeprefix("error: ").strip() if errors else None


def _end_with_parent() -> None:
    """In the child: SIGTERM when the worker dies (even by SIGKILL), so a trial never outlives it; the
    fit then writes ``last.ckpt`` and ends all its ranks (experiments/preemption.py)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _relay(stream: Any, lines: list[str]) -> None:
    """Copies the child's stderr to the worker's, keeping its lines to find the error line."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        lines.append(line)
        del lines[:-50]


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM to the trial (its fit writes last.ckpt and stops every rank), SIGKILL after 60 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


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
    worker = Worker(cli)
    try:
        worker.run()
    except Interrupted as interrupted:
        sys.exit(128 + interrupted.signum)
