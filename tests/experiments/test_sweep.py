"""The sweep command: its search space, bad sweep files, a sweep on SQLite whose pruner prunes and whose
best config reruns to the same metric, the study as optuna-dashboard reads it (metric name, parameter
names, run folders, configs as artifacts), two workers on one study (SQLite, and a real PostgreSQL
server), a worker killed mid-trial, one stopped with SIGTERM, and trials that are DDP runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.errors import ExperimentError
from experiments.cli import TRIAL_VARIABLE
from experiments.configs import resolve_config_names
from experiments.main import main
from experiments.sweep.command import SweepCLI
from experiments.sweep.report import best_config
from experiments.sweep.space import Parameter, check_space, parameter, search_space, seconds
from experiments.sweep.storage import database_lock, open_storage, storage_url
from experiments.sweep.trial import TrialAddress
from experiments.sweep.worker import Worker
from experiments.tensorboard import TensorBoard
from tests.conftest import CONFIGS, QUIET, config, run_experiments, subprocess_env
from tests.experiments.test_tensorboard import hparams_data

BOSTON = config("boston_housing")
#: Short trials: four epochs of the shipped Boston data (12 steps each), on the CPU.
FAST = ["--trainer.max_epochs=4", "--trainer.accelerator=cpu", *QUIET]
LR = "model.optimizer.lr"
BATCH = "data.batch_size"
SPACE = {
    LR: {"type": "float", "low": 1.0e-5, "high": 0.05, "log": True},
    BATCH: {"type": "categorical", "choices": [16, 32, 64]},
}
#: Trials judged from their second validation against the median of the two first trials' curves.
PRUNING = {"class_path": "optuna.pruners.MedianPruner", "init_args": {"n_startup_trials": 2}}


def sweep_file(folder: Path, name: str = "boston", **settings: object) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"space": SPACE, **settings}, sort_keys=False))
    return path


def load(root: Path, study: str = "boston", storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{root / 'lightning_logs/boston_housing/sweeps/optuna.db'}"
    return optuna.load_study(study_name=study, storage=url)


def sweep_command(file: Path, *extra: str) -> list[str]:
    return ["sweep", "--config", BOSTON, "--sweep", str(file), *FAST, *extra]


def best_score(checkpoint: Path) -> float:
    """The best monitored value recorded by the run's ModelCheckpoint in ``checkpoint``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    [score] = [s["best_model_score"] for s in state["callbacks"].values() if s.get("monitor") == "val/rmse"]
    return float(score)


# --- the search space -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "loguniform", "low": 1e-4, "high": 1}, "unknown distribution type 'loguniform' (for "),
        ({"type": "gaussian"}, "unknown distribution type 'gaussian'; use one of: float, int, categorical"),
        ({"type": "float", "low": 0.1, "high": 0.01}, "the range is empty (low 0.1 is not below high 0.01)"),
        ({"type": "int", "low": 4, "high": 4}, "the range is empty (low 4 is not below high 4)"),
        ({"type": "float", "low": 0.1}, "needs low and high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "a log scale needs low > 0"),
        ({"type": "float", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1}, "step and log"),
        ({"type": "int", "low": 1, "high": 4.5}, "must be whole"),
        ({"type": "float", "low": "a", "high": 1}, "low must be a finite number, got 'a'"),
        ({"type": "categorical", "choices": []}, "choices must be a non-empty list"),
        ({"type": "categorical", "choices": [1, 1]}, "repeat a value"),
        ({"type": "float", "low": 0, "high": 1, "lo": 2}, "not lo"),
        (0.01, "give a distribution such as"),
    ],
)
def test_a_bad_distribution_is_one_clear_error(spec, message):
    with pytest.raises(ExperimentError) as error:
        parameter("model.optimizer.init_args.lr", spec)
    assert str(error.value).startswith("sweep.space: model.optimizer.init_args.lr: ")
    assert message in str(error.value)


