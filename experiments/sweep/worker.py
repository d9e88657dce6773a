"""A sweep's worker: takes trials of the study and runs each as a ``fit`` in a child process, until the
study has ``n_trials`` finished ones or the worker's time is up, then writes the study's report.

Each worker beats a heartbeat while its trial runs. A worker that is killed stops beating, and the next
worker to take a trial marks that one failed; a worker interrupted (Ctrl-C, SIGTERM) stops its trial
(which writes ``last.ckpt``) and marks it failed itself.

A database that goes away for a while (a server restart, a failover) is waited out for
``sweep.patience`` (``Patience``, experiments/sweep/storage.py): the worker waits wherever it needs the
database, and so does its trial's fit when it reports, while the training itself goes on. Past that the
worker ends with one ``error:`` line and its trial, left running, is failed as stale by the next worker.

What the study holds, as optuna-dashboard shows it: the sweep's metric as the study's metric name; each
parameter under its key as the sweep file writes it (``model.optimizer.init_args.lr``: the name the
console line and the report use too, and the name a study begun earlier already holds); per trial the
user attributes ``run`` and ``host`` (its run folder, set by its fit), ``worker`` and, as it ends,
``pruned_at`` or ``error``. A trial's config is not a user attribute (the dashboard shows one as a
single line: 3 KB of YAML made its trials page 18,810 px wide) but an Optuna artifact, ``trial_<n>.yaml``,
uploaded before the fit starts to a ``FileSystemArtifactStore`` in ``<experiment's runs>/sweeps/artifacts``
(``optuna-dashboard --artifact-dir`` opens it from the trial's page; the run's own ``config.yaml`` holds
it too). Workers on several machines each keep their own trials' artifacts, so the dashboard opens every
trial's config only where they share that folder (``lightning_logs`` on a shared file system, as under
SLURM). The same text is also kept in the database as the trial's system attribute ``config``, which the
dashboard does not show: the report's ``best.yaml`` comes from it, on any machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from jsonargparse import Namespace
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from core.errors import ExperimentError
from experiments.cli import TRIAL_VARIABLE
from experiments.messages import import_path, one_line, parameters
from experiments.runs import RunLayout
from experiments.sweep.report import CONFIG, CONFIG_TYPE, run_folder, shown_value, write_report
from experiments.sweep.space import check_space, search_space, seconds
from experiments.sweep.storage import (
    Patience,
    artifacts_folder,
    database_lock,
    has_lock,
    open_storage,
    server_uptime,
    shown_url,
    storage_url,
    sweeps_folder,
    unreachable,
)
from experiments.sweep.trial import FATAL, PRUNED, TrialAddress, build, class_spec

#: The states of trials that count toward ``n_trials`` (failed ones do not: a replacement runs).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Study user attributes that every worker of a study must agree on.
AGREED = ("space", "metric")
#: The trial user attribute naming the worker (host:pid) that runs the trial. It is set under the lock as
#: the trial is taken, so a running trial seen without it under the lock is one whose worker died, or lost
#: the database, in the middle of taking it: no heartbeat may ever mark it stale.
WORKER = "worker"


class Interrupted(Exception):
    """The worker got SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds on a thread, as Optuna's optimize
    loop does for the trials it runs (this worker runs its trials by ask and tell). The first beat is
    recorded as the trial is taken (``Worker.take_trial``); a beat that finds the database unreachable
    counts toward the worker's ``Patience`` (its status line) and the next beat tries again."""

    def __init__(self, storage: Any, trial_id: int, interval: int, patience: Patience) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(storage, trial_id, interval, patience), daemon=True
        )
        self._thread.start()

    def _beat(self, storage: Any, trial_id: int, interval: int, patience: Patience) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # any other hiccup: the next beat tries again
                patience.attempt(lambda: storage.record_heartbeat(trial_id))

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exception: object) -> None:
        self._stop.set()
        self._thread.join()


