"""No checkpoint runs code, wherever the command reads one (experiments/ckpt_path.py).

A checkpoint is a pickle: unpickling can call any function the file names. Each test plants a checkpoint
whose unpickling would run a shell command (``touch <marker>``) in one place the command reads
checkpoints from: ``--ckpt_path <file>``, ``--ckpt_path last``/``best``, the SLURM requeue checkpoint, the
feature_extraction config's checkpoint, the rerun of a sweep's ``best.yaml``, and ``read_checkpoint``
itself. In each, the marker must not exist afterwards, and the command ends with one ``error:`` line
(exit status 2, no traceback) naming the file and the objects it will not unpickle, with a way to
re-save a trusted file, which ``test_the_printed_recipe_resaves_a_trusted_checkpoint_the_command_accepts``
follows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from core.errors import ExperimentError
from experiments.ckpt_path import read_checkpoint
from experiments.main import main
from experiments.preemption import hpc_resume_checkpoint
from tests.conftest import QUIET, config, slurm_job_environment

LR = "linear_regression"
#: What the error line says of every planted file (os.system is posix.system on Linux).
REFUSAL = "holds objects this command will not unpickle (posix.system): a weights-only load refuses them"


class RunsCommand:
    """Unpickled, it runs ``touch <marker>``: what a malicious checkpoint holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def plant(path: Path, marker: Path, base: dict[str, Any] | None = None) -> Path:
    """A checkpoint at ``path`` in torch's zip format: ``base`` (by default an empty state_dict) and an
    entry whose unpickling would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(base or {"state_dict": {}}), "payload": RunsCommand(marker)}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished linear_regression run (2 epochs, validated: a best checkpoint and last.ckpt)."""
    root = tmp_path_factory.mktemp("trained")
    with contextlib.chdir(root):
        main(["fit", "--config", config(LR), "--trainer.max_epochs=2", *QUIET])
    return root / "lightning_logs" / LR / "version_0" / "checkpoints"


