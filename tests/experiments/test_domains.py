"""Every argument has a stated domain, and the command refuses a value outside it in one line.

Through the real command in-process (``experiments.main.main``): a lesson module's argument, an argument of
a callback a lesson config adds, the injected optimizer's and scheduler's arguments, a Trainer key and a
part's flag, each given a value outside its domain, end with exit status 2 and one ``error:`` line on
stderr naming the flag, before any training (nothing is written). Values on the edge of each domain still
parse (``--print_config``), and the checks the parser cannot make (one argument against another, the
Trainer's keys, the optimizer's) accept them too. Last, a fit's checkpoints hold builtins only: they load
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import Namespace

from core.errors import ExperimentError
from core.optim import build_optimizer, optimizer_config
from experiments.domains import check_config, check_trainer
from experiments.main import main
from modules import CaptionModel, LandmarkRegressor, LogisticRegression, MNISTConvNet, TreeLSTM
from tests.conftest import QUIET, config

#: A model given by class name, with data that needs no files: errors come from the model's arguments.
DATA = ["--data", "RandomTensorDataModule"]


def model(name: str, *args: str) -> list[str]:
    return ["fit", "--model", name, *DATA, *args]


def lesson(name: str, *args: str) -> list[str]:
    return ["fit", "--config", config(name), *args]


def callback(class_path: str, **init_args: object) -> str:
    return (
        "--trainer.callbacks="
        + yaml.safe_dump(
            [{"class_path": class_path, "init_args": init_args}], default_flow_style=True
        ).strip()
    )


#: (id, the command's arguments, the flag the error line must name)
OUT_OF_DOMAIN = [
    # the lesson modules' arguments: counts, fractions, choices, paths
    ("linear_input_dim_0", model("LinearRegression", "--model.input_dim=0"), "--model.input_dim"),
    ("linear_output_dim_2.5", model("LinearRegression", "--model.output_dim=2.5"), "--model.output_dim"),
    ("feedforward_hidden_0", model("FeedForwardNet", "--model.n_h=0"), "--model.n_h"),
    ("scratch_hidden_negative", model("ScratchNetwork", "--model.hidden_size=-3"), "--model.hidden_size"),
    ("sine_rnn_std_inf", model("SineRNN", "--model.w2_std=.inf"), "--model.w2_std"),
    ("logistic_one_class", model("LogisticRegression", "--model.num_classes=1"), "--model.num_classes"),
    ("simple_cnn_classes_0", model("SimpleCNN", "--model.num_classes=0"), "--model.num_classes"),
    ("mnist_image_too_small", model("MNISTConvNet", "--model.image_size=5"), "--model.image_size"),
    ("tabular_dropout_1", model("TabularRegressor", "--model.dropout=1.0"), "--model.dropout"),
    ("tabular_hidden_0", model("TabularRegressor", "--model.hidden_sizes=[8,0]"), "--model.hidden_sizes"),
    ("landmarks_head_unknown", model("LandmarkRegressor", "--model.head=conv"), "--model.head"),
    (
        "landmarks_same_corners",
        model("LandmarkRegressor", "--model.eye_corners=[3,3]"),
        "--model.eye_corners",
    ),
    (
        "landmarks_corner_past_points",
        model("LandmarkRegressor", "--model.num_points=5", "--model.eye_corners=[0,5]"),
        "--model.eye_corners",
    ),
    ("caption_rnn_unknown", model("CaptionModel", "--model.rnn=transformer"), "--model.rnn"),
    # null where the type takes none (the parser lets it through for a class's arguments), also for an
    # argument a subclass passes on through **kwargs, and for the injected optimizer itself
    ("data_seed_null", lesson("linear_regression", "--data.seed=null"), "--data.seed: null is not"),
    ("data_seed_past_2_32", lesson("first_network", "--data.seed=4294967296"), "--data.seed: expected"),
    (
        "inherited_seed_null",
        model("LinearRegression", "--data", "CIFAR10DataModule", "--data.seed=null"),
        "--data.seed: null is not",
    ),
    ("optimizer_null", lesson("logistic_regression", "--model.optimizer=null"), "--model.optimizer: null"),
    ("caption_channels_0", model("CaptionModel", "--model.cnn_channels=[32,0]"), "--model.cnn_channels"),
    (
        "tree_one_class",
        model("TreeLSTM", "--model.vocab_size=9", "--model.num_classes=1"),
        "--model.num_classes",
    ),
    (
        "tree_vectors_a_folder",
        model("TreeLSTM", "--model.vocab_size=9", "--model.pretrained_vectors=."),
        "--model.pretrained_vectors",
    ),
    (
        "tree_sparse_with_decay",
        model(
            "TreeLSTM",
            "--model.vocab_size=9",
            "--model.sparse_gradients=true",
            "--model.embedding_weight_decay=0.1",
        ),
        "--model.embedding_weight_decay",
    ),
    (
        "skipgram_min_lr_negative",
        model("SkipGramModel", "--model.vocab_size=9", "--model.min_lr=-1"),
        "--model.min_lr",
    ),
    (
        "skipgram_cap_negative",
        model("SkipGramModel", "--model.vocab_size=9", "--model.duplicate_cap=-1"),
        "--model.duplicate_cap",
    ),
    # the lessons' callbacks, as a config's trainer.callbacks gives them
    (
        "sequence_plot_every_negative",
        model("SineRNN", callback("modules.sine_rnn.SequencePlot", every_n_epochs=-1)),
        "every_n_epochs",
    ),
    (
        "landmark_csv_a_path",
        model("LinearRegression", callback("modules.LandmarkCSVWriter", filename="a/b.csv")),
        "filename",
    ),
    (
        "prediction_grid_columns_0",
        model("LinearRegression", callback("modules.PredictionGrid", columns=0)),
        "columns",
    ),
    (
        "word_embeddings_neighbours_0",
        model("LinearRegression", callback("modules.WordEmbeddings", neighbours=0)),
        "neighbours",
    ),
    # the injected optimizer and scheduler: torch's refusals, and the NaN and inf torch lets through
    (
        "sgd_lr_negative",
        lesson("linear_regression", "--model.optimizer.init_args.lr=-1"),
        "--model.optimizer.init_args.lr",
    ),
    (
        "sgd_lr_nan",
        lesson("linear_regression", "--model.optimizer.init_args.lr=.nan"),
        "--model.optimizer.init_args.lr",
    ),
    (
        "sgd_lr_inf",
        lesson("first_network", "--model.optimizer.init_args.lr=.inf"),
        "--model.optimizer.init_args.lr",
    ),
    (
        "sgd_momentum_negative",
        lesson("linear_regression", "--model.optimizer.init_args.momentum=-0.5"),
        "--model.optimizer.init_args.momentum",
    ),
    (
        "adam_betas",
        model(
            "LinearRegression",
            "--model.optimizer=torch.optim.Adam",
            "--model.optimizer.init_args.betas=[2,0]",
        ),
        "--model.optimizer.init_args.betas",
    ),
    (
        "plateau_factor",
        model(
            "TabularRegressor",
            "--model.lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau",
            "--model.lr_scheduler.init_args.factor=2.0",
        ),
        "--model.lr_scheduler.init_args.factor",
    ),
    # Lightning's Trainer keys: what it refuses without naming the flag, and what it lets through
    ("max_epochs_negative", lesson("linear_regression", "--trainer.max_epochs=-5"), "--trainer.max_epochs"),
    (
        "limit_train_1.5",
        lesson("linear_regression", "--trainer.limit_train_batches=1.5"),
        "--trainer.limit_train_batches",
    ),
    (
        "clip_nan",
        lesson("linear_regression", "--trainer.gradient_clip_val=.nan"),
        "--trainer.gradient_clip_val",
    ),
    (
        "clip_negative",
        lesson("linear_regression", "--trainer.gradient_clip_val=-1"),
        "--trainer.gradient_clip_val",
    ),
    (
        "accumulate_0",
        lesson("linear_regression", "--trainer.accumulate_grad_batches=0"),
        "--trainer.accumulate_grad_batches",
    ),
    (
        "val_interval_0",
        lesson("linear_regression", "--trainer.val_check_interval=0"),
        "--trainer.val_check_interval",
    ),
    (
        "val_every_0",
        lesson("linear_regression", "--trainer.check_val_every_n_epoch=0"),
        "--trainer.check_val_every_n_epoch",
    ),
    (
        "log_every_negative",
        lesson("linear_regression", "--trainer.log_every_n_steps=-1"),
        "--trainer.log_every_n_steps",
    ),
    (
        "sanity_negative",
        lesson("linear_regression", "--trainer.num_sanity_val_steps=-2"),
        "--trainer.num_sanity_val_steps",
    ),
    ("devices_negative", lesson("linear_regression", "--trainer.devices=-2"), "--trainer.devices"),
    (
        "root_dir_a_file",
        lesson("linear_regression", f"--trainer.default_root_dir={__file__}"),
        "--trainer.default_root_dir",
    ),
    # the parts' flags
    (
        "checkpoint_top_k",
        lesson("linear_regression", "--checkpoint.save_top_k=-2"),
        "--checkpoint.save_top_k",
    ),
    (
        "checkpoint_monitor_empty",
        lesson("linear_regression", "--checkpoint.monitor="),
        "--checkpoint.monitor",
    ),
    (
        "checkpoint_interval_zero",
        lesson("linear_regression", "--checkpoint.train_time_interval=0:00:00"),
        "--checkpoint.train_time_interval",
    ),
    (
        "last_every_0",
        lesson("linear_regression", "--last_checkpoint.every_n_epochs=0"),
        "--last_checkpoint.every_n_epochs",
    ),
    (
        "lr_monitor_interval",
        lesson("linear_regression", "--lr_monitor.logging_interval=batch"),
        "--lr_monitor.logging_interval",
    ),
    (
        "prediction_writer_path",
        lesson("linear_regression", "--prediction_writer.filename=a/b.pt"),
        "--prediction_writer.filename",
    ),
    (
        "nan_guard_negative",
        lesson("linear_regression", "--nan_guard.every_n_steps=-1"),
        "--nan_guard.every_n_steps",
    ),
    (
        "preemption_scontrol_empty",
        lesson("linear_regression", "--preemption.scontrol="),
        "--preemption.scontrol",
    ),
    ("compile_mode", lesson("linear_regression", "--compile.mode=fast"), "--compile.mode"),
    ("figures_share_0", lesson("linear_regression", "--figures.max_share=0"), "--figures.max_share"),
]


def run(
    args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """The command's exit status, stdout and stderr."""
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["experiments"])  # as a shell runs it: no pytest arguments
    with pytest.raises(SystemExit) as stop:
        main([*args, *QUIET])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.mark.parametrize(
    ("args", "flag"), [case[1:] for case in OUT_OF_DOMAIN], ids=[c[0] for c in OUT_OF_DOMAIN]
)
def test_a_value_outside_its_domain_is_one_line_naming_the_flag(
    args: list[str], flag: str, in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(args, capsys, monkeypatch)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert flag in lines[0], lines[0]
    assert "Traceback" not in out + err
    # Refused before training: no run folder, no checkpoint.
    assert not list(in_tmp.rglob("*.ckpt")) and not (in_tmp / "lightning_logs").exists()


#: Values on the edge of their domain, which the parser takes (the printed config holds them).
ON_THE_EDGE = [
    ("linear_input_dim_1", model("LinearRegression", "--model.input_dim=1"), "input_dim: 1"),
    (
        "tabular_dropout_0",
        model("TabularRegressor", "--model.dropout=0.0", "--model.hidden_sizes=[1]"),
        "dropout: 0.0",
    ),
    ("sine_rnn_std_0", model("SineRNN", "--model.w1_std=0"), "w1_std: 0.0"),
    (
        "sequence_plot_every_0",
        model("SineRNN", callback("modules.sine_rnn.SequencePlot", every_n_epochs=0)),
        "every_n_epochs: 0",
    ),
    ("checkpoint_keep_all", lesson("linear_regression", "--checkpoint.save_top_k=-1"), "save_top_k: -1"),
    (
        "checkpoint_interval",
        lesson("linear_regression", "--checkpoint.train_time_interval=0:00:01"),
        "train_time_interval: 0:00:01",
    ),
    ("last_interval_0", lesson("linear_regression", "--last_checkpoint.min_interval=0"), "min_interval: 0.0"),
]


@pytest.mark.parametrize(
    ("args", "printed"), [case[1:] for case in ON_THE_EDGE], ids=[c[0] for c in ON_THE_EDGE]
)
def test_a_value_on_the_edge_of_its_domain_parses(
    args: list[str],
    printed: str,
    in_tmp: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run([*args, "--print_config"], capsys, monkeypatch)
    assert code == 0, err
    assert printed in out


def trainer(**keys: object) -> Namespace:
    return Namespace(**keys)


@pytest.mark.parametrize(
    "keys",
    [
        {"max_epochs": -1, "max_steps": -1, "min_epochs": 0, "min_steps": 0},
        {"limit_train_batches": 1.0, "limit_val_batches": 0, "limit_test_batches": 0.0, "overfit_batches": 3},
        {"val_check_interval": 1.0, "check_val_every_n_epoch": 1, "log_every_n_steps": 0},
        {"val_check_interval": 1, "check_val_every_n_epoch": None, "accumulate_grad_batches": 1},
        {"gradient_clip_val": 0, "num_sanity_val_steps": -1, "fast_dev_run": True, "devices": -1},
        {"devices": "auto", "num_nodes": 1, "reload_dataloaders_every_n_epochs": 0, "default_root_dir": "."},
        {"devices": [0, 1], "fast_dev_run": 0, "gradient_clip_val": 0.5},
    ],
)
def test_trainer_keys_on_the_edge_of_their_domain_pass(keys: dict[str, object]) -> None:
    check_trainer(trainer(**keys))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_epochs", -2),
        ("min_epochs", -1),
        ("max_steps", -5),
        ("min_steps", -3),
        ("limit_val_batches", -1),
        ("limit_test_batches", 1.5),
        ("limit_predict_batches", float("nan")),
        ("overfit_batches", -0.5),
        ("val_check_interval", 0.0),
        ("val_check_interval", -1),
        ("check_val_every_n_epoch", -1),
        ("log_every_n_steps", -1),
        ("accumulate_grad_batches", -1),
        ("gradient_clip_val", float("inf")),
        ("num_sanity_val_steps", -2),
        ("fast_dev_run", -1),
        ("devices", 0),
        ("devices", "-2"),
        ("num_nodes", 0),
        ("reload_dataloaders_every_n_epochs", -1),
    ],
)
def test_trainer_keys_outside_their_domain_are_refused_naming_the_flag(key: str, value: object) -> None:
    with pytest.raises(ExperimentError, match=rf"^--trainer\.{key} "):
        check_trainer(trainer(**{key: value}))


