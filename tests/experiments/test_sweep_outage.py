"""A sweep's study survives its database: a PostgreSQL server stopped for half a minute in the middle of two
workers' trials, one worker killed (SIGKILL) while it is down. The other worker waits, reconnects when the
server is back and finishes the study on its own: the killed worker's trial is failed as stale and run
again, and the study ends with exactly ``n_trials`` finished trials, none run twice. Also the pieces:
``Patience`` (what it waits for, what it says, when it gives up), the study lock let go when its server
goes away, and a trial whose worker died while taking it.

The killed worker is not started again: the issue asks that the worker that lives on finish the study, and
rerunning the same command to continue a study is tested in test_sweep.py
(test_a_killed_workers_trial_is_failed_and_the_same_command_continues)."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy import exc

from core.errors import ExperimentError
from experiments.sweep.storage import Patience, database_lock, open_storage, storage_url, unreachable
from experiments.sweep.worker import WORKER
from tests.conftest import free_port, run_experiments
from tests.experiments import test_sweep
from tests.experiments.test_sweep import (
    LR,
    PostgresServer,
    load,
    no_trial_left,
    start_worker,
    sweep_command,
    sweep_error,
    sweep_file,
    wait_for,
)

#: The fixture of test_sweep.py, here by its name for the tests that ask for it.
postgres_server = test_sweep.postgres_server

#: How long the server stays down: longer than the heartbeat's grace period (2 x 2 s), so that the killed
#: worker's trial is stale when the server is back, and well within the workers' patience.
OUTAGE = 30


URL = "postgresql+psycopg://sweeps@db:5432/postgres"


def refused() -> exc.OperationalError:
    """What SQLAlchemy raises when the server refuses the connection."""
    return exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def failing(times: int, error: Exception, result: int = 7):
    """An action that raises ``error`` ``times`` times, then returns ``result``; its calls are counted."""
    calls = []

    def action() -> int:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return action, calls


def test_patience_waits_out_an_unreachable_database_and_says_so_once(capsys):
    patience = Patience(URL, seconds=600)
    action, calls = failing(2, refused())
    assert patience(action) == 7 and len(calls) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"sweep: the database {URL} is unreachable (connection refused); this worker retries for up to 10 min"
    )
    assert len(lines) == 2 and lines[1].startswith(f"sweep: the database {URL} is back after ")
    assert patience.back_at > float("-inf")  # the worker waits for heartbeats after this


def test_patience_ends_in_one_error_after_its_time_or_when_told_to_give_up(capsys):
    storage_error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    storage_error.__cause__ = refused()  # Optuna's wrapping of the driver's error, as RDBStorage raises it
    action, calls = failing(100, storage_error)
    with pytest.raises(ExperimentError) as error:
        Patience(URL, seconds=1)(action)
    assert re.fullmatch(
        rf"the database {re.escape(URL)} has been unreachable for \d+ s \(connection refused\); this "
        r"worker stopped waiting \(--sweep.patience sets how long it waits\)\. When the database is back, "
        r"run the same command again: the study goes on, and a trial left running is failed as stale and "
        r"run again",
        str(error.value),
    ), str(error.value)
    assert len(calls) >= 2
    action, calls = failing(100, refused())
    with pytest.raises(ExperimentError, match="this trial's fit stopped waiting"):
        Patience(URL, seconds=600, who="this trial's fit", give_up=lambda: True)(action)
    assert len(calls) == 1  # its worker is gone: no wait at all


@pytest.mark.parametrize(
    "error",
    [
        ValueError("Cannot tell a COMPLETE trial."),
        exc.IntegrityError("INSERT", {}, Exception("duplicate key value")),
        optuna.exceptions.StorageInternalError("too long"),  # not from the connection: invalid data
    ],
)
def test_patience_does_not_wait_for_other_errors(capsys, error):
    action, calls = failing(1, error)
    with pytest.raises(type(error)):
        Patience(URL, seconds=600)(action)
    assert len(calls) == 1 and capsys.readouterr().out == ""
    assert unreachable(error) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "error: sweep.patience: 'soon' is not a duration; give seconds or e.g. 90m, 2h, 1h30m"),
        ("-5", "error: sweep.patience must be a finite duration above 0, got '-5'"),
    ],
)
def test_a_bad_patience_is_one_error_line(capsys, in_tmp, value, message):
    file = sweep_file(in_tmp, n_trials=1)
    err = sweep_error(capsys, "--sweep", str(file), f"--sweep.patience={value}")
    assert err == message + "\n"


def test_a_refused_connection_is_known_by_its_drivers_words():
    with pytest.raises(Exception) as error:
        open_storage(f"postgresql://sweeps@127.0.0.1:{free_port()}/postgres")
    reason = unreachable(error.value)
    assert reason is not None and reason.startswith("connection failed: ") and "Connection refused" in reason


def test_a_lock_held_when_its_server_stops_is_let_go_with_the_blocks_own_error(
    postgres_server: PostgresServer,
):
    url = storage_url(postgres_server.url)
    # The block's own error, not the failed unlock's.
    with pytest.raises(RuntimeError, match="the block's own error"), database_lock(url, "sweep:boston"):
        postgres_server.stop("fast")
        raise RuntimeError("the block's own error")
    postgres_server.start()
    with database_lock(url, "sweep:boston"):  # free again: it went with its session
        pass


@pytest.mark.slow
def test_a_trial_whose_worker_died_while_taking_it_is_failed_and_replaced(tmp_path):
    # A worker killed (or cut off from the database) between creating its trial and naming itself on it
    # leaves a running trial with no heartbeat, which no heartbeat check would ever find.
    database = tmp_path / "lightning_logs/boston_housing/sweeps/optuna.db"
    database.parent.mkdir(parents=True)
    optuna.create_study(study_name="boston", storage=f"sqlite:///{database}").ask()
    file = sweep_file(tmp_path, n_trials=1)
    result = run_experiments(sweep_command(file, "--trainer.max_epochs=2"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        "sweep: trial 0 never started (its worker was killed or lost the database while taking it); "
        "marked failed" in result.stdout
    )
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert WORKER not in trials[0].user_attrs
    assert trials[1].user_attrs[WORKER].startswith(f"{socket.gethostname()}:")


def collect(stream, lines: list[str]) -> threading.Thread:
    """Reads a worker's output as it comes (a full pipe would stop the worker)."""
    thread = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    thread.start()
    return thread


