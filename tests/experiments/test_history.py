"""Runs listed and compared (experiments/history.py) from the manifests runs write (experiments/manifest.py),
on real run folders: two fits with different learning rates, a test of the second's checkpoint, a fit
that blows up (NaN loss) and one stopped by SIGTERM, all made once for the module."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from core.errors import ExperimentError
from experiments.history import find_runs, run_record
from experiments.main import main
from experiments.manifest import MANIFEST, GitState, read_manifest, repository_of
from tests.conftest import QUIET, config

LESSON = ["--config", config("linear_regression"), "--trainer.accelerator=cpu", *QUIET]


def callback_arg(kind: str, /, **init_args: object) -> str:
    """``--trainer.callbacks+=`` a callback of tests/experiments/test_faults.py or of this module."""
    module = "tests.experiments.test_faults" if kind in ("SignalAt", "PoisonAt") else __name__
    return f"--trainer.callbacks+={json.dumps({'class_path': f'{module}.{kind}', 'init_args': init_args})}"


class FailAtStart(Callback):
    """Fails the run before its first step: the run folder is removed (experiments/faults.py)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        raise ExperimentError("failed before training")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lightning_logs`` of: version_0 (1 epoch, lr 0.1), version_1 (2 epochs, lr 0.05, tested),
    version_2 (NaN loss at its third step: failed), version_3 (SIGTERM at its second step: stopped), and a
    run that failed before training (no folder left)."""
    folder = tmp_path_factory.mktemp("history")
    one_epoch = [*LESSON, "--trainer.max_epochs=1"]
    sigterm = callback_arg("SignalAt", name="SIGTERM", epoch=0, batch=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["fit", *one_epoch])
        main(["fit", *LESSON, "--trainer.max_epochs=2", "--model.optimizer.lr=0.05"])
        main(["test", *LESSON, "--ckpt_path=last"])
        with pytest.raises(SystemExit) as failed:
            main(["fit", *one_epoch, callback_arg("PoisonAt", epoch=0, batch=2)])
        assert failed.value.code == 2
        with pytest.raises(SystemExit) as stopped:
            main(["fit", *one_epoch, sigterm])
        assert stopped.value.code == 143
        with pytest.raises(SystemExit):
            main(["fit", *one_epoch, callback_arg("FailAtStart")])
    return folder / "lightning_logs"


def command(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(list(args))
    return capsys.readouterr().out


def test_manifest_records_the_code_the_versions_and_how_the_run_ended(logs: Path) -> None:
    runs = logs / "linear_regression"
    # The run that failed before training left no folder, and no manifest was written after its removal.
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1", "version_2", "version_3"]
    manifest = read_manifest(runs / "version_1")
    assert manifest is not None
    assert manifest["status"] == "finished"
    assert (manifest["epochs"], manifest["global_step"], manifest["monitor"]) == (2, 14, "val/loss")
    assert Path(manifest["best_checkpoint"]).is_file()
    assert manifest["command"].startswith("python -m experiments fit --config ")
    assert "--model.optimizer.lr=0.05" in manifest["command"]
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["accelerator"]["type"] == "cpu" and manifest["accelerator"]["world_size"] == 1
    assert manifest["host"] == socket.gethostname() and manifest["pid"] == os.getpid()
    assert manifest["end"] >= manifest["start"] and manifest["duration_s"] > 0
    # The checkout's state, or null for each field when the tests run outside one (an installed wheel).
    [code] = manifest["code"]
    assert code["role"] == "project"
    assert code["commit"] is None or re.fullmatch("[0-9a-f]{40}", code["commit"])
    assert bool(code.get("diff")) == bool(code["dirty"])
    # The test of the checkpoint, unrounded, in the manifest of the run the checkpoint came from.
    test = manifest["evaluations"]["test"]
    assert set(test["metrics"]) == {"test/loss"} and Path(test["checkpoint"]).name == "last.ckpt"
    assert read_manifest(runs / "version_0").get("evaluations") is None


def test_runs_lists_every_run_newest_first_with_how_it_ended(logs: Path, capsys) -> None:
    runs = json.loads(command(capsys, "runs", "--root", str(logs), "--format", "json"))
    assert [run["version"] for run in runs] == ["version_3", "version_2", "version_1", "version_0"]
    stopped, failed, tested, first = runs
    assert (stopped["status"], stopped["signal"]) == ("stopped", "SIGTERM")
    assert failed["status"] == "failed" and "training loss is nan" in failed["error"]
    assert (failed["epochs"], failed["global_step"]) == (0, 3)  # where the error says it stopped
    assert "global step 3" in failed["error"]
    assert (tested["status"], tested["epochs"], first["epochs"]) == ("finished", 2, 1)
    manifest = read_manifest(logs / "linear_regression" / "version_1")
    assert tested["test"] == manifest["evaluations"]["test"]["metrics"]
    assert tested["best"] == manifest["best"] and first["test"] == {}

    text = command(capsys, "runs", "linear_regression", "--root", str(logs))
    header, *lines = text.splitlines()
    assert header.split()[:4] == ["experiment", "version", "status", "epochs"]
    row = next(line for line in lines if "version_1" in line)
    # Aligned: every row's status starts under the header's.
    assert {line.index(" finished") + 1 for line in lines if "finished" in line} == {header.index("status")}
    assert f"test/loss {tested['test']['test/loss']:.4g}" in row
    assert f"val/loss {tested['best']:.4g}" in row
    assert "stopped (SIGTERM)" in lines[0] and "failed" in lines[1]


def test_diff_shows_the_config_and_the_results_side_by_side(logs: Path, capsys) -> None:
    pair = ["linear_regression/version_0", "linear_regression/version_1"]
    found = json.loads(command(capsys, "diff", *pair, "--root", str(logs), "--format", "json"))
    assert found["config"]["model.optimizer.lr"] == [0.1, 0.05]
    assert found["config"]["trainer.max_epochs"] == [1, 2]
    assert not [key for key in found["config"] if "init_args" in key]
    assert found["results"]["test/loss"][0] is None and found["results"]["test/loss"][1] > 0
    assert found["results"]["epochs"] == [1, 2]
    assert "command" in found["environment"] and "versions.torch" not in found["environment"]

    # A run folder's path and <experiment>:last name runs too.
    first = str(logs / "linear_regression/version_0")
    text = command(capsys, "diff", first, "linear_regression:last", "--root", str(logs))
    assert "model.optimizer.lr" not in text  # the same in both: not a difference
    assert re.search(r"status\s+finished\s+stopped \(SIGTERM\)", text)
    assert "config: 0 differences" not in text and "callbacks" in text


def test_both_commands_have_help(capsys) -> None:
    for name in ("runs", "diff"):
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: python -m experiments {name}") and "--format {table,json}" in text


def test_a_bad_run_or_experiment_is_one_line(logs: Path, capsys) -> None:
    lines = []
    for args in (
        ["diff", "linear_regression/version_9", "linear_regression/version_0"],
        ["diff", str(logs), "linear_regression/version_0"],
        ["runs", "no_such_lesson"],
        ["runs", "--format", "yaml"],
    ):
        with pytest.raises(SystemExit) as error:
            main([*args, "--root", str(logs)])
        assert error.value.code == 2
        [line] = capsys.readouterr().err.splitlines()
        lines.append(line)
    missing, not_a_run, no_runs, bad_format = lines
    assert missing.startswith("error: linear_regression/version_9: no such folder")
    assert not_a_run.startswith(f"error: {logs}: not a run folder")
    assert (
        no_runs.startswith("error: no runs of experiment 'no_such_lesson'") and "linear_regression" in no_runs
    )
    assert bad_format.startswith("error: python -m experiments runs: argument --format: invalid choice")


def test_a_run_that_died_and_a_run_from_before_manifests(logs: Path, tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid, status in ((gone.pid, "died"), (os.getpid(), "running")):
        folder = tmp_path / "lightning_logs" / "mine" / f"version_{pid}"
        folder.mkdir(parents=True)
        manifest: dict[str, Any] = {"experiment": "mine", "status": "running", "pid": pid}
        (folder / MANIFEST).write_text(json.dumps({**manifest, "host": socket.gethostname()}))
        assert run_record(folder)["status"] == status
    # A folder with config.yaml and checkpoints but no manifest: listed, with what is unknown as such.
    old = tmp_path / "lightning_logs" / "linear_regression" / "version_0"
    shutil.copytree(logs / "linear_regression" / "version_0", old)
    (old / MANIFEST).unlink()
    [run] = find_runs(tmp_path / "lightning_logs", "linear_regression")
    assert (run["version"], run["status"], run["start"], run["code"]) == ("version_0", "unknown", None, None)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_of_a_clean_and_a_dirty_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "lesson"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "model.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
    assert repository_of(repo / "pkg") == repo
    state, diff = GitState(repo).result()
    assert (state["commit"], state["dirty"], state["untracked"], diff) == (head.strip(), False, [], "")
    (repo / "pkg" / "model.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    state, diff = GitState(repo).result()
    assert (state["dirty"], state["untracked"]) == (True, ["new.py"])
    assert "-x = 1\n+x = 2" in diff
    assert GitState(tmp_path).result()[0]["commit"] is None  # not a checkout: unknown, not an error
