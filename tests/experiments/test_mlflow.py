"""The MLflow logger gets the whole run, read back as MLflow's UI reads it (its client, on the SQLite store):
one fit, then ``test`` and ``predict`` of ``--ckpt_path last``, all in the one training run, with its
parameters, every metric (the test loss at the checkpoint's step), and its checkpoints, configs, figures
and predictions as artifacts (experiments/runs.py lays the runs out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from experiments.ckpt_path import find_checkpoint
from experiments.cli import ExperimentCLI
from experiments.runs import RunLayout
from tests.conftest import QUIET, config

pytest.importorskip("mlflow", reason="the MLflow logger is the optional extra .[mlflow]")

MLFLOW = [
    "--config",
    config("linear_regression"),
    "--trainer.logger=MLFlowLogger",
    "--trainer.accelerator=cpu",
]
STORE = "sqlite:///lightning_logs/mlflow.db"


def all_artifacts(client: Any, run_id: str, path: str | None = None) -> list[str]:
    """Every artifact file of the run, as the UI's Artifacts tab lists them (folders opened)."""
    files = []
    for item in client.list_artifacts(run_id, path):
        files += all_artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return files


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One small MLflow fit of linear_regression, then a test and a predict of its last checkpoint, in
    process, in an empty folder; the MLflow client on the store they wrote."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        # MLflow sets MLFLOW_TRACKING_URI to the store it logged to: undone for the tests that follow.
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        fitted = ExperimentCLI(args=["fit", *MLFLOW, "--trainer.max_epochs=2", *QUIET])
        tested = ExperimentCLI(args=["test", *MLFLOW, "--ckpt_path=last", *QUIET])
        ExperimentCLI(args=["predict", *MLFLOW, "--ckpt_path=last", *QUIET])
        client = MlflowClient(tracking_uri=STORE)
        yield {"folder": folder, "client": client, "fitted": fitted, "tested": tested}


@pytest.fixture(scope="module")
def run(runs: dict[str, Any]) -> Any:
    client = runs["client"]
    experiment = client.get_experiment_by_name("linear_regression")
    [found] = client.search_runs([experiment.experiment_id])  # test and predict made no run of their own
    return found


def test_the_store_is_sqlite_and_the_run_folder_is_the_runs_artifact_folder(runs, run):
    folder = runs["folder"]
    assert sorted(p.name for p in (folder / "lightning_logs").iterdir()) == ["mlartifacts", "mlflow.db"]
    assert run.info.status == "FINISHED"
    artifacts = folder / "lightning_logs/mlartifacts/linear_regression" / run.info.run_id / "artifacts"
    assert Path(run.info.artifact_uri) == artifacts.resolve()
    # The run folder every callback writes to is that artifact folder: no copy, nothing beside it.
    assert (artifacts / "checkpoints" / "last.ckpt").is_file()
    assert runs["fitted"].trainer.checkpoint_callback.dirpath == str(artifacts / "checkpoints")


def test_the_runs_checkpoints_configs_figures_and_predictions_are_its_artifacts(runs, run):
    files = all_artifacts(runs["client"], run.info.run_id)
    for name in ("config.yaml", "config_test.yaml", "config_predict.yaml", "predictions.pt"):
        assert name in files
    assert "checkpoints/last.ckpt" in files
    assert [f for f in files if f.startswith("checkpoints/best-epoch=")]
    assert {"figures/fit_before_training.png", "figures/fit_after_training.png"} <= set(files)
    figure = runs["client"].download_artifacts(run.info.run_id, "figures/fit_after_training.png")
    assert Path(figure).read_bytes().startswith(b"\x89PNG")
    predictions = torch.load(Path(run.info.artifact_uri) / "predictions.pt", weights_only=True)
    assert isinstance(predictions, torch.Tensor) and len(predictions) > 0


def test_every_metric_is_in_the_training_run_the_test_loss_at_the_checkpoints_step(runs, run):
    client, run_id = runs["client"], run.info.run_id
    assert {"train/loss", "val/loss", "test/loss"} <= set(run.data.metrics)
    val_steps = [m.step for m in client.get_metric_history(run_id, "val/loss")]
    assert len(val_steps) == 2  # one per epoch
    [test_loss] = client.get_metric_history(run_id, "test/loss")
    assert test_loss.step == val_steps[-1]
    assert test_loss.value == pytest.approx(float(runs["tested"].trainer.callback_metrics["test/loss"]))
    # The evaluations (test, predict) log "epoch" as the checkpoint's last epoch, not 0: the run's epoch
    # stays the training's.
    assert run.data.metrics["epoch"] == 1
    assert {m.value for m in client.get_metric_history(run_id, "epoch") if m.step == test_loss.step} == {1}


def test_the_parameters_are_the_runs_settings_under_their_flat_names(run):
    params = run.data.params
    assert params["model.optimizer.lr"] == "0.1" and params["seed_everything"] == "42"
    # Neither Lightning's bookkeeping nor a library default nobody set.
    assert "_instantiator" not in params and "model.optimizer.amsgrad" not in params


def test_last_and_best_are_found_through_the_store(runs, run):
    layout = RunLayout(
        "mlflow", runs["folder"] / "lightning_logs/mlflow.db", "MLFlowLogger", "linear_regression", STORE
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(runs["folder"])
        folder = Path(run.info.artifact_uri)
        assert layout.runs() == [folder]
        assert find_checkpoint(layout, "last") == folder / "checkpoints" / "last.ckpt"
        best = find_checkpoint(layout, "best")
        assert best is not None and best.parent == folder / "checkpoints" and best.name.startswith("best-")
        assert layout.run_of(best) == folder


def test_images_and_figures_without_a_file_name_become_png_artifacts(runs):
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import MLFlowLogger

    from core.distributed import run_dir
    from core.figures import add_image, log_figure, logs_images, new_figure

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(runs["folder"])
        logger = MLFlowLogger(
            "images", tracking_uri=STORE, artifact_location="lightning_logs/mlartifacts/images"
        )
        trainer = Trainer(
            logger=logger, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False
        )
        assert logs_images(trainer)
        add_image(trainer, "train/inputs", torch.rand(3, 8, 8))
        add_image(trainer, "weights/filters/conv1", torch.randint(0, 255, (1, 6, 6), dtype=torch.uint8))
        log_figure(trainer, lambda: new_figure((2, 2)), "val/curve")
        folder = run_dir(trainer)
        assert (
            folder is not None and str(folder) in logger.experiment.get_run(logger.run_id).info.artifact_uri
        )
        files = set(all_artifacts(runs["client"], logger.run_id))
    assert files == {"figures/train/inputs.png", "figures/weights/filters/conv1.png", "figures/val/curve.png"}