def test_the_trainer_check_names_lightnings_meaning_of_a_limit() -> None:
    # An int is a count of batches, a float a fraction of them: 2.0 is neither a fraction nor an int.
    with pytest.raises(
        ExperimentError, match=r"--trainer\.limit_train_batches 2\.0 .* a fraction in \[0, 1\]"
    ):
        check_trainer(trainer(limit_train_batches=2.0))
    check_trainer(trainer(limit_train_batches=2))


def injected(class_path: str, **init_args: object) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def test_optimizer_and_scheduler_arguments_on_the_edge_pass() -> None:
    model_config = Namespace(
        class_path="modules.TabularRegressor",
        init_args=Namespace(
            optimizer=injected("torch.optim.Adam", lr=0.0, betas=[0.0, 0.999], weight_decay=0.0),
            lr_scheduler=injected("torch.optim.lr_scheduler.ReduceLROnPlateau", factor=0.0),
        ),
    )
    check_config(Namespace(model=model_config))
    model_config.init_args.optimizer.init_args.betas = [1.0, 0.999]
    with pytest.raises(
        ExperimentError, match=r"^--model\.optimizer\.init_args\.betas: \[1\.0, 0\.999\] is refused"
    ):
        check_config(Namespace(model=model_config))


def test_one_argument_against_another_on_the_edge_builds() -> None:
    # What the parser cannot check, each __init__ does; the smallest legal values build.
    assert MNISTConvNet(image_size=6).net(torch.zeros(1, 1, 6, 6)).shape == (1, 10)
    assert LogisticRegression(num_classes=2).num_classes == 2
    assert TreeLSTM(
        vocab_size=1, num_classes=2, sparse_gradients=True, embedding_weight_decay=0.0
    ).embedding.sparse
    assert LandmarkRegressor(num_points=2, width=1, eye_corners=(1, 0)).num_points == 2
    assert (
        CaptionModel(cnn_channels=(), embed_dim=1, hidden_dim=1, max_caption_length=1).max_caption_length == 1
    )