@pytest.fixture
def command(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Any:
    """``command(*args)`` runs the command in-process in ``in_tmp``; it must end with one error line
    refusing a planted checkpoint, which it returns."""
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["experiments"])  # as a shell runs it: no pytest arguments

    def run(*args: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main([*args, *QUIET])
        out, err = capsys.readouterr()
        assert stop.value.code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in out + err
        assert "holds objects this command will not unpickle (" in lines[0], lines[0]
        assert "a weights-only load refuses them, as unpickling them could run code" in lines[0]
        assert not list(in_tmp.rglob("marker")), "the checkpoint's command ran"
        return lines[0]

    return run


def run_folder(root: Path, experiment: str = LR, version: int = 0) -> Path:
    return root / "lightning_logs" / experiment / f"version_{version}" / "checkpoints"


# --- --ckpt_path <file> ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_an_explicit_ckpt_path_is_refused(command: Any, in_tmp: Path, subcommand: str) -> None:
    path = plant(in_tmp / "downloaded.ckpt", in_tmp / "marker")
    line = command(subcommand, "--config", config(LR), f"--ckpt_path={path}")
    assert line.startswith(f"error: --ckpt_path {path} {REFUSAL}")
    # How to re-save it, if trusted, and what to give then.
    assert f'python -c \'import io, torch; c = torch.load("{path}", weights_only=False);' in line
    assert line.endswith(f"then give --ckpt_path {in_tmp / 'downloaded-plain.ckpt'}")


def test_the_old_pickle_format_is_refused_too(command: Any, in_tmp: Path) -> None:
    path = in_tmp / "old.ckpt"
    torch.save(
        {"state_dict": {}, "payload": RunsCommand(in_tmp / "marker")},
        path,
        _use_new_zipfile_serialization=False,
    )
    line = command("test", "--config", config(LR), f"--ckpt_path={path}")
    assert line.startswith(f"error: --ckpt_path {path} {REFUSAL}")


# --- last and best --------------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_a_planted_last_checkpoint_is_refused(command: Any, in_tmp: Path, subcommand: str) -> None:
    last = plant(run_folder(in_tmp) / "last.ckpt", in_tmp / "marker")
    line = command(subcommand, "--config", config(LR), "--ckpt_path=last")
    assert line.startswith(f"error: --ckpt_path last: {last.relative_to(in_tmp)} {REFUSAL}")


def test_a_planted_last_checkpoint_is_refused_when_looking_for_the_best(command: Any, in_tmp: Path) -> None:
    # --ckpt_path best reads last.ckpt first: its state names the best checkpoint.
    last = plant(run_folder(in_tmp) / "last.ckpt", in_tmp / "marker")
    line = command("test", "--config", config(LR), "--ckpt_path=best")
    assert line.startswith(f"error: --ckpt_path best: {last.relative_to(in_tmp)}, whose state names")
    assert REFUSAL in line


def test_a_planted_best_checkpoint_is_refused(command: Any, in_tmp: Path, trained: Path) -> None:
    # A genuine run whose best checkpoint was replaced.
    folder = run_folder(in_tmp)
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes((trained / "last.ckpt").read_bytes())
    [best] = trained.glob("best-*.ckpt")
    base = torch.load(best, weights_only=True)
    planted = plant(folder / best.name, in_tmp / "marker", base)
    line = command("test", "--config", config(LR), "--ckpt_path=best")
    assert line.startswith(f"error: --ckpt_path best: {planted.relative_to(in_tmp)} {REFUSAL}")


# --- the SLURM requeue checkpoint -----------------------------------------------------------------------


@pytest.fixture
def slurm_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of a one-task SLURM job (tests/conftest.py)."""
    slurm_job_environment(monkeypatch)


@pytest.mark.parametrize("root", [None, "job"])
def test_a_planted_requeue_checkpoint_is_refused_before_anything_runs(
    command: Any, in_tmp: Path, slurm_job: None, root: str | None
) -> None:
    # The requeued job runs the same command, without --ckpt_path: Lightning would resume from the
    # newest hpc_ckpt_<n>.ckpt in the trainer's default_root_dir (the working folder when unset).
    folder = in_tmp / root if root else in_tmp
    plant(folder / "hpc_ckpt_1.ckpt", in_tmp / "marker")
    planted = plant(folder / "hpc_ckpt_2.ckpt", in_tmp / "marker")
    flags = [f"--trainer.default_root_dir={root}"] if root else []
    line = command("fit", "--config", config(LR), *flags)
    shown = planted.relative_to(in_tmp) if root else planted
    assert line.startswith(f"error: the SLURM requeue checkpoint {shown} (the newest hpc_ckpt_<n>.ckpt")
    assert REFUSAL in line and "--ckpt_path" not in line.split(REFUSAL)[0]
    # Re-saved in place, where the requeued job looks for it.
    assert line.endswith("then start again") and "torch.save(" in line and f'"{shown}")' in line
    assert not (in_tmp / "lightning_logs").exists()


def test_a_genuine_requeue_checkpoint_is_resumed(
    in_tmp: Path, trained: Path, slurm_job: None, caplog: pytest.LogCaptureFixture
) -> None:
    # What Preemption writes on the requeue signal is trainer.save_checkpoint's full checkpoint, as
    # last.ckpt is: it passes the check, and Lightning resumes from it (weights-only).
    genuine = torch.load(trained / "last.ckpt", weights_only=True)
    hpc = in_tmp / "job" / "hpc_ckpt_1.ckpt"
    hpc.parent.mkdir()
    hpc.write_bytes((trained / "last.ckpt").read_bytes())
    with caplog.at_level(logging.INFO):
        main(
            [
                "fit",
                "--config",
                config(LR),
                "--trainer.default_root_dir=job",
                "--trainer.max_epochs=3",
                *QUIET,
            ]
        )
    assert "Restored all states from the checkpoint at job/hpc_ckpt_1.ckpt" in caplog.messages
    resumed = torch.load(run_folder(in_tmp) / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == genuine["global_step"] * 3 // 2


@pytest.mark.parametrize(
    "names", [["hpc_ckpt_1.ckpt", "hpc_ckpt_12.ckpt", "hpc_ckpt_3.ckpt"], ["hpc_ckpt_7.ckpt"], []]
)
def test_the_requeue_checkpoint_is_the_one_lightning_resumes_from(
    tmp_path: Path, slurm_job: None, names: list[str]
) -> None:
    for name in [*names, "last.ckpt"]:
        (tmp_path / name).write_bytes(b"")
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    lightning = trainer._checkpoint_connector._hpc_resume_path  # no public API: what Lightning 2.6 does
    found = hpc_resume_checkpoint(tmp_path)
    assert (str(found) if found else None) == lightning
    assert found == (tmp_path / max(names, key=lambda n: int(n[9:-5])) if names else None)


def test_outside_slurm_no_requeue_checkpoint_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_NTASKS", raising=False)  # also when the tests run in a SLURM job
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")
    assert hpc_resume_checkpoint(tmp_path) is None


# --- feature_extraction.yaml ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["best", "last", "file"])
def test_feature_extraction_refuses_a_planted_checkpoint(
    command: Any, in_tmp: Path, mnist_dir: Path, which: str
) -> None:
    # It predicts from a checkpoint of mnist_convnet's runs (the experiment its logger names).
    last = plant(run_folder(in_tmp, "mnist_convnet") / "last.ckpt", in_tmp / "marker")
    given = str(last) if which == "file" else which
    line = command(
        "predict", "--config", config("feature_extraction"), f"--data.data_dir={mnist_dir}",
        f"--ckpt_path={given}",
    )  # fmt: skip
    shown = last.relative_to(in_tmp)
    expected = {
        "best": f"error: --ckpt_path best: {shown}, whose state names the best checkpoint, holds",
        "last": f"error: --ckpt_path last: {shown} holds",
        "file": f"error: --ckpt_path {last} holds",
    }
    assert line.startswith(expected[which]), line
    assert not (run_folder(in_tmp, "mnist_convnet").parent / "predict_feature_extraction").exists()


# --- a sweep's best.yaml --------------------------------------------------------------------------------


@pytest.fixture
def best_yaml(in_tmp: Path) -> Path:
    """best.yaml as a sweep of linear_regression writes it: the config the sweep gives its best trial
    (``SweepCLI.trial_config``), with the report's header (``best_config``)."""
    pytest.importorskip("optuna")  # the sweep is an extra
    from experiments.sweep.command import SweepCLI
    from experiments.sweep.report import best_config

    cli = SweepCLI(["--config", config(LR), "--trainer.max_epochs=1", "--sweep.metric=val/loss"])
    config_text = cli.trial_config(["--data.batch_size=16"])
    trial = SimpleNamespace(number=3, value=0.25, system_attrs={"config": config_text}, user_attrs={})
    study = SimpleNamespace(study_name="lr", best_trial=trial)
    path = in_tmp / "best.yaml"
    path.write_text(best_config(study, "val/loss"))
    return path


def test_a_best_yaml_rerun_reads_no_checkpoint_of_its_own(best_yaml: Path) -> None:
    # The trial's config is the sweep's parse, which has no subcommand: best.yaml names no checkpoint,
    # so `fit --config best.yaml` trains from scratch. It meets a checkpoint only through a --ckpt_path
    # given with it, or on SLURM through the requeue checkpoint: the two tests below.
    rerun = yaml.safe_load(best_yaml.read_text())
    assert "ckpt_path" not in rerun and "weights_only" not in rerun
    assert rerun["data"]["init_args"]["batch_size"] == 16


def test_a_best_yaml_rerun_refuses_a_planted_last_checkpoint_of_the_trials(
    command: Any, in_tmp: Path, best_yaml: Path
) -> None:
    # The trials are runs of the experiment: --ckpt_path last finds the newest trial's checkpoint.
    plant(run_folder(in_tmp, version=0) / "last.ckpt", in_tmp / "marker")
    planted = plant(run_folder(in_tmp, version=1) / "last.ckpt", in_tmp / "marker")
    line = command("fit", "--config", str(best_yaml), "--ckpt_path=last")
    assert line.startswith(f"error: --ckpt_path last: {planted.relative_to(in_tmp)} {REFUSAL}")


def test_a_best_yaml_rerun_on_slurm_refuses_a_planted_requeue_checkpoint(
    command: Any, in_tmp: Path, best_yaml: Path, slurm_job: None
) -> None:
    planted = plant(in_tmp / "hpc_ckpt_1.ckpt", in_tmp / "marker")
    line = command("fit", "--config", str(best_yaml))
    assert line.startswith(f"error: the SLURM requeue checkpoint {planted} ")


# --- read_checkpoint, and weights_only ------------------------------------------------------------------


def test_read_checkpoint_refuses_in_one_line(tmp_path: Path) -> None:
    path = plant(tmp_path / "x.ckpt", tmp_path / "marker")
    with pytest.raises(ExperimentError) as refused:
        read_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"--ckpt_path {path} {REFUSAL}") and "\n" not in message
    assert not (tmp_path / "marker").exists()
    # Every object that is not a tensor or a plain value is named, not only the first torch meets.
    torch.save({"state_dict": {}, "a": pathlib.PurePosixPath("x"), "b": RunsCommand(tmp_path / "m")}, path)
    with pytest.raises(ExperimentError, match=r"unpickle \(pathlib.PurePosixPath, posix.system\)"):
        read_checkpoint(path, source=f"the file {path}")
    assert not (tmp_path / "m").exists()