def test_distributions_suggest_in_range_and_become_flags():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    parameters = search_space(
        {
            LR: {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "trainer.max_epochs": {"type": "int", "low": 2, "high": 8, "step": 2},
            "model.init_args.hidden_sizes": {"choices": [[32], [64, 64]]},  # categorical by its choices
        }
    )
    assert [p.type for p in parameters] == ["float", "int", "categorical"]
    for _ in range(20):
        trial = study.ask()
        lr, epochs, sizes = (p.suggest(trial) for p in parameters)
        assert 1e-4 <= lr <= 1e-1 and epochs in (2, 4, 6, 8) and sizes in ("[32]", "[64, 64]")
        study.tell(trial, 0.0)
    lr, epochs, sizes = parameters
    assert lr.flag(0.001) == f"--{LR}=0.001"
    assert epochs.flag(4) == "--trainer.max_epochs=4"
    assert sizes.flag("[64, 64]") == "--model.init_args.hidden_sizes=[64, 64]"  # the list, as JSON
    assert Parameter("x", "categorical", choices=["adam", "sgd"]).flag("adam") == '--x="adam"'


def test_time_budgets_read_as_seconds():
    assert seconds(None) is None
    assert seconds(90) == 90.0 and seconds("90") == 90.0
    assert seconds("90m") == 5400.0 and seconds("2h") == 7200.0 and seconds("1h30m") == 5400.0
    for bad in ("soon", "1h30", "-5", "0"):
        with pytest.raises(ExperimentError, match=r"sweep\.timeout"):
            seconds(bad)


def test_runs_started_at_once_claim_distinct_versions(tmp_path):
    loggers = [TensorBoard(save_dir=str(tmp_path), name="exp") for _ in range(3)]
    versions = [logger.version for logger in loggers]  # each claims its folder as it picks a number
    assert versions == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["version_0", "version_1", "version_2"]


# --- the command line -------------------------------------------------------------------------------


def sweep_error(capsys, *args: str) -> str:
    """The sweep command's stderr for ``args``, which must end with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", BOSTON, *args])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("space", "extra", "message"),
    [
        (
            {"model.init_args.dropoutt": {"type": "float", "low": 0.0, "high": 0.5}},
            {"n_trials": 2},
            "sweep.space: model.init_args.dropoutt: --model.dropoutt: TabularRegressor has no argument "
            "'dropoutt'",
        ),
        (
            {"trainer.max_epochs": {"type": "categorical", "choices": [2, "many"]}},
            {"n_trials": 2},
            "sweep.space: trainer.max_epochs: ",
        ),
        ({LR: {"type": "float", "low": 0.1, "high": 0.001}}, {"n_trials": 2}, "the range is empty"),
        ({LR: {"type": "loguniform", "low": 1e-4, "high": 0.1}}, {"n_trials": 2}, "unknown distribution"),
        ({}, {"n_trials": 2}, "sweep.space is empty"),
        (
            SPACE,
            {"n_trial": 2},
            "sweep.n_trial: the sweep file has no setting 'n_trial'; did you mean n_trials?",
        ),
        (SPACE, {}, "give sweep.n_trials or sweep.timeout"),
        (SPACE, {"n_trials": 2, "timeout": "soon"}, "sweep.timeout: 'soon' is not a duration"),
        (SPACE, {"n_trials": 2, "metric": "val/r2"}, "sweep.direction: give minimize or maximize for val/r2"),
    ],
)
def test_a_bad_sweep_file_is_one_error_line_and_starts_nothing(capsys, in_tmp, space, extra, message):
    path = in_tmp / "bad.yaml"
    path.write_text(yaml.safe_dump({"space": space, **extra}))
    err = sweep_error(capsys, "--sweep", str(path))
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert not (in_tmp / "lightning_logs").exists()  # no study, no trial, no folder


def test_a_sweep_file_that_is_no_yaml_mapping_is_one_error_line(capsys, in_tmp):
    path = in_tmp / "broken.yaml"
    path.write_text("space: [1, 2\n")
    err = sweep_error(capsys, "--sweep", str(path))
    assert err.count("\n") == 1 and err.startswith("error: ") and "broken.yaml" in err, err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "sweep.storage: 'nonsense' is not a database URL"),
        (
            "postgresql://sweeps@127.0.0.1:{port}/db",
            "sweep.storage: cannot open postgresql+psycopg://sweeps@",
        ),
        ("mysql://sweeps@127.0.0.1:{port}/db", "sweep.storage: cannot open mysql://sweeps@127.0.0.1"),
    ],
)
def test_a_database_that_cannot_be_reached_is_one_error_line(capsys, in_tmp, url, message):
    from tests.conftest import free_port

    file = sweep_file(in_tmp, n_trials=1)
    err = sweep_error(capsys, "--sweep", str(file), f"--sweep.storage={url.format(port=free_port())}")
    assert err.count("\n") == 1 and err.startswith(f"error: {message}"), err
    assert "Background on this error" not in err


def test_a_study_started_with_another_space_is_refused(capsys, in_tmp):
    first = sweep_file(in_tmp, n_trials=1)
    storage = f"sqlite:///{in_tmp / 'studies.db'}"
    study = optuna.create_study(study_name="boston", storage=storage)
    study.set_user_attr("space", [{"key": LR, "type": "float", "low": 0.1, "high": 1.0}])
    err = sweep_error(capsys, "--sweep", str(first), f"--sweep.storage={storage}")
    assert err.startswith("error: sweep.study: study 'boston' in sqlite:///") and "another space" in err, err
    assert "--sweep.study" in err and err.count("\n") == 1


def test_print_config_shows_the_sweep_it_would_run(capsys, in_tmp):
    file = sweep_file(in_tmp, n_trials=3)
    with pytest.raises(SystemExit) as exit_info:
        stacked = ["--config", BOSTON, "--config", "trainer/bf16", "--sweep", str(file)]
        main(["sweep", *stacked, "--trainer.max_epochs=7", "--sweep.timeout=2h", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    sweep = printed["sweep"]
    # The defaults made explicit: the checkpoint's monitor and mode, the file's name, SQLite beside the runs.
    assert (sweep["metric"], sweep["direction"], sweep["study"]) == ("val/rmse", "minimize", "boston")
    assert sweep["storage"] == "sqlite:///lightning_logs/boston_housing/sweeps/optuna.db"
    assert sweep["n_trials"] == 3 and sweep["timeout"] == "2h" and sweep["space"] == SPACE
    assert sweep["sampler"]["class_path"] == "optuna.samplers.TPESampler"
    assert sweep["sampler"]["init_args"]["seed"] == 42
    assert sweep["pruner"]["class_path"] == "optuna.pruners.MedianPruner"
    assert printed["model"]["class_path"] == "modules.TabularRegressor"  # fit's config, all of it
    # Stacked configs and flags that override, as fit takes them; the trials get the same.
    assert printed["trainer"]["precision"] == "bf16-mixed" and printed["trainer"]["max_epochs"] == 7


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "sweeps").glob("*.yaml")))
def test_each_shipped_sweep_file_searches_its_lesson_by_name(in_tmp, name):
    # By name, as an installed package runs them: --config <lesson> --sweep <lesson>.
    cli = SweepCLI(resolve_config_names(["--config", name, "--sweep", name]))
    assert cli.config.sweep.study == name and cli.config.sweep.n_trials >= 12
    assert Path(str(cli.config.sweep["__path__"])) == CONFIGS / "sweeps" / f"{name}.yaml"
    parameters = search_space(cli.config.sweep.space)
    # Every range end and choice is a value the lesson's config takes.
    check_space(cli.trial_config, parameters)
    assert any(p.key == "data.batch_size" for p in parameters)


def test_a_worker_names_the_metric_and_tells_each_trial_the_keys_it_varies(in_tmp, monkeypatch):
    storage = f"sqlite:///{in_tmp / 'studies.db'}"
    # A study begun by an older worker: no metric names, a trial's config text as a user attribute.
    old = optuna.create_study(study_name="boston_housing", storage=storage)
    trial = old.ask()
    trial.set_user_attr("config", "seed_everything: 7\n")
    old.tell(trial, 3.0)
    cli = SweepCLI(resolve_config_names(["--config", "boston_housing", "--sweep", "boston_housing"]))
    cli.config.sweep.storage = storage
    monkeypatch.setattr("experiments.sweep.worker.check_space", lambda *args: None)  # checked above, slow
    worker = Worker(cli.config.sweep, cli.layout, cli.trial_config)
    # Joining it gives it the metric's name, which optuna-dashboard shows instead of "Objective 0".
    assert optuna.load_study(study_name="boston_housing", storage=storage).metric_names == ["val/rmse"]
    # Its trial's config is still the best config.
    assert best_config(worker.study, "val/rmse").endswith("\nseed_everything: 7\n")
    # A trial's fit learns the keys the sweep varies, as the sweep file writes them.
    monkeypatch.setenv(TRIAL_VARIABLE, worker.address(worker.study.ask()).to_environment())
    assert json.loads(os.environ[TRIAL_VARIABLE])["parameters"] == [
        "model.hidden_sizes",
        "model.dropout",
        LR,
        "model.optimizer.weight_decay",
        BATCH,
    ]
    assert TrialAddress.from_environment() == worker.address(worker.study.trials[-1])


def test_the_command_lists_the_sweep():
    result = run_experiments(["--help"])
    assert result.returncode == 0 and "python -m experiments sweep --help" in result.stdout
    result = run_experiments(["sweep", "--help"])
    assert result.returncode == 0
    for flag in ("--sweep CONFIG", "--sweep.n_trials", "--sweep.storage", "--sweep.pruner.help", "--config"):
        assert flag in result.stdout


# --- sweeps -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_prunes_writes_its_report_and_its_best_config_reruns_to_the_same_metric(tmp_path):
    file = sweep_file(tmp_path, n_trials=6, pruner=PRUNING)
    result = run_experiments(sweep_command(file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 6 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    # Each trial is an ordinary run of its own, holding the config with its values and an hparams summary.
    runs = [Path(t.user_attrs["run"]) for t in trials]
    assert len(set(runs)) == 6
    for trial, run in zip(trials, runs, strict=True):
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["model"]["init_args"]["optimizer"]["init_args"]["lr"] == trial.params[LR]
        assert saved["data"]["init_args"]["batch_size"] == trial.params[BATCH]
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert len(trial.intermediate_values) == (
            4 if trial.state == TrialState.COMPLETE else trial.last_step + 1
        )
    hparams = hparams_data(runs[0])["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["model.optimizer.lr"].number_value == pytest.approx(trials[0].params[LR])
    # As optuna-dashboard reads the study: the metric by its name, the parameters as the sweep file
    # writes them, the run folder and no config text as a user attribute, the config as an artifact.
    assert study.metric_names == ["val/rmse"]
    artifacts = FileSystemArtifactStore(tmp_path / "lightning_logs/boston_housing/sweeps/artifacts")
    configs = {}
    for trial in trials:
        assert list(trial.params) == [LR, BATCH]
        assert set(trial.user_attrs) <= {"run", "host", "worker", "pruned_at"}, trial.user_attrs
        [meta] = get_all_artifact_meta(trial, storage=study._storage)
        assert (meta.filename, meta.mimetype) == (f"trial_{trial.number}.yaml", "text/plain")
        path = tmp_path / f"trial_{trial.number}.yaml"
        download_artifact(artifact_store=artifacts, file_path=str(path), artifact_id=meta.artifact_id)
        configs[trial.number] = path.read_text()
        assert trial.system_attrs["config"] == configs[trial.number]  # the report's copy, for any machine
        assert yaml.safe_load(configs[trial.number])["data"]["init_args"]["batch_size"] == trial.params[BATCH]
    # The worker's one line per trial: how it ended, its values by those names, its run folder.
    ended = re.findall(r"^sweep: trial (\d+) (?:finished|pruned at validation \d+): val/rmse (\S+) in \d+ s; "
                       rf"{LR}=(\S+), {BATCH}=(\d+); (\S+)$", result.stdout, re.M)  # fmt: skip
    assert [int(line[0]) for line in ended] == [t.number for t in trials], result.stdout[-3000:]
    for trial, (_, value, lr, batch, run) in zip(trials, ended, strict=True):
        reached = trial.intermediate_values[trial.last_step] if trial.value is None else trial.value
        assert float(value) == pytest.approx(reached, rel=1e-3)
        assert float(lr) == pytest.approx(trial.params[LR], rel=1e-3) and int(batch) == trial.params[BATCH]
        assert (tmp_path / run).resolve() == Path(trial.user_attrs["run"]).resolve()
    # The report: the table, best.yaml, the plots as PNGs and in TensorBoard.
    assert f"trial  state     val/rmse  {LR}  {BATCH}  run" in result.stdout
    report = tmp_path / "lightning_logs/boston_housing/sweeps/boston"
    rows = (report / "trials.csv").read_text().splitlines()
    assert rows[0] == f"trial,state,val/rmse,{LR},{BATCH},run,seconds" and len(rows) == 7
    for name in ("optimization_history", "param_importances"):
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = EventAccumulator(str(report)).Reload().Tags()["images"]
    assert sorted(images) == ["sweep/optimization_history", "sweep/param_importances"]
    best = report / "best.yaml"
    assert f"trial {study.best_trial.number}" in best.read_text().splitlines()[0]
    assert best.read_text().endswith(configs[study.best_trial.number])  # the artifact, under a header
    # The best config, run with fit, trains the best trial again: the same best val/rmse.
    rerun = run_experiments(["fit", "--config", str(best)], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    newest = tmp_path / "lightning_logs/boston_housing/version_6/checkpoints/last.ckpt"
    assert best_score(newest) == pytest.approx(study.best_value, rel=1e-6)
    # The same command again continues the study: it is complete, so it runs nothing and reports.
    again = run_experiments(sweep_command(file), cwd=tmp_path)
    assert again.returncode == 0 and "6 trials finished, 0 running, 0 failed" in again.stdout
    assert len(load(tmp_path).trials) == 6


@pytest.mark.slow
def test_failed_trials_are_marked_and_too_many_in_a_row_stop_the_sweep(tmp_path):
    # Every trial's loss diverges: each fit ends with the NaN guard's error, which the trial keeps.
    diverging = {LR: {"type": "float", "low": 1.0e6, "high": 1.0e7, "log": True}}
    file = tmp_path / "diverge.yaml"
    file.write_text(yaml.safe_dump({"space": diverging, "n_trials": 5, "max_failures": 2}))
    result = run_experiments(sweep_command(file, "--sweep.study=diverge"), cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 trials in a row failed (the last, trial 1: training loss is ")
    trials = load(tmp_path, "diverge").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["error"].startswith("training loss is ") for t in trials)


@pytest.mark.slow
def test_a_metric_the_lesson_does_not_log_stops_the_sweep_at_its_first_trial(tmp_path):
    file = sweep_file(tmp_path, n_trials=3)
    result = run_experiments(
        sweep_command(file, "--sweep.metric=val/r2", "--sweep.direction=maximize"), cwd=tmp_path
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: the sweep's metric val/r2 is not logged by this lesson's validation (it logs:"
    )
    assert "val/rmse" in last
    [trial] = load(tmp_path).get_trials()
    assert trial.state == TrialState.FAIL


@pytest.mark.slow
def test_a_time_budget_starts_no_trial_after_it(tmp_path):
    file = sweep_file(tmp_path)  # no n_trials: the budget alone ends it
    result = run_experiments(sweep_command(file, "--sweep.timeout=1s"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state for t in load(tmp_path).get_trials()] == [TrialState.COMPLETE]
    assert "running until the timeout" in result.stdout


def start_worker(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    environment = subprocess_env(TMPDIR=str(cwd), **env)  # the trial configs under cwd: see no_trial_left
    environment.pop("EXPERIMENTS_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def check_shared_study(study: optuna.Study, outputs: list[str], n_trials: int) -> None:
    """``n_trials`` trials in all, numbered 0..n-1, each finished once in a run of its own, and taken by
    both workers."""
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(n_trials))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert len({t.user_attrs["run"] for t in trials}) == n_trials
    taken = [re.findall(r"^sweep: trial (\d+) (?:finished|pruned)", out, re.M) for out in outputs]
    assert all(taken), "each worker took at least one trial"
    numbers = sorted(int(n) for worker in taken for n in worker)
    assert numbers == list(range(n_trials)), taken  # none twice, none lost


def run_two_workers(args: list[str], cwd: Path) -> list[str]:
    workers = [start_worker(args, cwd) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    return outputs


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    file = sweep_file(tmp_path, n_trials=5)
    outputs = run_two_workers(sweep_command(file, "--trainer.max_epochs=2"), tmp_path)
    check_shared_study(load(tmp_path), outputs, 5)


def postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs: on the PATH, or where Debian's package puts them."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A PostgreSQL server of its own for a test: a cluster in a temporary folder, on a free loopback port,
    run as the postgres user when the test runs as root (the server refuses root). ``stop`` and ``start``
    restart it on the same data and port, as an administrator's restart would.

    Args:
        binaries: The folder of PostgreSQL's server programs (``postgres_binaries``).
        folder: The cluster's folder (data, socket, log), which the server's user can reach.
        user: The user to run the server as (None: this process's).
    """

    def __init__(self, binaries: Path, folder: Path, user: Any = None) -> None:
        from tests.conftest import free_port

        self.binaries, self.folder, self.user = binaries, folder, user
        self.data, self.port = folder / "data", free_port()
        self.run("initdb", "-D", str(self.data), "-U", "sweeps", "--auth=trust", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://sweeps@127.0.0.1:{self.port}/postgres"

    def run(self, program: str, *args: str) -> None:
        def as_server_user() -> None:
            if self.user is not None:
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)

        command = [str(self.binaries / program), *args]
        subprocess.run(command, check=True, capture_output=True, preexec_fn=as_server_user, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "log")
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: ``fast`` ends its sessions and shuts down cleanly, ``immediate`` kills it."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def postgres_server():
    """A started ``PostgresServer``, stopped and removed at the end; skipped where PostgreSQL's server
    programs are not installed."""
    import pwd

    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: apt-get install postgresql"
        )
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root: as Debian's postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run the PostgreSQL server as")
    # Not under tmp_path: pytest's base folder is readable by its owner only, and the server's user
    # must reach its files and socket.
    folder = Path(tempfile.mkdtemp(prefix="sweep-postgres-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    try:
        server = PostgresServer(binaries, folder, user)
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # a test may leave it stopped
                server.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> str:
    """The URL of a PostgreSQL server of the test's own (``postgres_server``)."""
    return postgres_server.url


def open_at_once(url: str, locked: bool, workers: int = 4) -> list[BaseException]:
    """Opens a study storage at ``url`` from ``workers`` threads at once; the errors they met."""
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def open_one() -> None:
        start.wait()
        try:
            with database_lock(url, "optuna-schema") if locked else contextlib.nullcontext():
                open_storage(url)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_workers_that_open_a_new_sqlite_file_at_once_all_get_it(tmp_path):
    assert open_at_once(f"sqlite:///{tmp_path / 'new.db'}", locked=True) == []


def test_workers_that_open_a_new_postgresql_database_at_once_all_get_it(postgres):
    # Optuna's first open creates its tables; without the lock, workers racing to do it fail (as two
    # SLURM array tasks did on a new database).
    assert open_at_once(storage_url(postgres), locked=True) == []


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_postgresql_server(tmp_path, postgres):
    file = sweep_file(tmp_path, n_trials=4)
    outputs = run_two_workers(
        sweep_command(file, "--trainer.max_epochs=2", f"--sweep.storage={postgres}"), tmp_path
    )
    study = load(tmp_path, storage=storage_url(postgres))
    check_shared_study(study, outputs, 4)
    assert "sweep: study 'boston' in postgresql+psycopg://sweeps@127.0.0.1:" in outputs[0]


def reported(root: Path) -> int:
    """How many validations the study's first trial has reported (0 before the study exists)."""
    try:
        trials = load(root).get_trials()
    except Exception:  # not created yet
        return 0
    return len(trials[0].intermediate_values) if trials else 0


def no_trial_left(folder: Path) -> bool:
    """No process runs a trial config of this test (they are written under the worker's TMPDIR)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder) in cmdline.read_bytes().decode(errors="replace") and "fit" in cmdline.read_text():
                return False
        except OSError:
            continue
    return True


#: A worker's first trial starts a fresh process that imports Lightning and builds its CLI: on a loaded 2-core
#: machine (the whole suite) that took over 180 s once, so the waits for its first reports allow 400 s.
def wait_for(condition, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_the_same_command_continues(tmp_path):
    file = sweep_file(tmp_path, n_trials=3)
    command = sweep_command(file, "--trainer.max_epochs=30", "--sweep.heartbeat=1")
    worker = start_worker(command, tmp_path)
    if not wait_for(lambda: reported(tmp_path) >= 2, timeout=400):
        worker.kill()  # what the worker said, for the next time this happens (once, under pytest -n 2)
        pytest.fail(f"trial 0 never reported twice; the worker's output:\n{worker.communicate()[0][-4000:]}")
    worker.kill()
    worker.wait()
    assert wait_for(lambda: no_trial_left(tmp_path)), "the trial outlived its worker"
    [orphan] = load(tmp_path).get_trials()
    assert orphan.state == TrialState.RUNNING  # nobody has looked yet
    time.sleep(3)  # two missed heartbeats
    result = run_experiments(command, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert "0 trials finished, 0 running, 1 failed" in result.stdout


@pytest.mark.slow
def test_a_worker_stopped_with_sigterm_stops_its_trial_with_a_checkpoint_and_fails_it(tmp_path):
    file = sweep_file(tmp_path, n_trials=2)
    worker = start_worker(sweep_command(file, "--trainer.max_epochs=200", "--sweep.heartbeat=60"), tmp_path)
    assert wait_for(lambda: reported(tmp_path) >= 3, timeout=400), "trial 0 never trained"
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 128 + signal.SIGTERM, output[-3000:]
    [trial] = load(tmp_path).get_trials()
    assert trial.state == TrialState.FAIL  # at once, not after the heartbeat's grace period
    assert "sweep: trial 0 stopped (SIGTERM) and marked failed" in output
    assert "SIGTERM: stopped after epoch" in output  # the fit's own stop, with its last.ckpt
    assert (Path(trial.user_attrs["run"]) / "checkpoints" / "last.ckpt").is_file()
    assert no_trial_left(tmp_path)


@pytest.mark.slow
def test_each_trial_can_be_a_ddp_run_and_every_rank_stops_when_pruned(tmp_path):
    pruner = {
        "class_path": "optuna.pruners.ThresholdPruner",
        "init_args": {"upper": 1e-3, "n_warmup_steps": 1},
    }
    file = sweep_file(tmp_path, n_trials=2, pruner=pruner)
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_epochs=4"]
    result = run_experiments(sweep_command(file, *ddp), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    # Pruned at its second validation by rank 0's decision, on both ranks: two epochs, then a clean end.
    assert [(t.state, t.user_attrs["pruned_at"]) for t in trials] == [(TrialState.PRUNED, 1)] * 2
    for trial in trials:
        assert sorted(trial.intermediate_values) == [0, 1]
        state = torch.load(Path(trial.user_attrs["run"]) / "checkpoints/last.ckpt", weights_only=True)
        assert state["epoch"] == 2  # epochs done, of the 4 asked for
    assert "no complete trial" not in result.stderr
