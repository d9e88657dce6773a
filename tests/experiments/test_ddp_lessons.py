"""Every shipped config under 2-process DDP on this CPU (gloo), as shipped: its own callbacks on, fit
(validating as it goes), then test and predict from the checkpoint, each compared with one process.

One torchrun launch runs all the commands (``tests/ddp_driver.py``): two processes instead of two per
command. Each command has a hard time limit there, and the process group a 60-second collective
timeout, so a deadlock fails within about a minute, naming the command, instead of hanging CI. The
launch runs only the lessons whose tests are selected: ``pytest -k sine_rnn`` starts torchrun for
sine_rnn alone.

How a lesson runs here is read from its config and classes (tests/lesson_data.py), never from a list of
lessons: a new config runs here without a change.
- Per-process batch: sharded data (the default) gets half the config's batch on each of the two
  processes and the whole batch in the one-process run it is compared with, so both take the same
  steps; data every process serves whole (``shard = False``) keeps its batch.
- Epochs: enough to validate once (the config's ``check_val_every_n_epoch``), at least three.
- A config whose logger names another experiment (feature_extraction names mnist_convnet) evaluates
  that experiment's checkpoints: it is tested and predicted from that lesson's DDP fit.
- A lesson whose classes declare ``single_process_fit`` (word2vec) must refuse a DDP fit in one line;
  it is evaluated from a checkpoint trained in one process.

What is compared with one process (commands run in this test's process, on the CPU, while the launch
runs: they need nothing of it but a finished fit's checkpoint):
- fit: the steps taken and the figure files drawn; where the classes say how to make the fit
  deterministic (``deterministic_args``: dropout and augmentation off), the weights as well, the last
  validation's metrics and each figure's bytes: a process with batch B each gives the weights of one
  process with batch 2B;
- test from the DDP checkpoint: the metrics, which every rank holds after torchmetrics reduced them,
  equal one process's on the same checkpoint;
- predict from it: the files rank 0 wrote, gathered from both ranks, equal one process's files.

A ``validate`` command would repeat what these check (the fit's validation, the evaluation of a
checkpoint), at about 3 s a lesson: it is left out.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from experiments.cli import ExperimentCLI
from tests.conftest import QUIET, REPO, config, subprocess_env
from tests.lesson_data import bypass_cifar_integrity, lesson_args, lesson_configs, load_lesson

STEP_TIMEOUT = 120  # seconds a command may take under DDP before it counts as a deadlock
LAUNCH_TIMEOUT = 1200
DDP = [
    "--config", str(REPO / "configs" / "trainer" / "ddp.yaml"),
    "--trainer.accelerator=cpu",
    "--trainer.devices=2",
    "--trainer.strategy.init_args.timeout=0:01:00",
]  # fmt: skip
#: validate is left out: the fit validates on two processes, and test runs the same evaluation loop.
EVALUATIONS = ("test", "predict")
#: The last validation's metrics of a fit: val/acc as the lessons name them, val_acc as Lightning's docs do.
VALIDATION = re.compile(r"val[/_]")
#: A decimal fraction as predictions.csv prints it (whole numbers, such as MNIST's class names, are text).
NUMBER = re.compile(r"-?\d+\.\d+(e[-+]?\d+)?")
PROCESSES = 2
#: A fit that stops early: linear_regression's val/loss reaches its noise floor within a few epochs.
EARLY_STOPPING = [
    "--config", config("linear_regression"),
    "--config", str(REPO / "configs" / "trainer" / "early_stopping.yaml"),
    "--early_stopping.min_delta=0.001",
    "--trainer.max_epochs=300",
    "--trainer.logger.init_args.name=early_stopping",  # not among the lesson's runs
]  # fmt: skip

LESSONS = lesson_configs()
#: Lessons that train here under DDP: all but the evaluations of another experiment's checkpoints and
#: the lessons that train in one process only.
SINGLE_PROCESS = [name for name in LESSONS if load_lesson(name).single_process_fit]
FITTED = [name for name in LESSONS if load_lesson(name).evaluates is None and name not in SINGLE_PROCESS]


def batch_flags(name: str, processes: int) -> list[str]:
    """The batch of ``processes`` processes: half the config's on each of two, the whole on one, for data
    each process serves a shard of; unchanged for data every process serves whole and for a lesson
    that trains in one process (its evaluations compare no steps)."""
    facts = load_lesson(name)
    if facts.batch_size is None or not facts.sharded or facts.single_process_fit:
        return []
    per_process = max(1, facts.batch_size // PROCESSES)
    return [f"--data.batch_size={per_process * PROCESSES // processes}"]


def same_global_batch(name: str) -> bool:
    """Whether one process takes the batches two take together: the batch was split between them, or
    each serves all the data. (A sharded datamodule without a ``batch_size`` argument keeps its batch on
    each process, so two take half the steps.)"""
    facts = load_lesson(name)
    return facts.batch_size is not None or not facts.sharded


def exact_flags(name: str) -> list[str] | None:
    """The flags under which a lesson's DDP fit equals one process's (its ``deterministic_args``); None
    when it cannot."""
    return load_lesson(name).deterministic_flags if same_global_batch(name) else None


@dataclass(frozen=True)
class Plan:
    """What the launch runs, for the selected lessons: ``fitted`` train under DDP (a selected evaluation
    brings the lesson it evaluates), ``evaluating`` evaluate another's checkpoints, ``single`` train in
    one process and must refuse DDP."""

    fitted: list[str]
    evaluating: list[str]
    single: list[str]
    #: Whether the early-stopping fit runs too (its test is selected).
    early_stopping: bool = False

    @classmethod
    def of(cls, selected: set[str], early_stopping: bool = False) -> Plan:
        evaluating = sorted(name for name in selected if load_lesson(name).evaluates is not None)
        targets = {load_lesson(name).evaluates for name in evaluating}
        unknown = sorted(str(target) for target in targets if target not in FITTED)
        assert not unknown, f"{evaluating} evaluate {unknown}, which no config trains here"
        fitted = sorted((selected & set(FITTED)) | targets)  # type: ignore[arg-type]
        return cls(fitted, evaluating, sorted(selected & set(SINGLE_PROCESS)), early_stopping)

    @property
    def lessons(self) -> list[str]:
        return [*self.fitted, *self.evaluating, *self.single]


@dataclass
class Alone:
    """A command run in one process, to compare a DDP command with: the CLI and its run folder, or what it
    raised (raised again by the lesson's test)."""

    cli: ExperimentCLI | None = None
    run: Path | None = None
    error: Exception | None = None

    def result(self) -> tuple[ExperimentCLI, Path]:
        if self.error is not None:
            raise self.error
        assert self.cli is not None and self.run is not None
        return self.cli, self.run


@dataclass
class Launch:
    """The plan, the data, the DDP run's working folder and what each rank reported."""

    root: Path
    plan: Plan
    data_args: dict[str, list[str]]
    #: The one-process checkpoints that single-process lessons are evaluated from.
    single_checkpoints: dict[str, Path] = field(default_factory=dict)
    #: The one-process commands the DDP ones are compared with, by step name (``sine_rnn/fit``).
    alone: dict[str, Alone] = field(default_factory=dict)
    ranks: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""

    @property
    def ddp(self) -> Path:
        return self.root / "ddp"

    def lesson(self, name: str, processes: int = PROCESSES) -> list[str]:
        """The flags of a lesson's commands on ``processes`` processes (deterministic flags are added by
        the fit that wants them)."""
        epochs = f"--trainer.max_epochs={load_lesson(name).epochs}"
        return ["--config", config(name), *self.data_args[name], epochs, *batch_flags(name, processes)]

    def outcome(self, step: str, rank: int = 0) -> dict[str, Any]:
        assert step in self.ranks[rank], f"rank {rank} never ran {step}; output:\n{self.output[-3000:]}"
        return self.ranks[rank][step]

    def fit_run(self, name: str) -> Path:
        return Path(self.outcome(f"{name}/fit")["run"])

    def checkpoint(self, name: str, launched: subprocess.Popen, deadline: float) -> Path | None:
        """The checkpoint a lesson's evaluations read, once the running launch has written it (its fit,
        or the fit of the experiment it evaluates, is done); None if the launch ends without it."""
        if name in self.single_checkpoints:
            return self.single_checkpoints[name]
        fit = f"{load_lesson(name).evaluates or name}/fit"
        while True:
            try:  # rank 0 rewrites the file after each step: it may be absent or half written
                done = json.loads((self.root / "rank0.json").read_text(encoding="utf-8")).get(fit)
            except (OSError, ValueError):
                done = None
            if done is not None and done.get("run"):
                return Path(done["run"]) / "checkpoints" / "last.ckpt"
            if launched.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.5)


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