def trials_by_worker(url: str, pids: list[int]) -> dict[int, list]:
    """Each worker's trials (by the ``worker`` attribute, host:pid), [] before the study exists."""
    try:
        trials = load(Path(), storage=url).get_trials()
    except Exception:  # not created yet
        trials = []
    host = socket.gethostname()
    return {pid: [t for t in trials if t.user_attrs.get(WORKER) == f"{host}:{pid}"] for pid in pids}


def training(trials: list) -> bool:
    """A trial of the list is running and has reported a validation: its fit is mid-training."""
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials)


@pytest.mark.slow
def test_a_sweep_outlives_a_database_restart_and_a_worker_killed_meanwhile(
    tmp_path, postgres_server: PostgresServer
):
    url = storage_url(postgres_server.url)
    file = sweep_file(tmp_path, n_trials=2, pruner={"class_path": "optuna.pruners.NopPruner"})
    # Trials of 20 epochs (some seconds): both workers' trials overlap, and one outlives the outage.
    command = sweep_command(
        file,
        "--trainer.max_epochs=20",
        f"--sweep.storage={postgres_server.url}",
        "--sweep.heartbeat=2",
        "--sweep.patience=5m",
    )
    workers = [start_worker(command, tmp_path) for _ in range(2)]
    survivor, victim = workers
    outputs: list[list[str]] = [[], []]
    readers = [collect(w.stdout, out) for w, out in zip(workers, outputs, strict=True)]
    try:
        pids = [w.pid for w in workers]
        assert wait_for(
            lambda: all(training(ts) for ts in trials_by_worker(url, pids).values()), timeout=400
        ), "the two workers' trials never trained at once:\n" + "".join(outputs[0][-30:] + outputs[1][-30:])

        postgres_server.stop("fast")  # ends every session: the workers' and their trials' fits
        down = time.monotonic()
        victim.kill()
        victim.wait()
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
        postgres_server.start()

        survivor.wait(timeout=600)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for reader in readers:
            reader.join(timeout=30)
    survived, killed = ("".join(out) for out in outputs)
    assert survivor.returncode == 0, survived[-5000:]
    assert "Traceback" not in survived, survived[-5000:]
    assert "Traceback" not in killed, killed[-5000:]
    # The survivor said what it waited for, and that it came back.
    assert f"sweep: the database {url} is unreachable (" in survived, survived[-5000:]
    assert "; this worker retries for up to 5 min" in survived, survived[-5000:]
    assert f"sweep: the database {url} is back after " in survived, survived[-5000:]
    # The killed worker's fit did not outlive it (PR_SET_PDEATHSIG; one waiting for the database stops too).
    assert wait_for(lambda: no_trial_left(tmp_path), timeout=60), "the killed worker's trial lived on"

    study = load(tmp_path, storage=url)
    trials = study.get_trials()
    [lost] = trials_by_worker(url, [victim.pid])[victim.pid]
    assert lost.state == TrialState.FAIL
    assert f"sweep: trial {lost.number}'s worker stopped beating; the trial is marked failed" in survived
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Exactly n_trials finished, the lost one replaced once, nothing else left running or failed.
    assert len(finished) == 2 and len(trials) == 3, [(t.number, t.state) for t in trials]
    assert {t.user_attrs[WORKER] for t in finished} == {f"{socket.gethostname()}:{survivor.pid}"}
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 2  # no trial's values ran twice
    for trial in finished:
        # Its value, the best of its 20 reports (the ones made after the outage too), and its run.
        assert sorted(trial.intermediate_values) == list(range(20))
        assert trial.value == min(trial.intermediate_values.values())
        run = Path(trial.user_attrs["run"])
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["model"]["init_args"]["optimizer"]["init_args"]["lr"] == trial.params[LR]
        assert (run / "checkpoints" / "last.ckpt").is_file()