def test_a_fits_checkpoints_load_weights_only(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The lesson's typed arguments (a list of PositiveInt, a Fraction) reach the saved hyperparameters as
    # builtins: torch's weights-only unpickler refuses any other class.
    monkeypatch.setattr(sys, "argv", ["experiments"])
    main(
        [
            *lesson(
                "boston_housing", "--trainer.max_epochs=1", "--model.dropout=0.25", "--model.hidden_sizes=[4]"
            ),
            "--checkpoint.save_top_k=-1",
            *QUIET,
        ]
    )
    checkpoints = sorted(in_tmp.rglob("*.ckpt"))
    assert {path.name for path in checkpoints} >= {"last.ckpt"} and len(checkpoints) >= 2
    for path in checkpoints:
        saved = torch.load(path, weights_only=True)
        hyperparameters = saved["hyper_parameters"]
        assert hyperparameters["hidden_sizes"] == [4] and type(hyperparameters["hidden_sizes"][0]) is int
        assert hyperparameters["dropout"] == 0.25 and type(hyperparameters["dropout"]) is float
        assert type(hyperparameters["in_features"]) is int


def test_a_module_used_from_python_names_the_flag_too() -> None:
    # configure_optimizers builds what the parser's partials (or a lambda) give: the same checks apply.
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ExperimentError, match=r"^--model\.optimizer\.init_args\.lr: -2 is refused \(Invalid"):
        build_optimizer(functools.partial(torch.optim.SGD, lr=-2), parameters)
    with pytest.raises(
        ExperimentError, match=r"^--model\.optimizer\.init_args\.lr: nan is not a finite float32 number"
    ):
        build_optimizer(lambda params: torch.optim.SGD(params, lr=float("nan")), parameters)
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="up")
    with pytest.raises(ExperimentError, match=r"^--model\.lr_scheduler\.init_args\.mode: 'up' is refused"):
        optimizer_config(parameters, torch.optim.Adam, plateau)
    built = optimizer_config(parameters, functools.partial(torch.optim.SGD, lr=0.0), None)
    assert built.param_groups[0]["lr"] == 0.0