class Worker:
    """Runs trials of one study until it has ``n_trials`` finished ones or the time budget is spent.

    Args:
        settings: The parsed ``sweep`` section (experiments/sweep/command.py's ``Sweep``), defaults filled.
        layout: Where the experiment's runs live; its sweeps are kept beside them.
        trial_config: The YAML config of a trial, given the flags that set the trial's values.
    """

    def __init__(
        self, settings: Namespace, layout: RunLayout, trial_config: Callable[[list[str]], str]
    ) -> None:
        self.settings = settings
        self.trial_config = trial_config
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
        patience = seconds(self.settings.patience, "sweep.patience")
        if patience is None:
            raise ExperimentError("sweep.patience: give how long to wait for an unreachable database")
        self.sampler = class_spec(self.settings.sampler)
        self.pruner = class_spec(self.settings.pruner)
        self.metric: str = self.settings.metric
        self.folder = sweeps_folder(layout) / self.settings.study
        self.artifacts_path = artifacts_folder(layout)
        self.artifacts = FileSystemArtifactStore(self.artifacts_path)
        check_space(trial_config, self.parameters)
        try:
            self.url = storage_url(self.settings.storage)
        except Exception as error:  # SQLAlchemy's ArgumentError
            raise ExperimentError(
                f"sweep.storage: {self.settings.storage!r} is not a database URL ({one_line(error)}); give "
                "e.g. sqlite:///path/to/file.db or postgresql://user:password@host:5432/database"
            ) from None
        self.patience = Patience(self.shown_url(), patience)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
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
        return shown_url(self.url)

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
        if study.metric_names is None:  # optuna-dashboard names its axes and columns by it, not "Objective 0"
            study.set_metric_names([self.metric])  # a study begun before the names were set gets them too
        if study.direction != optuna.study.StudyDirection[self.settings.direction.upper()]:
            raise ExperimentError(
                f"sweep.direction: study {self.settings.study!r} {study.direction.name.lower()}s its metric; "
                "give that direction, or a new study name with --sweep.study"
            )
        return study

    def take_trial(self) -> optuna.Trial | None:
        """A new trial of the study, or None when the study has ``n_trials`` finished or running ones.

        All under the study's lock, waited out whole when the database goes away (the lock goes with its
        connection, so the count is made again): the trials of dead workers are failed, the others
        counted, and the new trial gets its first heartbeat and this worker's name before the lock is let
        go, so that one found without them later is known to be orphaned."""
        return self.patience(self._take_trial)

    def _take_trial(self) -> optuna.Trial | None:
        with database_lock(self.url, f"sweep:{self.settings.study}", self.storage.engine):
            self.fail_stale_trials()
            if has_lock(self.url):  # without a lock, another worker may be between its ask and its name
                self.fail_orphans()
            trials = self.study.get_trials(deepcopy=False)
            taken = [t for t in trials if t.state in (*FINISHED, TrialState.RUNNING, TrialState.WAITING)]
            if self.settings.n_trials is not None and len(taken) >= self.settings.n_trials:
                return None
            overrides = {}
            seed = self.sampler["init_args"].get("seed")
            if seed is not None and "seed" in parameters(import_path(self.sampler["class_path"])):
                overrides["seed"] = int(seed) + len(trials)
            self.study.sampler = build(self.sampler, **overrides)  # the pruner decides in the trial's fit
            trial = self.study.ask()
            # trial._trial_id: the storage's id of the trial (no public accessor in Optuna 5; the child
            # rebuilds its Trial from it, as optuna.trial.Trial(study, trial_id)).
            self.storage.record_heartbeat(trial._trial_id)  # a trial with no beat is never found stale
            trial.set_user_attr(WORKER, self.name)
            return trial

    def fail_stale_trials(self) -> None:
        """Optuna's ``fail_stale_trials``, once the database has been up long enough for every live
        worker's heartbeat to land: right after a restart, or an outage this worker met, the last beat
        of every running trial is old, and a live worker's trial would be failed with its dead ones."""
        # Optuna 5 has no public way to ask which trials are stale without failing them.
        if not self.storage._get_stale_trial_ids(self.study._study_id):
            return
        settle = 2 * self.settings.heartbeat + 5  # two beats' time, as the stale test allows, and a margin
        up = min(time.monotonic() - self.patience.back_at, server_uptime(self.url, self.storage.engine))
        if up < settle:
            print(
                f"sweep: the database came back {up:.0f} s ago; waiting {settle - up:.0f} s for the "
                "workers' heartbeats before failing the trials whose heartbeat stopped",
                flush=True,
            )
            time.sleep(settle - up)
        running = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(self.study)
        still = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for number in sorted(running - still):
            print(f"sweep: trial {number}'s worker stopped beating; the trial is marked failed", flush=True)

    def fail_orphans(self) -> None:
        """Fails the running trials that no worker finished taking (see ``WORKER``); under the lock."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if WORKER in trial.user_attrs:
                continue
            reason = "its worker was killed or lost the database while taking it"
            self.storage.set_trial_user_attr(trial._trial_id, "error", reason)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            print(f"sweep: trial {trial.number} never started ({reason}); marked failed", flush=True)

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
                self.write_report()
            raise
        else:
            self.patience(self.write_report)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def write_report(self) -> None:
        """Writes the study's report (experiments/sweep/report.py) and prints its table."""
        write_report(self.study, self.parameters, self.metric, self.folder)

    def _run_trials(self, started: float) -> None:
        failures = 0
        while self.budget is None or time.monotonic() - started < self.budget:
            trial = self.take_trial()
            if trial is None:
                return
            with Heartbeat(self.storage, trial._trial_id, self.settings.heartbeat, self.patience):
                state, error = self.run_trial(trial)
            failures = failures + 1 if state == TrialState.FAIL else 0
            if error is not None:
                raise ExperimentError(error)
            if failures >= self.settings.max_failures:
                frozen = self.patience(lambda trial_id=trial._trial_id: self.storage.get_trial(trial_id))
                last = frozen.user_attrs.get("error", "see its output")
                raise ExperimentError(
                    f"{failures} trials in a row failed (the last, trial {trial.number}: {last}); the sweep "
                    "stopped. Fix the config, then run the same command to continue the study"
                )

    def _interrupt(self, signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    def say_start(self) -> None:
        self.patience(self.fail_stale_trials)  # a killed worker's trial is not "running"
        trials = self.patience(lambda: self.study.get_trials(deepcopy=False))
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
        print(
            f"sweep: watch it with optuna-dashboard {self.shown_url()} --artifact-dir {self.artifacts_path}",
            flush=True,
        )

    def run_trial(self, trial: optuna.Trial) -> tuple[TrialState, str | None]:
        """Runs ``trial`` as a fit in a child process and tells the study how it ended. Returns its state
        and, when it revealed an error no other trial can escape, that error."""
        started = time.monotonic()
        try:
            # A suggestion already stored is read back, not drawn again, when the database comes back.
            values = self.patience(lambda: {p.key: p.suggest(trial) for p in self.parameters})
            flags = [p.flag(values[p.key]) for p in self.parameters]
            text = self.trial_config(flags)
            # For the report on any machine; a system attribute, which optuna-dashboard does not show.
            self.patience(lambda: trial.storage.set_trial_system_attr(trial._trial_id, CONFIG, text))
            with tempfile.TemporaryDirectory(prefix="sweep-trial-") as folder:
                config = Path(folder) / f"trial_{trial.number}.yaml"
                config.write_text(text)
                self.artifacts_path.mkdir(parents=True, exist_ok=True)
                # For people: optuna-dashboard opens an artifact from the trial's page, where it shows a
                # user attribute as one line (3 KB of YAML made its trials page 18,810 px wide).
                self.patience(
                    lambda: upload_artifact(
                        artifact_store=self.artifacts,
                        file_path=str(config),
                        study_or_trial=trial,
                        mimetype=CONFIG_TYPE,
                    )
                )
                status, error_line = self.run_child(trial, config)
        except Interrupted as interrupted:
            # No waiting for the database here: the person who pressed Ctrl-C wants the worker to stop.
            # A trial left running is failed as stale by the next worker.
            if self._tell(trial, wait=False, state=TrialState.FAIL):
                print(f"sweep: trial {trial.number} stopped ({interrupted}) and marked failed", flush=True)
            else:
                print(
                    f"sweep: trial {trial.number} stopped ({interrupted}); the database is unreachable, so "
                    "the next worker will mark it failed (stale)",
                    flush=True,
                )
            raise
        frozen = self.patience(lambda: self.storage.get_trial(trial._trial_id))
        attrs = frozen.user_attrs
        # The worker's one line per trial, after the fit's own lines: what it tried, how it ended, where.
        shown = ", ".join(f"{p.key}={shown_value(values[p.key])}" for p in self.parameters)
        after = f"in {time.monotonic() - started:.0f} s; {shown}; {run_folder(frozen) or 'no run folder'}"
        if status != 0 or not frozen.intermediate_values:
            reason = error_line or (f"exit status {status}" if status else f"no {self.metric} was reported")
            self.patience(lambda: trial.set_user_attr("error", reason))
            self._tell(trial, state=TrialState.FAIL)
            print(f"sweep: trial {trial.number} failed ({reason}) {after}", flush=True)
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
                f"sweep: trial {trial.number} pruned at validation {attrs[PRUNED]}: {self.metric} "
                f"{shown_value(last)} {after}",
                flush=True,
            )
            return TrialState.PRUNED, None
        reported = list(frozen.intermediate_values.values())
        value = max(reported) if self.settings.direction == "maximize" else min(reported)
        self._tell(trial, values=value)
        print(f"sweep: trial {trial.number} finished: {self.metric} {shown_value(value)} {after}", flush=True)
        return TrialState.COMPLETE, None

    def _tell(self, trial: optuna.Trial, wait: bool = True, **kwargs: Any) -> bool:
        """Tells the study how ``trial`` ended (``values`` or ``state``, as ``Study.tell`` takes them),
        waiting out an unreachable database when ``wait``; False when it was unreachable and not waited
        for."""

        def tell() -> None:
            try:
                self.study.tell(trial, **kwargs)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
                frozen = self.storage.get_trial(trial._trial_id)
                expected = kwargs.get("state") or TrialState.COMPLETE
                told = "values" not in kwargs or frozen.value == kwargs["values"]
                if frozen.state == expected and told:
                    return  # this worker's own tell, which reached the database as its connection died
                # Another worker found this worker's heartbeat late and failed the trial already.
                print(f"sweep: trial {trial.number}: {one_line(error)}", flush=True)

        if wait:
            self.patience(tell)
            return True
        try:
            tell()
        except Exception as error:
            if unreachable(error) is None:
                raise
            return False
        return True

    def address(self, trial: optuna.Trial) -> TrialAddress:
        """What the trial's fit needs to report to ``trial``: ``EXPERIMENTS_SWEEP_TRIAL``'s JSON."""
        return TrialAddress(
            self.url,
            self.settings.study,
            trial._trial_id,
            self.metric,
            self.pruner,
            self.patience.seconds,
            [p.key for p in self.parameters],
        )

    def run_child(self, trial: optuna.Trial, config: Path) -> tuple[int, str | None]:
        """Runs ``fit --config <config>`` (the trial's) in a child process; its exit status and error line."""
        env = dict(os.environ, **{TRIAL_VARIABLE: self.address(trial).to_environment()})
        # A trial is one Lightning run on this worker's devices: SLURM's task count is the workers', and
        # Lightning would take it for the trial's process count (see scripts/sweep.sbatch).
        env.pop("SLURM_NTASKS", None)
        command = [sys.executable, "-m", "experiments", "fit", "--config", str(config)]
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
