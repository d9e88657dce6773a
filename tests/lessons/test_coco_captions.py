"""configs/coco_captions.yaml through the CLI on a tiny COCO captions folder written by the test."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments.main import main
from modules import captioning
from tests.coco_data import write_coco_captions
from tests.conftest import QUIET, config


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """The official 2017 layout, in miniature: 6 training images (one missing) and 3 validation images."""
    root = write_coco_captions(tmp_path / "coco", "annotations/captions_train2017.json", "train2017", 6, (4,))
    return write_coco_captions(root, "annotations/captions_val2017.json", "val2017", 3, first_id=100)


def data_args(coco_dir: Path) -> list[str]:
    # The config's files and folders, under the test's data_dir; workers off to keep the test quick.
    return [
        f"--data.data_dir={coco_dir}",
        "--data.skip_missing=true",
        "--data.min_count=1",
        "--data.num_workers=0",
    ]


@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_coco_captions_fast_dev_run(cli, coco_dir, subcommand):
    args = ["--config", config("coco_captions"), *data_args(coco_dir), "--trainer.fast_dev_run=true"]
    run = cli(subcommand, *args)
    assert run.trainer.state.finished
    assert run.datamodule.image_counts[str(coco_dir / "annotations/captions_train2017.json")] == (5, 1)


def test_fit_then_predict_writes_one_caption_string_per_image(cli, coco_dir, in_tmp, monkeypatch):
    drawn: list[str] = []
    real_log_figure = captioning.log_figure

    def recording_log_figure(trainer, draw, tag, png_name=None):
        def draw_and_record():
            figure = draw()
            drawn[:] = [ax.get_title(loc="left") for ax in figure.axes if ax.get_title(loc="left")]
            return figure

        real_log_figure(trainer, draw_and_record, tag, png_name)

    monkeypatch.setattr(captioning, "log_figure", recording_log_figure)
    small = ["--data.image_size=32", "--model.embed_dim=32", "--model.hidden_dim=64"]
    args = ["--config", config("coco_captions"), *data_args(coco_dir), *small]
    fit = cli("fit", *args, "--trainer.max_epochs=1")
    assert fit.trainer.callback_metrics["val/bleu4"] >= 0
    cli("predict", *args, "--ckpt_path=last")
    # One caption per image, in the order of the files (what each batch returned, joined).
    captions = torch.load(in_tmp / "lightning_logs/coco_captions/version_0/predict/predictions.pt")
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    # The readable copy names each validation image by its file.
    with open(in_tmp / "lightning_logs/coco_captions/version_0/predict/predictions.csv", newline="") as file:
        assert list(csv.reader(file)) == [
            ["input", "caption"],
            *([f"{100 + i:012d}.jpg", caption] for i, caption in enumerate(captions)),
        ]
    # The figure of the last validation showed the 3 validation images with what the same weights
    # caption them with (predict serves the validation images).
    assert drawn == [textwrap.fill(f"model: {c or '(empty)'}", 36) for c in captions]
    with Image.open(in_tmp / "lightning_logs/coco_captions/version_0/figures/val_captions.png") as figure:
        assert figure.size == (580, 800)  # 2 columns, 2 rows


def test_a_partial_image_folder_is_one_error_line(in_tmp, coco_dir, capsys, monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config("coco_captions"), f"--data.data_dir={coco_dir}", *QUIET])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: 1 of the 6 images of captions_train2017.json are missing")
    assert "--data.skip_missing true" in lines[0]