def run_alone(launch: Launch, args: list[str]) -> Alone:
    """A command in one process, in the launch's ``single`` folder, for comparison."""
    try:
        cli, run = run_here(launch.root / "single", args)
    except Exception as error:  # the lesson's own test reports it
        return Alone(error=error)
    return Alone(cli, run)


def compare_alone(launch: Launch, launched: subprocess.Popen, deadline: float) -> None:
    """The one-process commands the DDP ones are compared with, run while the launch runs: they need
    nothing of it but a finished fit's checkpoint, and its two processes, often waiting on each other,
    leave part of two cores idle. The fits with the whole batch first, then each lesson's evaluations of
    the checkpoint its DDP evaluations read, as soon as the launch has written it."""
    for name in launch.plan.fitted:
        launch.alone[f"{name}/fit"] = run_alone(
            launch, ["fit", *launch.lesson(name, 1), *(exact_flags(name) or [])]
        )
    for name in launch.plan.lessons:
        checkpoint = launch.checkpoint(name, launched, deadline)
        for evaluation in EVALUATIONS:
            step = f"{name}/{evaluation}"
            if checkpoint is None:
                launch.alone[step] = Alone(
                    error=AssertionError(f"the DDP launch wrote no checkpoint for {step}")
                )
            else:
                args = [evaluation, *launch.lesson(name, 1), f"--ckpt_path={checkpoint}"]
                launch.alone[step] = run_alone(launch, args)


