"""Figures off the training path (core/figures.py): the background worker's scheduling and budget, and
that a lesson with slow figures trains at its own speed while its last figure still lands in TensorBoard.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer

import core.figures as figures
from core.figures import FigureWorker, log_figure, new_figure
from tests.conftest import QUIET, config


def recorder(log: list[str], name: str, seconds: float = 0.0, gate: threading.Event | None = None):
    def job() -> None:
        if gate is not None:
            gate.wait(10)
        time.sleep(seconds)
        log.append(name)

    return job


def test_a_newer_figure_replaces_one_still_waiting_and_tags_take_turns() -> None:
    worker = FigureWorker(max_share=1.0)
    drawn: list[str] = []
    gate = threading.Event()
    worker.submit("a", recorder(drawn, "a1", gate=gate))  # running, held at the gate
    time.sleep(0.05)
    worker.submit("a", recorder(drawn, "a2"))
    worker.submit("b", recorder(drawn, "b1"))
    worker.submit("a", recorder(drawn, "a3"))  # replaces a2, and goes after b1
    gate.set()
    worker.close()
    assert drawn == ["a1", "b1", "a3"]
    assert worker.replaced == 1 and worker.drawn == 3


def test_over_the_budget_figures_are_held_and_the_newest_is_drawn_at_the_flush() -> None:
    worker = FigureWorker(max_share=0.05)
    drawn: list[str] = []
    worker.submit("fig", recorder(drawn, "epoch 0", seconds=0.2))  # the first of a tag: always drawn
    worker.flush()
    # 0.2 s of drawing in about 0.2 s of run time: far over 5 %. Later figures of the tag are held.
    for epoch in range(1, 6):
        worker.submit("fig", recorder(drawn, f"epoch {epoch}"))
    worker.submit("other", recorder(drawn, "other 0"))  # a new tag's first still goes at once
    time.sleep(0.1)
    assert drawn == ["epoch 0", "other 0"]
    worker.flush()
    assert drawn == ["epoch 0", "other 0", "epoch 5"]
    worker.close()


def test_a_failing_figure_is_reported_not_raised_and_close_can_drop() -> None:
    worker = FigureWorker(max_share=1.0)
    drawn: list[str] = []

    def broken() -> None:
        raise ValueError("no data")

    worker.submit("bad", broken)
    worker.submit("good", recorder(drawn, "good"))
    worker.flush()
    assert drawn == ["good"] and worker.errors == ["bad: ValueError: no data"]
    gate = threading.Event()
    worker.submit("slow", recorder(drawn, "slow", gate=gate))
    time.sleep(0.05)
    worker.submit("dropped", recorder(drawn, "dropped"))
    gate.set()
    worker.close(drop=True)
    assert drawn == ["good", "slow"]


class SlowFigure(Callback):
    """Draws a figure after every validation that takes ``seconds`` to draw."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch

        def draw():
            time.sleep(self.seconds)
            figure = new_figure((2, 2))
            figure.subplots().set_title(f"epoch {epoch}")
            return figure

        log_figure(trainer, draw, "slow", png_name="slow")


def run_with_slow_figures(cli, *extra: str):
    spec = f'{{"class_path": "{__name__}.SlowFigure", "init_args": {{"seconds": 0.25}}}}'
    args = ["fit", "--config", config("linear_regression"), "--trainer.max_epochs=30", *extra]
    start = time.perf_counter()
    run = cli(*args, f"--trainer.callbacks+={spec}")
    return run, time.perf_counter() - start


def images(run_folder: Path, tag: str) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_folder), size_guidance={"images": 0}).Reload()
    return events.Images(tag) if tag in events.Tags()["images"] else []


def test_slow_figures_do_not_slow_training_and_the_last_one_lands(cli, in_tmp: Path) -> None:
    # 30 epochs with a figure of 0.25 s each: 7.5 s if drawn in line, a few tenths of a second of
    # training otherwise (the first figure, then what 5 % of the run allows, then the last at the end).
    run, seconds = run_with_slow_figures(cli)
    assert figures.figure_worker() is None  # stopped at the end of fit
    slow = images(in_tmp / "lightning_logs" / "linear_regression" / "version_0", "slow")
    steps = [image.step for image in slow]
    # Early figures appear during training (one waiting is replaced by a newer one: never a queue),
    # and the last epoch's is always drawn.
    assert steps == sorted(set(steps)) and steps[-1] == run.trainer.global_step == 30 * 7
    assert 2 <= len(steps) < 10, steps
    assert seconds < 30 * 0.25, seconds
    figure_png = in_tmp / "lightning_logs" / "linear_regression" / "version_0" / "figures" / "slow.png"
    assert figure_png.stat().st_size > 0


def test_figures_in_line_without_the_background_thread(cli, in_tmp: Path) -> None:
    _, seconds = run_with_slow_figures(cli, "--figures.background=false", "--trainer.max_epochs=4")
    slow = images(in_tmp / "lightning_logs" / "linear_regression" / "version_0", "slow")
    assert [image.step for image in slow] == [7, 14, 21, 28] and seconds >= 4 * 0.25


def test_a_run_that_fails_drops_the_figures_it_had_not_started(cli, in_tmp: Path) -> None:
    class Boom(Callback):
        def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            if trainer.current_epoch == 2:
                raise RuntimeError("boom")

    from experiments.cli import ExperimentCLI

    built = ExperimentCLI(
        args=["--config", config("linear_regression"), "--trainer.max_epochs=5", *QUIET], run=False
    )
    built.trainer.callbacks.append(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        built.trainer.fit(built.model, built.datamodule)
    assert figures.figure_worker() is None
