"""Which of a run's arguments are logged as its parameters (experiments/parameters.py), and under what
names: the rule on parsed configs, the names a command line sets, and the command's own use of both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from experiments.cli import TRIAL_VARIABLE, ExperimentCLI
from experiments.parameters import given_names, parameter_name, run_parameters
from experiments.tensorboard import RunLogs
from tests.conftest import QUIET, config


def adamw(**init_args: object) -> dict[str, object]:
    return {"class_path": "torch.optim.AdamW", "init_args": init_args}


def tabular(dropout: float, optimizer: dict[str, object]) -> dict[str, object]:
    model = {"in_features": 13, "hidden_sizes": [64, 64], "dropout": dropout, "optimizer": optimizer}
    return {"class_path": "modules.TabularRegressor", "init_args": model}


def test_names_leave_out_jsonargparse_levels():
    assert parameter_name("model.optimizer.init_args.lr") == "model.optimizer.lr"
    assert parameter_name("model.init_args.hidden_sizes") == "model.hidden_sizes"
    assert parameter_name("data.class_path") == "data"


def test_a_library_default_nobody_set_is_not_logged_and_a_set_value_is():
    # AdamW's own defaults: lr 0.001, weight_decay 0.01, amsgrad False, foreach None, ...
    optimizer = adamw(lr=0.001, weight_decay=0.05, amsgrad=False, foreach=None, betas=(0.9, 0.999))
    parsed = {"seed_everything": 42, "model": tabular(0.0, optimizer)}
    logged = run_parameters(parsed, given=["model.optimizer.init_args.lr"])
    assert logged == {
        "seed_everything": 42,
        "model": "modules.TabularRegressor",
        "model.hidden_sizes": "[64, 64]",  # the model's default is None
        "model.optimizer": "torch.optim.AdamW",
        "model.optimizer.lr": 0.001,  # AdamW's default, but the command line set it
        "model.optimizer.weight_decay": 0.05,  # not the default
    }


def test_what_a_sweep_varies_is_logged_even_at_its_default():
    parsed = {"model": tabular(0.0, adamw(lr=0.001))}
    logged = run_parameters(parsed, varied=["model.init_args.dropout", "model.optimizer.init_args.lr"])
    assert logged["model.dropout"] == 0.0 and logged["model.optimizer.lr"] == 0.001
    assert "model.dropout" not in run_parameters(parsed)


def test_a_modules_default_optimizer_is_the_default_of_its_arguments():
    # FeedForwardNet's optimizer defaults to lambda params: SGD(params, lr=0.01): lr 0.01 is no news.
    def feedforward(lr: float) -> dict[str, object]:
        sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": lr, "momentum": 0.0}}
        return {"model": {"class_path": "modules.FeedForwardNet", "init_args": {"n_h": 5, "optimizer": sgd}}}

    assert run_parameters(feedforward(0.01)) == {
        "model": "modules.FeedForwardNet",
        "model.optimizer": "torch.optim.SGD",
    }
    assert run_parameters(feedforward(0.02))["model.optimizer.lr"] == 0.02


def test_the_parsers_defaults_decide_outside_classes_and_plumbing_is_left_out():
    parsed = {
        "trainer": {
            "max_epochs": 5,
            "precision": None,
            "logger": {"class_path": "x.Logger"},
            "callbacks": [],
        },
        "checkpoint": {"monitor": "val/acc", "mode": "max", "save_top_k": 1},
        "ckpt_path": "last",
    }
    defaults = {
        "trainer": {"max_epochs": None, "precision": None, "callbacks": None},
        "checkpoint": {"monitor": "val/loss", "mode": "min", "save_top_k": 1},
    }
    given = ["trainer.logger", "trainer.callbacks", "trainer.enable_progress_bar"]
    assert run_parameters(parsed, defaults, given) == {
        "trainer.max_epochs": 5,
        "checkpoint.monitor": "val/acc",
        "checkpoint.mode": "max",
    }


def test_given_names_are_the_flags_and_the_config_files(tmp_path: Path):
    lesson = tmp_path / "lesson.yaml"
    lesson.write_text("model:\n  class_path: M\n  init_args:\n    optimizer:\n      init_args: {lr: 0.1}\n")
    everything = tmp_path / "fit.yaml"
    everything.write_text("fit:\n  data:\n    init_args:\n      batch_size: 64\n")
    arguments = [
        "--config",
        str(everything),
        "fit",
        f"--config={lesson}",
        "--trainer.max_epochs",
        "3",
        "--model.init_args.dropout=0.2",
        "--trainer.callbacks+=LearningRateMonitor",
        "--data",
        '{"class_path": "D", "init_args": {"seed": 1}}',
    ]
    assert given_names(arguments, "fit") == {
        "data",
        "data.batch_size",
        "data.seed",
        "model",
        "model.optimizer.lr",
        "model.dropout",
        "trainer.max_epochs",
        "trainer.callbacks",
    }
    assert given_names({"fit": {"trainer": {"max_epochs": 2}}}, "fit") == {"trainer.max_epochs"}


@pytest.fixture(scope="module")
def dumped_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """boston_housing's config as a run's config.yaml holds it (LightningCLI's dump of every argument),
    and the parameters a run of the lesson's own config logs."""
    folder = tmp_path_factory.mktemp("dump")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli = ExperimentCLI(args=["--config", config("boston_housing"), *QUIET], run=False)
    path = folder / "config.yaml"
    path.write_text(cli.parser.dump(cli.config))
    return path, run_logs(cli).parameters


def run_logs(cli: ExperimentCLI) -> RunLogs:
    return next(callback for callback in cli.trainer.callbacks if isinstance(callback, RunLogs))


def test_a_run_logs_what_its_config_and_flags_set(dumped_config):
    _, logged = dumped_config
    assert logged["model.optimizer"] == "torch.optim.AdamW" and logged["model.optimizer.lr"] == 0.003
    assert logged["data.batch_size"] == 32  # the lesson's config names it, though it is the default
    assert logged["trainer.max_epochs"] == 300 and logged["seed_everything"] == 42
    assert not {"model.optimizer.amsgrad", "model.optimizer.foreach", "trainer.logger"} & set(logged)


def test_a_dumped_config_given_back_logs_no_library_defaults(dumped_config, tmp_path, monkeypatch):
    path, first = dumped_config
    assert path.read_text().startswith("# lightning.pytorch==")  # how the rule knows a dump
    monkeypatch.chdir(tmp_path)
    # A sweep's trial: the keys it varies are logged even where the dump holds their defaults.
    monkeypatch.setenv(TRIAL_VARIABLE, json.dumps({"parameters": ["model.init_args.out_features"]}))
    cli = ExperimentCLI(args=["--config", str(path), "--trainer.max_epochs=1", *QUIET], run=False)
    logged = run_logs(cli).parameters
    assert logged["trainer.max_epochs"] == 1 and logged["model.out_features"] == 1
    assert logged["model.optimizer.lr"] == 0.003 and logged["model.dropout"] == 0.1  # not defaults
    # The dump names every argument; only those that differ from their defaults count.
    assert not {"model.optimizer.amsgrad", "model.optimizer.capturable", "trainer.accelerator"} & set(logged)
    assert "data.batch_size" not in logged  # 32, the default: named only by the dump
    assert set(logged) - {"model.out_features"} <= set(first)


def test_a_whole_config_without_the_header_names_nothing_either(dumped_config, tmp_path):
    # A sweep's trial config (and its best.yaml): LightningCLI's dump, rewritten without the header line.
    path, _ = dumped_config
    trial = tmp_path / "trial_0.yaml"
    trial.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()), sort_keys=False))
    assert not trial.read_text().startswith("#")
    assert given_names(["fit", "--config", str(trial)], "fit") == set()
    assert given_names(["fit", "--config", str(path), "--data.batch_size=8"], "fit") == {"data.batch_size"}