def plan_steps(launch: Launch) -> list[dict[str, Any]]:
    steps = []

    def evaluate(name: str, checkpoint: str) -> None:
        for evaluation in EVALUATIONS:
            args = [evaluation, *launch.lesson(name), *DDP, *QUIET, checkpoint]
            steps.append({"name": f"{name}/{evaluation}", "args": args})

    for name in launch.plan.fitted:
        exact = exact_flags(name) or []
        steps.append({"name": f"{name}/fit", "args": ["fit", *launch.lesson(name), *exact, *DDP, *QUIET]})
        evaluate(name, "--ckpt_path=last")
    for name in launch.plan.evaluating:
        evaluate(name, "--ckpt_path=last")  # the newest run of the experiment its logger names
    for name in launch.plan.single:
        evaluate(name, f"--ckpt_path={launch.single_checkpoints[name]}")
    if launch.plan.early_stopping:
        steps.append({"name": "early_stopping/fit", "args": ["fit", *EARLY_STOPPING, *DDP, *QUIET]})
    # Last: a command that fails leaves nothing pending between the ranks, but nothing runs after it.
    for name in launch.plan.single:
        steps.append({"name": f"{name}/fit", "args": ["fit", *launch.lesson(name), *DDP, *QUIET]})
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


def selected_tests(request: pytest.FixtureRequest) -> list[pytest.Item]:
    return [item for item in request.session.items if getattr(item, "module", None) is request.module]


def selected_lessons(request: pytest.FixtureRequest) -> set[str]:
    """The lessons of this file's selected tests (after ``-k`` and ``-m``), from their parameters."""
    params = [getattr(item, "callspec", None) for item in selected_tests(request)]
    return {spec.params["lesson"] for spec in params if spec is not None and "lesson" in spec.params}


