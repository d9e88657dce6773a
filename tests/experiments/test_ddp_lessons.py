"""Every shipped config under 2-process DDP on this CPU (gloo), as shipped: its own callbacks on, fit,
then validate, test and predict from the checkpoint, each compared with one process.

One torchrun launch runs all the commands (``tests/ddp_driver.py``): two processes instead of two per
command. Each command has a hard time limit there, and the process group a 60-second collective
timeout, so a deadlock fails within about a minute, naming the command, instead of hanging CI.

What is compared with one process (in this test's process, on the CPU):
- fit, where the lesson is deterministic (or made so by flags that turn off dropout or augmentation,
  which draw per process): a process with batch B each gives the weights of one process with batch 2B;
- validate and test from the DDP checkpoint: the metrics, which every rank holds after torchmetrics
  reduced them, equal one process's on the same checkpoint;
- predict from it: the file rank 0 wrote, gathered from both ranks, equals one process's file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from experiments.cli import ExperimentCLI
from tests.conftest import QUIET, REPO, config, subprocess_env
from tests.lesson_data import lesson_args, lesson_configs

STEP_TIMEOUT = 120  # seconds a command may take under DDP before it counts as a deadlock
LAUNCH_TIMEOUT = 1200
DDP = [
    "--config", str(REPO / "configs" / "trainer" / "ddp.yaml"),
    "--trainer.accelerator=cpu",
    "--trainer.devices=2",
    "--trainer.strategy.init_args.timeout=0:01:00",
]  # fmt: skip
EVALUATIONS = ("validate", "test", "predict")


@dataclass(frozen=True)
class Case:
    """How a lesson runs here. ``batch``: samples per process under DDP (one process takes twice as
    many), None when every process serves all the data (``shard = False``); ``exact``: flags under which
    the fit is deterministic, None when its randomness cannot be turned off; ``flags``: sizes that split
    evenly, and enough epochs to validate once."""

    batch: int | None = None
    exact: tuple[str, ...] | None = None
    flags: tuple[str, ...] = ("--trainer.max_epochs=3",)


CASES: dict[str, Case] = {
    "first_network": Case(batch=5, exact=()),
    "linear_regression": Case(batch=8, exact=(), flags=("--data.n_points=40", "--trainer.max_epochs=3")),
    "sine_rnn": Case(exact=(), flags=("--trainer.max_epochs=30",)),
    "boston_housing": Case(batch=16, exact=("--model.dropout=0",)),
    "boston_housing_linear": Case(batch=16, exact=()),
    "scratch_network": Case(exact=(), flags=("--trainer.max_epochs=100",)),
    "mnist_convnet": Case(batch=8),  # dropout is fixed in the Keras model
    "simple_cnn": Case(batch=8, exact=("--data.random_crop_padding=0", "--data.horizontal_flip=false")),
    "face_landmarks": Case(batch=4),  # the augmentation has no off switch for its random crop
    "coco_captions": Case(batch=2),  # a DataLoader: one process and DDP shuffle in different orders
    "tree_lstm": Case(batch=5, exact=("--model.dropout=0",)),
}
#: Lessons that run differently: word2vec refuses to train on several processes (one-line error) and is
#: evaluated from a one-process checkpoint; feature_extraction is predict from mnist_convnet's checkpoint.
SPECIAL = ("word2vec", "feature_extraction")
#: Every other config: a new one runs here as Case() (its config's batch, three epochs, evaluation and
#: predict compared with one process) without an entry in CASES.
TRAINED = [lesson for lesson in lesson_configs() if lesson not in SPECIAL]
#: Figures each drawing lesson's fit leaves in its run folder.
FIGURES = {
    "linear_regression": ["fit_before_training.png", "fit_after_training.png"],
    "sine_rnn": ["predictions.png"],
    "mnist_convnet": ["val_predictions.png", "confusion_matrix.png"],
    "simple_cnn": ["val_predictions.png", "confusion_matrix.png"],
    "face_landmarks": ["val_landmarks.png"],
}


def case(lesson: str) -> Case:
    return CASES.get(lesson, Case())


def batch_flags(lesson: str, processes: int) -> list[str]:
    batch = case(lesson).batch
    return [] if batch is None else [f"--data.batch_size={batch * 2 // processes}"]


@dataclass
class Launch:
    """The data, the DDP run's working folder and what each rank reported."""

    root: Path
    data_args: dict[str, list[str]]
    ranks: list[dict[str, Any]]
    output: str
    word2vec_checkpoint: Path

    @property
    def ddp(self) -> Path:
        return self.root / "ddp"

    def lesson(self, lesson: str, processes: int = 2) -> list[str]:
        """The flags of a lesson's commands, for ``processes`` processes (batch sizes and flags of the case;
        CASES' exact flags are added by the fit that wants them)."""
        return [
            "--config",
            config(lesson),
            *self.data_args[lesson],
            *case(lesson).flags,
            *batch_flags(lesson, processes),
        ]

    def outcome(self, name: str, rank: int = 0) -> dict[str, Any]:
        assert name in self.ranks[rank], f"rank {rank} never ran {name}; output:\n{self.output[-3000:]}"
        return self.ranks[rank][name]


