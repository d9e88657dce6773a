"""The project as an installed wheel: configs shipped in it, lessons run by name from any folder, and the
shell completion script (experiments/configs.py, pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from experiments.configs import lesson_names, resolve_config_names, resolve_main_args
from tests.conftest import CONFIGS, REPO, run_experiments
from tests.lesson_data import lesson_configs


def packaged(name: str) -> str:
    """The absolute path ``resolve_config_names`` gives for a packaged config (the checkout's here)."""
    return str((CONFIGS / name).resolve())


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current folder outside the checkout, where ``configs/...`` names no file."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- config names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("mnist_convnet", "mnist_convnet.yaml"),
        ("mnist_convnet.yaml", "mnist_convnet.yaml"),
        ("trainer/gpu", "trainer/gpu.yaml"),
        ("trainer/gpu.yaml", "trainer/gpu.yaml"),
        ("configs/mnist_convnet.yaml", "mnist_convnet.yaml"),
        ("configs/trainer/bf16.yaml", "trainer/bf16.yaml"),
    ],
)
def test_a_name_becomes_the_packaged_file(elsewhere: Path, name: str, file: str) -> None:
    resolved = resolve_config_names(["fit", "--config", name, "--trainer.max_epochs", "2"])
    assert resolved == ["fit", "--config", packaged(file), "--trainer.max_epochs", "2"]
    assert Path(resolved[2]).is_absolute() and Path(resolved[2]).is_file()


def test_every_form_of_the_option_and_stacked_configs(elsewhere: Path) -> None:
    args = ["fit", "--config=linear_regression", "-c", "trainer/debug", "--config", "trainer/bf16.yaml"]
    assert resolve_config_names(args) == [
        "fit",
        f"--config={packaged('linear_regression.yaml')}",
        "-c",
        packaged("trainer/debug.yaml"),
        "--config",
        packaged("trainer/bf16.yaml"),
    ]


@pytest.mark.parametrize(
    "name",
    ["mnist_convnet", "mnist_convnet.yaml", "sweeps/mnist_convnet", "configs/sweeps/mnist_convnet.yaml"],
)
def test_a_sweep_name_becomes_the_packaged_sweep_file(elsewhere: Path, name: str) -> None:
    resolved = resolve_config_names(
        ["sweep", "--config", "mnist_convnet", "--sweep", name, "--sweep.n_trials=3"]
    )
    assert resolved == ["sweep", "--config", packaged("mnist_convnet.yaml"), "--sweep", packaged(
        "sweeps/mnist_convnet.yaml"), "--sweep.n_trials=3"]  # fmt: skip
    assert resolve_config_names([f"--sweep={name}"]) == [f"--sweep={packaged('sweeps/mnist_convnet.yaml')}"]


def test_an_existing_file_is_used_as_it_is(elsewhere: Path) -> None:
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "mnist_convnet.yaml").write_text("trainer: {max_epochs: 1}\n")
    (elsewhere / "mnist_convnet.yaml").write_text("trainer: {max_epochs: 1}\n")
    args = ["fit", "--config", "mnist_convnet.yaml", "--config=configs/mnist_convnet.yaml"]
    assert resolve_config_names(args) == args
    # A folder is not replaced either: the command names it as a folder.
    assert resolve_config_names(["fit", "--config", "configs"]) == ["fit", "--config", "configs"]


@pytest.mark.parametrize(
    "name",
    [
        "no_such_lesson",
        "configs/no_such_lesson.yaml",
        "trainer/no_such_preset",
        "../configs/mnist_convnet",
        "",
    ],
)
def test_anything_else_is_left_alone(elsewhere: Path, name: str) -> None:
    for args in (["fit", "--config", name], ["fit", f"--config={name}"]):
        assert resolve_config_names(args) == args


def test_only_config_values_change(elsewhere: Path) -> None:
    # The same words as values of other flags, as a subcommand, or a --config with no value.
    args = ["fit", "--data.path", "mnist_convnet", "--model", "linear_regression", "--config"]
    assert resolve_config_names(args) == args
    inline = "trainer: {max_epochs: " + "1" * 300 + "}"  # longer than a file name may be
    assert resolve_config_names(["fit", "--config", inline]) == ["fit", "--config", inline]


@pytest.mark.parametrize("lesson", lesson_configs())
def test_a_lesson_config_is_a_lesson_name(elsewhere: Path, lesson: str) -> None:
    names = lesson_names()
    assert names == lesson_configs()
    assert not any(name.startswith("trainer") or name == "__init__" for name in names)
    # Run by its name from any folder.
    resolved = resolve_config_names(["fit", "--config", lesson])
    assert resolved == ["fit", "--config", packaged(f"{lesson}.yaml")]


