"""configs/face_landmarks.yaml through the CLI on a tiny CSV + JPEG dataset: every subcommand with
fast_dev_run, a short fit whose checkpoint predict loads (points in the files' pixels), the landmark
figure, and the one-line error for absent data (malformed CSVs: tests/datamodules)."""

from __future__ import annotations

import csv

import pytest
import torch

from datamodules import FaceLandmarksDataModule
from experiments.main import main
from modules import LandmarkRegressor
from tests.conftest import QUIET, config
from tests.face_data import write_faces

# Small images and a narrow network keep each run well under a second of compute.
SMALL = ["--data.image_size=32", "--data.crop_size=28", "--data.val_split=4", "--data.batch_size=4"]
NARROW = ["--model.width=8"]


@pytest.fixture
def faces_dir(tmp_path):
    return write_faces(tmp_path / "faces", count=12)


@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_face_landmarks_fast_dev_run(cli, faces_dir, subcommand):
    run = cli(
        subcommand,
        "--config",
        config("face_landmarks"),
        f"--data.data_dir={faces_dir}",
        *SMALL,
        *NARROW,
        "--trainer.fast_dev_run=true",
    )
    assert run.trainer.state.finished


def test_fit_then_predict_returns_points_in_the_files_pixels(cli, faces_dir, in_tmp):
    # On the CPU: the predictions are compared with the checkpoint's network run here on the CPU.
    args = ["--config", config("face_landmarks"), f"--data.data_dir={faces_dir}", *SMALL, *NARROW]
    args.append("--trainer.accelerator=cpu")
    fit = cli("fit", *args, "--trainer.max_epochs=2")
    run = in_tmp / "lightning_logs" / "face_landmarks" / "version_0"
    assert fit.trainer.checkpoint_callback.monitor == "val/nme"
    metrics = fit.trainer.callback_metrics
    assert {"val/nme", "val/nme_mean_shape", "val/nme_best", "train/loss"} <= set(metrics)
    # The landmark figure is drawn after the last epoch.
    assert (run / "figures" / "val_landmarks.png").stat().st_size > 0

    # test reads the held-out faces too: from the last checkpoint, the last validation's numbers, the
    # baseline included (the mean training shape travels in the checkpoint).
    test = cli("test", *args, "--ckpt_path=last").trainer.callback_metrics
    for name in ("nme", "nme_mean_shape"):
        assert test[f"test/{name}"].item() == pytest.approx(metrics[f"val/{name}"].item(), rel=1e-5)

    cli("predict", *args, "--ckpt_path=last")
    predict_run = in_tmp / "lightning_logs" / "face_landmarks" / "version_0" / "predict"
    predictions = torch.load(predict_run / "predictions.pt")
    assert predictions.shape == (4, 68, 2)
    # The same numbers by hand: the checkpoint's network on the held-out crops, mapped to the files.
    model = LandmarkRegressor.load_from_checkpoint(
        run / "checkpoints" / "last.ckpt", map_location="cpu"
    ).eval()
    data = FaceLandmarksDataModule(data_dir=str(faces_dir), image_size=32, crop_size=28, val_split=4)
    data.setup("predict")
    images, to_original = data.splits["predict"]
    with torch.no_grad():
        pixels = (model(images.float() / 255) + 0.5) * 28
    torch.testing.assert_close(predictions, pixels * to_original[:, None, 0] + to_original[:, None, 1])
    # The CSV copy: the tutorial's format, a row per held-out image, named.
    with open(predict_run / "predictions.csv", newline="") as file:
        header, *rows = list(csv.reader(file))
    assert header[:3] == ["image_name", "part_0_x", "part_0_y"] and len(header) == 137
    assert [row[0] for row in rows] == data.predict_names
    written = torch.tensor([[float(v) for v in row[1:]] for row in rows]).view(4, 68, 2)
    torch.testing.assert_close(written, predictions, atol=0.006, rtol=0)


def run_main(args: list[str], capsys, monkeypatch) -> str:
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_absent_data_is_one_line_naming_the_files(in_tmp, capsys, monkeypatch):
    err = run_main(
        ["fit", "--config", config("face_landmarks"), "--data.data_dir=absent", *QUIET], capsys, monkeypatch
    )
    assert err.startswith("error: face landmarks not found: expected absent/face_landmarks.csv")
    assert "--data.download true" in err
