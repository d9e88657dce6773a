"""The shared lesson figures (``modules/plots.py``): what a short fit and test of a small regressor draw,
the PNG files they leave, and the values prepared for drawing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

import modules.plots as plots
from datamodules import RandomTensorDataModule
from modules import FeedForwardNet
from modules.plots import LossCurve, PredictedVsActual, scatter_points, significant

EPOCHS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-epoch fit and a test of the first network with both callbacks; what each figure showed."""
    root = tmp_path_factory.mktemp("plots")
    shown: dict[str, Any] = {}
    real_log_figure = plots.log_figure

    def recording_log_figure(trainer: Trainer, draw: Any, tag: str, png_name: str | None = None) -> None:
        def draw_and_record() -> Any:
            figure = draw()
            ax = figure.axes[0]
            shown.setdefault(tag, []).append(
                {
                    "title": ax.get_title(),
                    "lines": {line.get_label(): line.get_ydata().tolist() for line in ax.get_lines()},
                    "x": {line.get_label(): line.get_xdata().tolist() for line in ax.get_lines()},
                    "points": [c.get_offsets().tolist() for c in ax.collections],
                }
            )
            return figure

        real_log_figure(trainer, draw_and_record, tag, png_name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "log_figure", recording_log_figure)
        torch.manual_seed(0)
        curve = LossCurve()
        trainer = Trainer(
            max_epochs=EPOCHS,
            logger=TensorBoardLogger(root, name="plots"),
            callbacks=[curve, PredictedVsActual(target="y", every_n_epochs=2)],
            accelerator="cpu",
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
        )
        data = RandomTensorDataModule(n_features=10, n_train=10, n_val=12, n_test=14, batch_size=5, seed=0)
        model = FeedForwardNet()
        trainer.fit(model, datamodule=data)
        tested = trainer.test(model, datamodule=data, verbose=False)[0]
    return {"shown": shown, "curve": curve, "tested": tested, "folder": Path(trainer.log_dir)}


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # decodes the whole file: a truncated PNG fails here
        return image.size


def test_the_figures_are_pngs_of_their_size_in_the_run_folder(run):
    figures = run["folder"] / "figures"
    assert sorted(p.name for p in figures.iterdir()) == [
        "loss_curve.png",
        "test_predicted_vs_actual.png",
        "val_predicted_vs_actual.png",
    ]
    assert png_size(figures / "loss_curve.png") == (600, 400)  # 6 x 4 inches at 100 dpi
    assert png_size(figures / "val_predicted_vs_actual.png") == (500, 480)


def test_the_loss_curve_shows_every_epochs_logged_loss(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run["folder"])).Reload()
    for name in ("train/loss", "val/loss"):
        logged = [event.value for event in events.Scalars(name)]
        history = run["curve"].history[name]
        assert sorted(history) == list(range(EPOCHS))  # epochs 0 and 1; the sanity check not counted
        assert list(history.values()) == pytest.approx(logged, rel=1e-6)
        [curve] = run["shown"]["train/loss_curve"]
        label = next(label for label in curve["lines"] if label.startswith(name))
        assert curve["lines"][label] == [significant(v) for v in history.values()]
        assert curve["x"][label] == list(range(1, EPOCHS + 1))  # epochs counted from 1, as the console


def test_the_scatter_shows_each_test_row_and_the_tests_rmse(run):
    [shown] = run["shown"]["test/predicted_vs_actual"]
    points = shown["points"][0]
    assert len(points) == 14  # one per test row
    rmse = math.sqrt(run["tested"]["test/loss"])  # the test's MSE
    assert shown["title"] == f"test: RMSE {rmse:.3g} (14 rows)"
    # Random 0/1 targets on the x axis, sigmoid outputs in (0, 1) on the y axis.
    assert {x for x, _ in points} <= {0.0, 1.0} and all(0 < y < 1 for _, y in points)


def test_the_validation_scatter_is_drawn_every_n_epochs_and_when_training_ends(run):
    # every_n_epochs=2 in 2 epochs: after the second validation, then when training ends.
    shown = run["shown"]["val/predicted_vs_actual"]
    assert [figure["title"].split(":")[0] for figure in shown] == [f"validation after epoch {EPOCHS}"] * 2
    assert all(len(figure["points"][0]) == 12 for figure in shown)  # the validation rows


def test_scatter_points_are_rounded_and_the_rmse_is_not():
    predictions = torch.tensor([[1.234567], [2.0], [3.0]])
    targets = torch.tensor([[1.0], [2.0], [5.0]])
    predicted, actual, rmse = scatter_points(predictions, targets)
    assert predicted == [1.235, 2.0, 3.0] and actual == [1.0, 2.0, 5.0]
    assert rmse == pytest.approx(math.sqrt((0.234567**2 + 4) / 3), rel=1e-6)


def test_the_curve_history_survives_a_checkpoint():
    curve = LossCurve(metrics=["train/loss"])
    curve.history["train/loss"] = {0: 0.5, 1: 0.25}
    resumed = LossCurve(metrics=["train/loss"])
    resumed.load_state_dict(curve.state_dict())
    assert resumed.history == {"train/loss": {0: 0.5, 1: 0.25}}