def test_main_args_none_rewrites_the_command_line(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["experiments", "fit", "--config", "sine_rnn"])
    # None stays None so that LightningCLI reads sys.argv (it warns when given args and sys.argv both).
    assert resolve_main_args(None) is None
    assert sys.argv == ["experiments", "fit", "--config", packaged("sine_rnn.yaml")]
    resolved = resolve_main_args(["fit", "--config", "sine_rnn"])
    assert resolved == ["fit", "--config", packaged("sine_rnn.yaml")]
    settings = {"fit": {"config": "sine_rnn"}}
    assert resolve_main_args(settings) is settings


# --- the wheel ------------------------------------------------------------------------------------------

BIN = "Scripts" if os.name == "nt" else "bin"
#: What the build reads; the rest of a checkout (environments, run output, data, caches) is left behind.
NOT_BUILT = (".git", ".venv", "venv", "lightning_logs", "data", "build", "dist", "*.egg-info", "__pycache__")


def child_env() -> dict[str, str]:
    """This environment without what would put the checkout on a child's ``sys.path``."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("EXPERIMENTS_DEBUG", None)
    return env


def run(args: list[str | Path], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout
    )


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built offline from a copy of the checkout (an in-place build would write
    ``build/`` and ``*.egg-info`` into the checkout, under the feet of a concurrent editable install)."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_BUILT, ".*_cache"))
    dist = tmp_path / "dist"
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    built = run([*args, "--quiet", "-w", dist, source], cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("*.whl")
    return wheel


def venv_seeing_dependencies(root: Path) -> Path:
    """A new virtual environment whose ``sys.path`` ends with this environment's site-packages, so that
    torch and the rest need no second install. A folder a ``.pth`` line adds does not get its own
    ``.pth`` files read, so this checkout's editable install (a ``.pth`` hook) does not reach it."""
    created = subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], capture_output=True)
    assert created.returncode == 0, created.stderr
    python = root / BIN / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (Path(purelib.stdout.strip()) / "_parent_environment.pth").write_text("\n".join(ours) + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_runs_a_lesson_by_name_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    assert {"configs/mnist_convnet.yaml", "configs/trainer/gpu.yaml"} <= files
    assert {f"configs/{name}.yaml" for name in lesson_configs()} <= files
    assert {f"configs/trainer/{p.name}" for p in (CONFIGS / "trainer").glob("*.yaml")} <= files
    assert {f"configs/sweeps/{p.name}" for p in (CONFIGS / "sweeps").glob("*.yaml")} <= files
    assert "datamodules/resources/boston_housing.csv" in files  # packaged before the configs were

    python = venv_seeing_dependencies(tmp_path / "venv")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    find = (
        "import importlib.util as u; "
        "print([u.find_spec(m) is not None for m in ({!r}, 'torch', 'lightning')])"
    )
    for package in ("modules", "datamodules", "core", "experiments", "configs"):
        # The dependencies are seen; the project is not, before the wheel is installed.
        seen = run([python, "-c", find.format(package)], cwd=cwd)
        assert seen.stdout.strip() == "[False, True, True]", (package, seen.stdout, seen.stderr)
    missing = run([python, "-c", "import modules"], cwd=cwd)
    assert missing.returncode != 0 and "No module named 'modules'" in missing.stderr

    # --ignore-installed: pip sees this checkout's editable install through the .pth line and must
    # neither skip the wheel for it nor uninstall it.
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet", wheel]
    installed = run(pip, cwd=cwd)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = run([python, "-c", "import modules, configs; print(modules.__file__, configs.__file__)"], cwd)
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).resolve().is_relative_to((tmp_path / "venv").resolve()), where.stdout
    assert (tmp_path / "venv" / BIN / "experiments").is_file()  # the console script

    lesson = ["fit", "--config", "linear_regression", "--trainer.max_epochs", "2"]
    fit = run([python, "-m", "experiments", *lesson], cwd)
    assert fit.returncode == 0, fit.stdout + fit.stderr
    assert (cwd / "lightning_logs/linear_regression/version_0/checkpoints/last.ckpt").is_file()
    assert "Recovered slope" in fit.stdout


def test_shell_completion_is_refused_in_one_line(tmp_path: Path) -> None:
    # jsonargparse's completion script for this command is over 100 MB: not offered, said plainly.
    for flag in (["--print_shtab", "bash"], ["--print_completion=shtab-bash"]):
        done = run_experiments(flag, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"error: {flag[0].split('=')[0]}: this command has no shell completion (jsonargparse's script "
            "for it is over 100 MB); see `python -m experiments fit --help` and `--model.help <class>`"
        ]