@pytest.fixture(scope="module")
def launch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Launch:
    early = any(
        item.name == test_early_stopping_stops_every_rank_at_the_same_epoch.__name__
        for item in selected_tests(request)
    )
    plan = Plan.of(selected_lessons(request), early)
    root = tmp_path_factory.mktemp("ddp_lessons")
    data_args = {name: lesson_args(name, root / "data" / name) for name in plan.lessons}
    partial = Launch(root, plan, data_args)
    for name in plan.single:
        _, run = run_here(root / "single", ["fit", *partial.lesson(name, 1), "--trainer.max_epochs=1"])
        partial.single_checkpoints[name] = run / "checkpoints" / "last.ckpt"
    plan_file = {"steps": plan_steps(partial), "step_timeout": STEP_TIMEOUT, "results": str(root)}
    (root / "plan.json").write_text(json.dumps(plan_file), encoding="utf-8")
    partial.ddp.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={PROCESSES}",
        "-m", "tests.ddp_driver", str(root / "plan.json"),
    ]  # fmt: skip
    log = root / "launch.log"  # a file, not a pipe: nothing reads the output until the launch ends
    with log.open("w", encoding="utf-8") as output_file:
        process = subprocess.Popen(
            command,
            cwd=partial.ddp,
            env=subprocess_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
            stdout=output_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends torchrun and both ranks
        )
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        try:
            with pytest.MonkeyPatch.context() as patch:
                bypass_cifar_integrity(patch)
                compare_alone(partial, process, deadline)
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    output = log.read_text(encoding="utf-8", errors="replace")
    if code is None:
        pytest.fail(f"the DDP launch outlived {LAUNCH_TIMEOUT} s in {last_step(output)}:\n{output[-3000:]}")
    if code != 0 or "ddp-done" not in output:
        pytest.fail(
            f"the DDP launch ended with status {code} in {last_step(output)} (a step over "
            f"{STEP_TIMEOUT} s is a deadlock; its stacks are above the end):\n{failure_report(output)}"
        )
    partial.ranks = [json.loads((root / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    partial.output = output
    return partial


def figures(run: Path) -> list[str]:
    return sorted(path.name for path in (run / "figures").glob("*.png"))


@pytest.mark.parametrize("lesson", FITTED)
def test_fit_under_ddp_writes_one_run(launch: Launch, lesson: str) -> None:
    for rank in (0, 1):
        assert launch.outcome(f"{lesson}/fit", rank)["code"] == 0
    run = launch.fit_run(lesson)
    assert run.parent == launch.ddp / "lightning_logs" / lesson
    # One run: test and predict of its checkpoint write into it (and those of a config that
    # evaluates this experiment's checkpoints into folders of their own there), none of them made by
    # rank 1 as well.
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    evaluators = [name for name in launch.plan.evaluating if load_lesson(name).evaluates == lesson]
    evaluations = {f"{e}_{name}" for name in evaluators for e in EVALUATIONS} | set(EVALUATIONS)
    assert evaluations <= {p.name for p in run.iterdir() if p.is_dir()}
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    for figure in figures(run):
        assert (run / "figures" / figure).stat().st_size > 0, figure


@pytest.mark.parametrize("lesson", FITTED)
def test_ddp_fit_matches_one_process_with_the_same_global_batch(launch: Launch, lesson: str) -> None:
    exact = exact_flags(lesson)
    single, single_run = launch.alone[f"{lesson}/fit"].result()
    ddp_run = launch.fit_run(lesson)
    ddp = torch.load(ddp_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    steps = single.trainer.global_step
    assert ddp["global_step"] > 0 and steps > 0
    if same_global_batch(lesson):
        assert ddp["global_step"] == steps
    # The figures one process draws, each once: rank 0 draws what the ranks gathered.
    assert figures(ddp_run) == figures(single_run)
    if exact is None:
        print(f"\n{lesson} fit: the figures of one process (not deterministic: no weights compared)")
        return
    # The last validation's metrics, which every rank holds, are those of one process.
    validated = {k: float(v) for k, v in single.trainer.callback_metrics.items() if VALIDATION.match(k)}
    assert validated, "one process's fit never validated"
    for rank in (0, 1):
        metrics = launch.outcome(f"{lesson}/fit", rank)["metrics"]
        shown = {k: v for k, v in metrics.items() if VALIDATION.match(k)}
        assert shown == pytest.approx(validated, rel=1e-4, abs=1e-6), f"rank {rank}"
    state = single.model.state_dict()
    assert ddp["state_dict"].keys() == state.keys()
    for key, tensor in state.items():
        # The same batches; gradients averaged over the processes: equal up to float rounding. (Data
        # whose training split is odd in size would make DDP repeat a sample to even out the shards.)
        torch.testing.assert_close(ddp["state_dict"][key], tensor.cpu(), rtol=1e-4, atol=1e-6, msg=key)
    for figure in figures(single_run):
        # The samples each rank drew, gathered in dataset order: what one process shows.
        same = (ddp_run / "figures" / figure).read_bytes() == (single_run / "figures" / figure).read_bytes()
        assert same, f"{figure} differs from one process's"
    largest = max(float((ddp["state_dict"][k] - t.cpu()).abs().max()) for k, t in state.items())
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


def assert_same_table(ddp: str, single: str, name: str) -> None:
    """The same rows and columns; numbers equal to within one unit of their last printed digit (a
    probability printed as 0.4999 on one process may print as 0.5000 on two: float sums in another
    order), everything else equal."""
    ddp_rows, single_rows = list(csv.reader(io.StringIO(ddp))), list(csv.reader(io.StringIO(single)))
    assert len(ddp_rows) == len(single_rows) and ddp_rows[:1] == single_rows[:1], name
    for line, (got, want) in enumerate(zip(ddp_rows, single_rows, strict=True)):
        assert len(got) == len(want), f"{name} line {line + 1}"
        for a, b in zip(got, want, strict=True):
            if NUMBER.fullmatch(b) and NUMBER.fullmatch(a):
                digits = len(b.partition(".")[2].partition("e")[0])
                assert float(a) == pytest.approx(float(b), abs=1.01 * 10**-digits, rel=1e-4), (
                    f"{name} line {line + 1}"
                )
            else:
                assert a == b, f"{name} line {line + 1}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_ddp_evaluation_matches_one_process(launch: Launch, lesson: str) -> None:
    for evaluation in EVALUATIONS:
        name = f"{lesson}/{evaluation}"
        outcomes = [launch.outcome(name, rank) for rank in (0, 1)]
        assert [o["code"] for o in outcomes] == [0, 0], name
        single, single_run = launch.alone[name].result()
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
                ddp = torch.load(ddp_run / file, weights_only=True)
                assert_same_predictions(
                    ddp, torch.load(single_run / file, weights_only=True), f"{name} {file}"
                )
            elif file.endswith(".csv"):
                assert_same_table(
                    (ddp_run / file).read_text(), (single_run / file).read_text(), f"{name} {file}"
                )
            else:
                assert (ddp_run / file).read_text() == (single_run / file).read_text(), f"{name} {file}"
        print(f"\n{name}: DDP wrote what one process writes: {', '.join(written)}")


@pytest.mark.parametrize("lesson", SINGLE_PROCESS)
def test_a_single_process_lesson_refuses_to_fit_on_several_processes_in_one_line(
    launch: Launch, lesson: str
) -> None:
    for rank in (0, 1):
        assert launch.outcome(f"{lesson}/fit", rank)["code"] == 2
    reason = load_lesson(lesson).single_process_fit
    reasons = [load_lesson(name).single_process_fit or "" for name in launch.plan.single]
    errors = [line for line in launch.output.splitlines() if "error:" in line]
    # Each rank's one line says why; no other command of the launch failed.
    assert any(reason and reason in line for line in errors), errors
    assert all(any(r in line for r in reasons) for line in errors), errors
    assert "Traceback" not in launch.output


def test_early_stopping_stops_every_rank_at_the_same_epoch(launch: Launch) -> None:
    outcomes = [launch.outcome("early_stopping/fit", rank) for rank in (0, 1)]
    assert [o["code"] for o in outcomes] == [0, 0]
    # Each rank reads the synchronised val/loss and Lightning reduces the decision: one epoch for all.
    epochs = {o["epoch"] for o in outcomes}
    stopped = {o["stopped_epoch"] for o in outcomes}
    assert len(epochs) == 1 and len(stopped) == 1, outcomes
    (epoch,), (stop,) = epochs, stopped
    assert stop is not None and 3 <= epoch < 300 and stop == epoch - 1
    assert "Stopped early after epoch" in launch.output
    print(f"\nearly stopping under DDP: both ranks stopped after epoch {epoch} of 300")
