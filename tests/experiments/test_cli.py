"""The experiments command: every lesson config through fit, validate, test and predict; the shared
defaults (logs, checkpoints, saved config, seed); class selection by name; and the one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from core.callbacks import PredictionWriter
from core.errors import ExperimentError
from experiments.callbacks import Checkpoint, LastCheckpoint, LearningRateLogger
from experiments.cli import ExperimentCLI
from experiments.main import main
from experiments.parts import PARTS
from tests.conftest import LESSONS, QUIET, REPO, config, run_experiments

SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.check_val_every_n_epoch=1"]


@pytest.mark.parametrize("lesson", LESSONS)
@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_fast_dev_run_of_each_subcommand(cli, lesson, subcommand):
    run = cli(subcommand, "--config", config(lesson), "--trainer.fast_dev_run=true")
    assert run.trainer.state.finished


@pytest.mark.parametrize("lesson", LESSONS)
def test_fit_writes_logs_checkpoints_config_then_evaluation_loads_them(cli, in_tmp, lesson):
    fit = cli("fit", "--config", config(lesson), *SHORT)
    run = in_tmp / "lightning_logs" / lesson / "version_0"
    assert Path(fit.trainer.log_dir) == Path("lightning_logs") / lesson / "version_0"
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    saved = (run / "config.yaml").read_text()
    assert "seed_everything: 42" in saved and "max_epochs: 2" in saved
    # Written without validating again (parsing did): the same text as a validated dump.
    assert saved == fit._parser("fit").dump(fit.config["fit"], skip_none=False)
    trained = {k: v.clone() for k, v in fit.model.state_dict().items()}

    for subcommand, which in [("validate", "last"), ("test", "best"), ("predict", "last")]:
        evaluation = cli(subcommand, "--config", config(lesson), "--ckpt_path", which)
        assert Path(evaluation.trainer.ckpt_path).resolve().parent == run.resolve() / "checkpoints"
        if which == "last":
            for key, value in evaluation.model.state_dict().items():
                assert torch.equal(value, trained[key]), key
    assert (
        "val/loss"
        in cli("validate", "--config", config(lesson), "--ckpt_path", "last").trainer.callback_metrics
    )
    predictions = torch.load(run / "predict" / "predictions.pt")
    assert predictions.ndim == 2 and predictions.shape[1] == 1 and torch.isfinite(predictions).all()


def test_checkpoint_rebuilds_the_model_with_its_arguments(cli, in_tmp, capsys):
    from modules import FeedForwardNet

    fit = cli("fit", "--config", config("first_network"), *SHORT, "--model.n_h=7")
    path = in_tmp / "lightning_logs/first_network/version_0/checkpoints/last.ckpt"
    restored = FeedForwardNet.load_from_checkpoint(path)
    assert restored.net[0].out_features == 7
    for key, value in fit.model.state_dict().items():
        # Lightning restores tensors to the device they were saved from: compare where both can be.
        assert torch.equal(restored.state_dict()[key].cpu(), value.cpu()), key
    # Evaluated with the config's n_h (5): the checkpoint's 7 is used, and the command says so.
    capsys.readouterr()
    tested = cli("test", "--config", config("first_network"), f"--ckpt_path={path}")
    assert tested.model.net[0].out_features == 7
    out = capsys.readouterr().out
    assert f"note: {path} was trained with n_h=7 (configured 5): the checkpoint's values are used" in out


def test_tensorboard_holds_the_scalars(cli, in_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli("fit", "--config", config("linear_regression"), *SHORT)
    events = EventAccumulator(str(in_tmp / "lightning_logs" / "linear_regression" / "version_0")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "train/slope", "train/intercept"} <= tags
    # One learning-rate name whatever the optimizer class, with the training scalars.
    assert "train/lr" in tags and not any(tag.startswith("lr-") for tag in tags)
    assert "hp_metric" not in tags
    assert {"train/fit_before_training", "train/fit_after_training"} <= set(events.Tags()["images"])


def test_figures_are_saved_as_png(cli, in_tmp):
    cli("fit", "--config", config("linear_regression"), *SHORT)
    cli("fit", "--config", config("sine_rnn"), *SHORT)
    figures = in_tmp / "lightning_logs"
    for png in [
        "linear_regression/version_0/figures/fit_before_training.png",
        "linear_regression/version_0/figures/fit_after_training.png",
        "sine_rnn/version_0/figures/predictions.png",
    ]:
        assert (figures / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_last_checkpoint_is_the_latest_epoch_not_the_best(cli, in_tmp):
    # mode max on a falling loss makes the first epoch the best one.
    cli("fit", "--config", config("linear_regression"), "--trainer.max_epochs=3", "--checkpoint.mode=max")
    folder = in_tmp / "lightning_logs/linear_regression/version_0/checkpoints"
    assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-epoch=0-step=7.ckpt"]
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 21
    # Saving every 2 epochs of 3: the final state is still written when training ends.
    cli(
        "fit",
        "--config",
        config("linear_regression"),
        "--trainer.max_epochs=3",
        "--last_checkpoint.every_n_epochs=2",
    )
    last = torch.load(
        in_tmp / "lightning_logs/linear_regression/version_1/checkpoints/last.ckpt", weights_only=True
    )
    assert last["global_step"] == 21


def test_second_run_gets_a_new_version_and_keeps_the_first(cli, in_tmp):
    cli("fit", "--config", config("first_network"), *SHORT)
    first = (in_tmp / "lightning_logs/first_network/version_0/checkpoints/last.ckpt").read_bytes()
    cli("fit", "--config", config("first_network"), *SHORT)
    assert (in_tmp / "lightning_logs/first_network/version_1/config.yaml").is_file()
    assert (in_tmp / "lightning_logs/first_network/version_0/checkpoints/last.ckpt").read_bytes() == first


def test_same_fixed_folder_twice_overwrites_config_instead_of_failing(cli, in_tmp):
    args = ["fit", "--config", config("first_network"), *SHORT, "--trainer.logger.init_args.version=fixed"]
    cli(*args)
    cli(*args)
    assert (in_tmp / "lightning_logs/first_network/fixed/config.yaml").is_file()


def test_shared_defaults(cli):
    run = cli("fit", "--config", config("sine_rnn"), "--trainer.fast_dev_run=true")
    callbacks = {type(c) for c in run.trainer.callbacks}
    assert {Checkpoint, LastCheckpoint, LearningRateLogger, PredictionWriter} <= callbacks
    assert run.trainer.checkpoint_callback.monitor == "val/mse"  # the lesson's own metric
    assert run.config.fit.seed_everything == 42
    default = cli("fit", "--config", config("first_network"), "--trainer.fast_dev_run=true")
    assert default.trainer.checkpoint_callback.monitor == "val/loss"


def test_runs_without_a_logger_and_writes_nothing_in_the_working_folder(cli, in_tmp):
    run = cli("fit", "--config", config("linear_regression"), *SHORT, "--trainer.logger=false")
    assert run.trainer.state.finished and run.trainer.logger is None
    assert list(in_tmp.iterdir()) == []  # no run folder, so no checkpoints/ either
    assert not any(isinstance(c, ModelCheckpoint) for c in run.trainer.callbacks)
    # A folder named for them: the checkpoints go there, and --ckpt_path last finds them.
    kept = ["--trainer.logger=false", "--trainer.default_root_dir=kept"]
    cli("fit", "--config", config("linear_regression"), *SHORT, *kept)
    assert sorted(p.name for p in (in_tmp / "kept" / "checkpoints").iterdir())[-1] == "last.ckpt"
    tested = cli("test", "--config", config("linear_regression"), *kept, "--ckpt_path=last")
    assert Path(tested.trainer.ckpt_path) == Path("kept/checkpoints/last.ckpt")


def test_no_checkpoints_when_checkpointing_is_off(cli, in_tmp):
    run = cli("fit", "--config", config("linear_regression"), *SHORT, "--trainer.enable_checkpointing=false")
    assert run.trainer.state.finished and run.trainer.checkpoint_callbacks == []
    assert not list(in_tmp.rglob("*.ckpt"))
    assert (in_tmp / "lightning_logs/linear_regression/version_0/config.yaml").is_file()


@pytest.mark.parametrize("part", PARTS, ids=[part.name for part in PARTS])
def test_each_part_is_left_out_by_its_enabled_flag(part):
    on = "false" if part.on_by_default() else "true"  # compile and early_stopping are off by default
    default = {type(c) for c in built("--config", config("linear_regression")).trainer.callbacks}
    switched = built("--config", config("linear_regression"), f"--{part.name}.enabled={on}")
    assert (part.cls in default) != (part.cls in {type(c) for c in switched.trainer.callbacks})


def test_a_run_with_every_part_off_trains_and_writes_only_its_logs(cli, in_tmp):
    off = [f"--{part.name}.enabled=false" for part in PARTS]
    run = cli("fit", "--config", config("linear_regression"), *SHORT, *off)
    assert run.trainer.state.finished and not run.trainer.checkpoint_callbacks
    assert not {part.cls for part in PARTS} & {type(c) for c in run.trainer.callbacks}
    assert not list(in_tmp.rglob("*.ckpt"))


def test_callbacks_of_a_run(in_tmp):
    run = built("--config", config("mnist_convnet"))
    names = [type(c).__name__ for c in run.trainer.callbacks]
    lesson = ["InputGrid", "PredictionGrid", "FilterGrid", "ConfusionMatrix"]  # the config's own
    parts = [part.cls.__name__ for part in PARTS if part.on_by_default()]
    assert sorted(p.name for p in PARTS if not p.on_by_default()) == ["compile", "early_stopping"]
    # QUIET: no progress bar, no model summary
    always = ["RunConfig", "FailedRun", "RunLogs", "RunManifest", "OutputPaths"]
    assert sorted(names) == sorted([*lesson, *parts, *always])


def test_readme_lists_exactly_the_parts():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("Defaults every lesson shares")
    section = readme[start : readme.index("\n#", start)]
    assert set(re.findall(r"`--(\w+)\.\*`", section)) == {part.name for part in PARTS}


def test_classes_by_name_and_experiment_name_from_class(cli, in_tmp):
    run = cli("fit", "--model", "FeedForwardNet", "--data", "RandomTensorDataModule", *SHORT)
    assert type(run.model).__name__ == "FeedForwardNet"
    assert isinstance(run.trainer.logger, TensorBoardLogger)
    assert (
        in_tmp / "lightning_logs" / "feed_forward_net" / "version_0" / "checkpoints" / "last.ckpt"
    ).is_file()


def test_optimizer_swapped_from_the_command_line(cli):
    run = cli(
        "fit",
        "--config",
        config("first_network"),
        "--trainer.fast_dev_run=true",
        "--model.optimizer=torch.optim.Adam",
        "--model.optimizer.lr=0.05",
    )
    optimizer = run.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.05
    seeds = cli("fit", "--config", config("first_network"), "--trainer.fast_dev_run=true").trainer.optimizers[
        0
    ]
    assert isinstance(seeds, torch.optim.SGD) and seeds.param_groups[0]["lr"] == 0.01


def test_model_help_documents_arguments(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.help", "SineRNN"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.hidden_size" in out and "Context neurons" in out and "torch.optim.SGD" in out


def test_debug_variable_shows_the_traceback(in_tmp, monkeypatch):
    monkeypatch.setenv("EXPERIMENTS_DEBUG", "1")
    with pytest.raises(Exception, match="val_fraction"):
        main(["fit", "--config", config("linear_regression"), "--data.val_fraction=2"])


def test_python_dash_m_exit_status_and_message(tmp_path):
    done = run_experiments(["fit", "--config", "missing.yaml"], cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "missing.yaml" in done.stderr


def test_help_imports_nothing_heavy(tmp_path):
    # Lightning itself imports torchmetrics (and through it matplotlib and torchvision when installed);
    # what the CLI adds on top must be only its own packages and the default logger's (tensorboard), not
    # the lessons' optional libraries.
    script = (
        "import sys\n"
        "import lightning.pytorch.cli, lightning.pytorch.loggers\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "from experiments.main import main\n"
        "try:\n    main(['fit', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} - before), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    added = set(eval(done.stderr.strip().splitlines()[-1]))
    small = {"attr", "attrs", "docstring_parser", "typeshed_client", "tensorboard", "absl", "google"}
    assert added - small == {"core", "experiments", "modules", "datamodules"}


def test_cli_class_is_importable_without_running():
    assert ExperimentCLI.__doc__


class SizedData(LightningDataModule):
    """Knows its vocabulary size (a property, computed on first read) and number of classes (set in
    ``__init__``), as a text datamodule would; counts how often its loaders are built."""

    loaders_built = 0

    def __init__(self, words: int = 7, num_classes: int | None = 2, broken: bool = False) -> None:
        super().__init__()
        self.words = words
        self.num_classes = num_classes
        self.broken = broken
        self.vocab_size_reads = 0

    @property
    def vocab_size(self) -> int:
        if self.broken:
            raise ExperimentError("the corpus has no words: point --data.words at a bigger one")
        self.vocab_size_reads += 1
        return self.words

    def train_dataloader(self) -> list:
        type(self).loaders_built += 1
        return []


class PlainData(SizedData):
    """Provides neither attribute (like the image datamodules)."""

    vocab_size = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(num_classes=None)
        del self.num_classes


class SizedModel(LightningModule):
    """Takes both linked arguments; ``num_classes`` has a default, ``vocab_size`` does not."""

    def __init__(self, vocab_size: int, num_classes: int = 5, width: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()


def built(*args: str) -> ExperimentCLI:
    return ExperimentCLI(args=[*args, *QUIET], run=False)


def test_data_gives_the_model_its_vocab_size_and_num_classes(in_tmp, capsys):
    SizedData.loaders_built = 0
    run = built(f"--model={__name__}.SizedModel", f"--data={__name__}.SizedData", "--data.words=11")
    assert run.model.hparams.vocab_size == 11 and run.model.hparams.num_classes == 2
    assert run.datamodule.vocab_size_reads == 1
    assert SizedData.loaders_built == 0  # reading the attributes builds no loader
    # The data decides; a value in the config does not override it, and the command says so in one line.
    capsys.readouterr()
    run = built(f"--model={__name__}.SizedModel", f"--data={__name__}.SizedData", "--model.num_classes=9")
    assert run.model.hparams.num_classes == 2
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: the data gives num_classes=2 (configured 9): the data's values are used"]
    built(f"--model={__name__}.SizedModel", f"--data={__name__}.SizedData", "--model.vocab_size=3")
    assert "note: the data gives vocab_size=7 (configured 3)" in capsys.readouterr().out


def test_a_configured_in_features_the_data_replaces_is_noted(in_tmp, capsys):
    run = built("--config", config("boston_housing"), "--model.in_features=3")
    assert run.model.hparams.in_features == 13
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: the data gives in_features=13 (configured 3): the data's values are used"]
    built("--config", config("boston_housing"))  # nothing configured: nothing to say
    assert "note:" not in capsys.readouterr().out


def test_data_without_the_attribute_leaves_the_configured_value(in_tmp):
    SizedData.loaders_built = 0
    run = built(f"--model={__name__}.SizedModel", "--model.vocab_size=4", f"--data={__name__}.PlainData")
    assert run.model.hparams.vocab_size == 4 and run.model.hparams.num_classes == 5
    run = built(
        f"--model={__name__}.SizedModel",
        "--model.vocab_size=4",
        "--model.num_classes=8",
        f"--data={__name__}.SizedData",
        "--data.num_classes=null",  # None: the data does not know; the configured value stays
    )
    assert run.model.hparams.vocab_size == 7 and run.model.hparams.num_classes == 8
    assert SizedData.loaders_built == 0


def test_image_lessons_keep_their_configured_num_classes(in_tmp):
    run = built("--config", config("simple_cnn"), "--model.num_classes=3")
    assert run.model.num_classes == 3 and run.model.net[-1].out_features == 3
    # The saved config.yaml (a dump of the parsed config) keeps it, so it rebuilds the same model.
    assert "num_classes: 3" in run.parser.dump(run.config)


def test_models_without_the_argument_ignore_the_link(in_tmp):
    run = built("--model=FeedForwardNet", f"--data={__name__}.SizedData")
    assert type(run.model).__name__ == "FeedForwardNet"
    # Nothing of the links reaches its hyperparameters (and so its checkpoints), nor the copy Lightning
    # logs when training starts.
    for hparams in (run.model.hparams, run.model.hparams_initial):
        assert "vocab_size" not in hparams and "num_classes" not in hparams and "in_features" not in hparams
    assert run.model.hparams_initial["n_in"] == 10
    assert run.datamodule.vocab_size_reads == 0


def test_an_error_from_the_data_attribute_is_one_line(in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--model={__name__}.SizedModel", f"--data={__name__}.SizedData", "--data.broken=true"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: the corpus has no words: point --data.words at a bigger one"
    )


_CLOCK = {"now": 0.0}


class TickClock(Callback):
    """Moves the fake clock of ``experiments.callbacks`` by 4 s at each epoch's end (before the
    checkpoint callbacks, which Lightning runs last)."""

    def on_train_epoch_end(self, trainer, pl_module):
        _CLOCK["now"] += 4.0


def test_last_checkpoint_time_floor_skips_quick_epochs_but_never_the_end(cli, in_tmp, monkeypatch):
    """``--last_checkpoint.min_interval``: an epoch's end writes ``last.ckpt`` only when that many seconds
    have passed since the last write; the final epoch always writes, and resuming from what was written
    ends where a run that never stopped ends."""
    import experiments.callbacks as callbacks_module

    _CLOCK["now"] = 0.0
    monkeypatch.setattr(callbacks_module, "monotonic", lambda: _CLOCK["now"])
    written: list[int] = []
    save = LastCheckpoint._save_checkpoint

    def save_and_record(self, trainer, filepath):
        written.append(trainer.current_epoch)
        save(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", save_and_record)
    tick = json.dumps({"class_path": f"{__name__}.TickClock"})
    lesson = ["--config", config("linear_regression")]
    cli(
        "fit",
        *lesson,
        "--trainer.max_epochs=8",
        "--last_checkpoint.min_interval=10",
        f"--trainer.callbacks+={tick}",
    )
    # 4 s per epoch and a 10 s floor: epochs 2 (12 s) and 5 (24 s) write; epoch 7, the last, writes at 32 s
    # although only 8 s have passed since the one before.
    assert written == [2, 5, 7]
    checkpoint = in_tmp / "lightning_logs/linear_regression/version_0/checkpoints/last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 56
    # Resumed from that last.ckpt for 2 more epochs: the same weights as 10 epochs straight.
    straight = cli("fit", *lesson, "--trainer.max_epochs=10")
    resumed = cli("fit", *lesson, "--trainer.max_epochs=10", f"--ckpt_path={checkpoint}")
    assert resumed.trainer.global_step == straight.trainer.global_step == 70
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_best_before_any_validation_says_so_and_points_to_last(cli, in_tmp):
    cli("fit", "--config", config("linear_regression"), *SHORT, "--trainer.limit_val_batches=0")
    last = in_tmp / "lightning_logs/linear_regression/version_0/checkpoints/last.ckpt"
    assert last.is_file()
    with pytest.raises(ExperimentError, match=r"has no best checkpoint yet .*give --ckpt_path last"):
        cli("test", "--config", config("linear_regression"), "--ckpt_path=best")


def test_lightning_advert_is_not_printed(capsys):
    from lightning.pytorch import Trainer

    from experiments.progress import lightning_output_to_stdout

    lightning_output_to_stdout()
    Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    out = capsys.readouterr()
    assert "litlogger" not in out.out + out.err


def test_a_progress_bar_the_user_names_is_theirs(in_tmp):
    # Output to a file is one line per epoch, the model summary lists layers only: tests/experiments/
    # test_console.py. A bar the user names is theirs, terminal or not.
    args = ["fit", "--config", config("linear_regression"), "--trainer.max_epochs=3"]
    chosen = '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.TQDMProgressBar"}'
    done = run_experiments([*args, chosen, "--trainer.enable_model_summary=false"], cwd=in_tmp)
    assert done.returncode == 0 and not any(line.startswith("epoch ") for line in done.stdout.splitlines())


def test_help_names_the_subcommand_and_shows_no_rst_quotes(in_tmp):
    done = run_experiments(["fit", "--model.help", "SineRNN"], cwd=in_tmp)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: python -m experiments fit [--model.hidden_size")
    done = run_experiments(["fit", "--help"], cwd=in_tmp)
    assert done.returncode == 0 and "--trainer.max_epochs" in done.stdout
    assert "``" not in done.stdout  # Lightning's docstrings write ``"auto"``
    for part in PARTS:  # each part's flags under a heading saying what it is for, with its switch
        assert f"--{part.name}: {part.why}:" in done.stdout and f"--{part.name}.enabled" in done.stdout


def test_a_callback_class_of_modules_is_no_model_choice(in_tmp, capsys, monkeypatch):
    # modules/visualize.py's callbacks are registered in modules/ like any public class.
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        main(["fit", "--model=InputGrid", *QUIET])
    line = capsys.readouterr().err.strip()
    assert line.startswith('error: --model: unknown class "InputGrid"; choose one of: ')
    import modules

    choices = line.split("choose one of: ")[1].split(", ")
    assert all(issubclass(getattr(modules, name), LightningModule) for name in choices)