def run_here(folder: Path, args: list[str]) -> tuple[ExperimentCLI, Path]:
    """The experiments command in this process, in ``folder``, on the CPU; and its run folder."""
    folder.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        cli = ExperimentCLI(args=[*args, "--trainer.accelerator=cpu", *QUIET])
        return cli, Path(cli.trainer.loggers[0].log_dir).resolve()
    finally:
        os.chdir(cwd)


def plan_steps(launch: Launch) -> list[dict[str, Any]]:
    steps = []
    for lesson in TRAINED:
        fit = ["fit", *launch.lesson(lesson), *(case(lesson).exact or ()), *DDP, *QUIET]
        steps.append({"name": f"{lesson}/fit", "args": fit})
        for evaluation in EVALUATIONS:
            args = [evaluation, *launch.lesson(lesson), *DDP, *QUIET, "--ckpt_path=last"]
            steps.append({"name": f"{lesson}/{evaluation}", "args": args})
    features = ["predict", *launch.lesson("feature_extraction"), "--data.batch_size=8", *DDP, *QUIET]
    steps.append({"name": "feature_extraction/predict", "args": [*features, "--ckpt_path=last"]})
    checkpoint = f"--ckpt_path={launch.word2vec_checkpoint}"
    for evaluation in EVALUATIONS:
        args = [evaluation, *launch.lesson("word2vec"), *DDP, *QUIET, checkpoint]
        steps.append({"name": f"word2vec/{evaluation}", "args": args})
    # Last: a command that fails leaves nothing pending between the ranks, but nothing runs after it.
    steps.append({"name": "word2vec/fit", "args": ["fit", *launch.lesson("word2vec"), *DDP, *QUIET]})
    return steps


def last_step(output: str) -> str:
    started = [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("ddp-step ")]
    return started[-1] if started else "(none)"