def test_weights_only_false_is_refused(command: Any, in_tmp: Path, trained: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["test", "--config", config(LR), f"--ckpt_path={trained / 'last.ckpt'}", "--weights_only=false"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.strip().splitlines() == [
        "error: --weights_only false: this command reads every checkpoint weights-only, as unpickling other "
        "objects could run code; leave the flag out (a checkpoint that needs it is refused with a way to "
        "re-save it)"
    ]


@pytest.mark.parametrize("flag", [[], ["--weights_only=true"], ["--weights_only=null"]])
def test_lightning_loads_the_checkpoint_weights_only_whatever_torch_is_told(
    in_tmp: Path, trained: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str]
) -> None:
    # torch loads everything when weights_only is None and this variable is set; True it cannot override.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    loads: list[Any] = []
    real_load = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    main(["test", "--config", config(LR), f"--ckpt_path={trained / 'last.ckpt'}", *flag, *QUIET])
    # read_checkpoint's, LightningCLI's (for the hyperparameters) and the Trainer's.
    assert len(loads) == 3 and loads == [True, True, True]


# --- the recipe the error line prints -------------------------------------------------------------------


def test_the_printed_recipe_resaves_a_trusted_checkpoint_the_command_accepts(
    command: Any, in_tmp: Path, trained: Path, capsys
) -> None:
    # A checkpoint its user trusts, holding an object a weights-only load refuses: a path among its
    # hyperparameters (as a lesson that kept a pathlib.Path argument would have saved).
    folder = run_folder(in_tmp)
    folder.mkdir(parents=True)
    genuine = torch.load(trained / "last.ckpt", weights_only=True)
    trusted = {**genuine, "hyper_parameters": {**genuine["hyper_parameters"], "root": pathlib.Path("x")}}
    torch.save(trusted, folder / "last.ckpt")
    line = command("fit", "--config", config(LR), "--ckpt_path=last", "--trainer.max_epochs=3")
    assert "holds objects this command will not unpickle (pathlib.PosixPath)" in line
    recipe, then = line.split("re-save it without them: ")[1].rsplit("; ", 1)
    plain = folder / "last-plain.ckpt"
    assert then == f"then give --ckpt_path {plain.relative_to(in_tmp)}"
    # The user runs the recipe as printed, in the folder the command ran in.
    argv = shlex.split(recipe)
    assert argv[:2] == ["python", "-c"]
    subprocess.run([sys.executable, *argv[1:]], cwd=in_tmp, check=True)
    saved = torch.load(plain, weights_only=True)
    # What a weights-only load reads is kept: the weights, optimiser, loops, callbacks' states.
    assert sorted(saved) == sorted(set(genuine) - {"hyper_parameters"})
    assert torch.equal(saved["state_dict"]["net.weight"], genuine["state_dict"]["net.weight"])
    # The command accepts it: the fit resumes at its step and trains a third epoch, in the same run.
    main(["fit", "--config", config(LR), f"--ckpt_path={plain}", "--trainer.max_epochs=3", *QUIET])
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == genuine["global_step"] * 3 // 2
    capsys.readouterr()