def failure_report(output: str) -> str:
    """The part of a failed launch's output that says why: the ranks' own lines before torchrun's
    summary, and every line naming an error or a timeout."""
    own = output.split('Traceback (most recent call last):\n  File "<frozen runpy>"')[0]
    flagged = [
        line for line in output.splitlines() if "Error" in line or "error:" in line or "Timeout" in line
    ]
    return own[-4000:] + "\n...\n" + "\n".join(flagged[-30:])


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Launch:
    root = tmp_path_factory.mktemp("ddp_lessons")
    data_args = {lesson: lesson_args(lesson, root / "data" / lesson) for lesson in lesson_configs()}
    partial = Launch(root, data_args, [], "", root / "unset")
    _, word2vec = run_here(root / "single", ["fit", *partial.lesson("word2vec"), "--trainer.max_epochs=1"])
    partial.word2vec_checkpoint = word2vec / "checkpoints" / "last.ckpt"
    plan = {"steps": plan_steps(partial), "step_timeout": STEP_TIMEOUT, "results": str(root)}
    (root / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    partial.ddp.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "tests.ddp_driver", str(root / "plan.json"),
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            cwd=partial.ddp,
            env=subprocess_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=LAUNCH_TIMEOUT,
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.output if isinstance(expired.output, str) else ""
        pytest.fail(f"the DDP launch outlived {LAUNCH_TIMEOUT} s in {last_step(output)}:\n{output[-3000:]}")
    if done.returncode != 0 or "ddp-done" not in done.stdout:
        pytest.fail(
            f"the DDP launch ended with status {done.returncode} in {last_step(done.stdout)} (a step over "
            f"{STEP_TIMEOUT} s is a deadlock; its stacks are above the end):\n{failure_report(done.stdout)}"
        )
    ranks = [json.loads((root / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    return Launch(root, data_args, ranks, done.stdout, partial.word2vec_checkpoint)


@pytest.mark.parametrize("lesson", TRAINED)
def test_fit_under_ddp_writes_one_run(launch: Launch, lesson: str) -> None:
    for rank in (0, 1):
        assert launch.outcome(f"{lesson}/fit", rank)["code"] == 0
    run = Path(launch.outcome(f"{lesson}/fit")["run"])
    assert run.parent == launch.ddp / "lightning_logs" / lesson
    # One run: validate, test and predict of its checkpoint write into it (and feature_extraction's
    # predict, of the MNIST training run's checkpoint, into a folder of its own there), none of them
    # made by rank 1 as well.
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    evaluations = {"validate", "test", "predict"}
    if lesson == "mnist_convnet":
        evaluations.add("predict_feature_extraction")
    assert evaluations <= {p.name for p in run.iterdir() if p.is_dir()}
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    for figure in FIGURES.get(lesson, []):
        assert (run / "figures" / figure).stat().st_size > 0, figure


@pytest.mark.parametrize("lesson", [lesson for lesson in TRAINED if case(lesson).exact is not None])
def test_ddp_fit_matches_one_process_with_the_same_global_batch(
    launch: Launch, lesson: str, cifar_integrity_bypassed: None
) -> None:
    exact = case(lesson).exact or ()
    single, single_run = run_here(launch.root / "single", ["fit", *launch.lesson(lesson, 1), *exact])
    ddp_run = Path(launch.outcome(f"{lesson}/fit")["run"])
    ddp = torch.load(ddp_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ddp["global_step"] == single.trainer.global_step > 0
    state = single.model.state_dict()
    assert ddp["state_dict"].keys() == state.keys()
    for key, tensor in state.items():
        # The same batches; gradients averaged over the processes: equal up to float rounding.
        torch.testing.assert_close(ddp["state_dict"][key], tensor.cpu(), rtol=1e-4, atol=1e-6, msg=key)
    # The figures show what one process shows: the samples each rank drew, gathered in dataset order.
    for figure in FIGURES.get(lesson, []):
        ddp_png, single_png = (
            (ddp_run / "figures" / figure).read_bytes(),
            (single_run / "figures" / figure).read_bytes(),
        )
        assert ddp_png == single_png, f"{figure} differs from one process's"
    largest = max(float((ddp["state_dict"][k] - t.cpu()).abs().max()) for k, t in state.items())
    steps = single.trainer.global_step
    print(f"\n{lesson} fit: the weights of one process after {steps} steps, largest gap {largest:.1e}")


def assert_same_predictions(ddp: Any, single: Any, name: str) -> None:
    if isinstance(single, torch.Tensor):
        torch.testing.assert_close(ddp, single, rtol=1e-4, atol=1e-5, msg=name)
    elif isinstance(single, dict):
        assert ddp.keys() == single.keys(), name
        for key in single:
            assert_same_predictions(ddp[key], single[key], f"{name}[{key}]")
    else:
        assert ddp == single, name


@pytest.mark.parametrize("lesson", [*TRAINED, "word2vec"])
def test_ddp_evaluation_matches_one_process(
    launch: Launch, lesson: str, cifar_integrity_bypassed: None
) -> None:
    fit_run = Path(launch.outcome(f"{lesson}/fit")["run"]) if lesson in TRAINED else None
    checkpoint = launch.word2vec_checkpoint if fit_run is None else fit_run / "checkpoints" / "last.ckpt"
    for evaluation in EVALUATIONS:
        name = f"{lesson}/{evaluation}"
        outcomes = [launch.outcome(name, rank) for rank in (0, 1)]
        assert [o["code"] for o in outcomes] == [0, 0], name
        args = [evaluation, *launch.lesson(lesson, 1), f"--ckpt_path={checkpoint}"]
        single, single_run = run_here(launch.root / "single", args)
        if evaluation != "predict":
            expected = {k: float(v) for k, v in single.trainer.callback_metrics.items()}
            assert expected, name
            for rank, outcome in enumerate(outcomes):
                # Every rank holds the metrics of the whole split, as one process computes them.
                assert outcome["metrics"] == pytest.approx(expected, rel=1e-5, abs=1e-6), (
                    f"{name}, rank {rank}"
                )
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(expected.items()))
            print(f"\n{name}: DDP equals one process: {shown}")
            continue
        ddp_run = Path(outcomes[0]["run"])
        written = sorted(p.name for p in single_run.iterdir() if p.suffix in (".pt", ".csv", ".txt"))
        assert written, f"{name}: one process wrote no predictions"
        assert sorted(p.name for p in ddp_run.iterdir() if p.suffix in (".pt", ".csv", ".txt")) == written
        for file in written:
            if file.endswith(".pt"):
                ddp = torch.load(ddp_run / file, weights_only=False)
                assert_same_predictions(
                    ddp, torch.load(single_run / file, weights_only=False), f"{name} {file}"
                )
            else:
                assert (ddp_run / file).read_text() == (single_run / file).read_text(), f"{name} {file}"
        print(f"\n{name}: DDP wrote what one process writes: {', '.join(written)}")


def test_feature_extraction_under_ddp_matches_one_process(launch: Launch) -> None:
    outcomes = [launch.outcome("feature_extraction/predict", rank) for rank in (0, 1)]
    assert [o["code"] for o in outcomes] == [0, 0]
    checkpoint = Path(launch.outcome("mnist_convnet/fit")["run"]) / "checkpoints" / "last.ckpt"
    args = [
        "predict",
        *launch.lesson("feature_extraction", 1),
        "--data.batch_size=16",
        f"--ckpt_path={checkpoint}",
    ]
    _, single_run = run_here(launch.root / "single", args)
    expected = torch.load(single_run / "features.pt", weights_only=False)
    ddp = torch.load(Path(outcomes[0]["run"]) / "features.pt", weights_only=False)
    assert ddp["layers"] == expected["layers"] == ["conv_1", "conv_2"]
    assert torch.equal(ddp["labels"], expected["labels"]) and len(expected["labels"]) == 32
    assert_same_predictions(ddp["features"], expected["features"], "features")


def test_word2vec_refuses_to_train_on_several_processes_in_one_line(launch: Launch) -> None:
    for rank in (0, 1):
        assert launch.outcome("word2vec/fit", rank)["code"] == 2
    errors = [line for line in launch.output.splitlines() if "error:" in line]
    assert errors and all("word2vec trains in one process" in line for line in errors), errors
    assert "Traceback" not in launch.output
