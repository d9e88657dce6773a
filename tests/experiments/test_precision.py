"""bf16-mixed on this CPU for every lesson config: a few batches of fit with configs/trainer/bf16.yaml,
autocast really on, and a finite training loss.

feature_extraction.yaml is a ``predict`` of the MNIST convnet from a checkpoint, covered by mnist_convnet
here; 16-mixed needs CUDA (tests/experiments/test_presets.py runs it when a GPU is present).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from experiments.cli import ExperimentCLI
from tests.conftest import QUIET, REPO, config

# Per lesson: the arguments that point it at small data written into the test's folder.
DataArgs = Callable[[Path], list[str]]


def no_data(root: Path) -> list[str]:
    return []


def mnist(root: Path) -> list[str]:
    from tests.image_data import write_mnist

    return [f"--data.data_dir={write_mnist(root / 'mnist')}", "--data.val_split=16"]


def cifar(root: Path) -> list[str]:
    from tests.image_data import write_cifar10

    return [f"--data.data_dir={write_cifar10(root / 'cifar')}", "--data.val_split=20"]


def corpus(root: Path) -> list[str]:
    from tests.text_data import write_topics_corpus

    path = write_topics_corpus(root / "corpus" / "topics.txt")
    return [f"--data.path={path}", "--data.min_count=1", "--data.sample=0", "--model.embedding_dim=16"]


def treebank(root: Path) -> list[str]:
    from tests.tree_data import write_treebank

    folder = write_treebank(root / "sst", {"train": 40, "dev": 12, "test": 0})
    return [f"--data.data_dir={folder}", "--model.embedding_dim=16", "--model.hidden_size=8"]


def faces(root: Path) -> list[str]:
    from tests.face_data import write_faces

    folder = write_faces(root / "faces", count=12)
    return [f"--data.data_dir={folder}", "--data.image_size=32", "--data.crop_size=28", "--data.val_split=4"]


def coco(root: Path) -> list[str]:
    from tests.coco_data import write_coco_captions

    folder = write_coco_captions(root / "coco", "annotations/captions_train2017.json", "train2017", 6)
    folder = write_coco_captions(folder, "annotations/captions_val2017.json", "val2017", 3, first_id=100)
    return [f"--data.data_dir={folder}", "--data.min_count=1", "--data.num_workers=0"]


LESSONS: dict[str, DataArgs] = {
    "first_network": no_data,
    "linear_regression": no_data,
    "sine_rnn": no_data,
    "boston_housing": no_data,
    "boston_housing_linear": no_data,
    "scratch_network": no_data,
    "mnist_convnet": mnist,
    "simple_cnn": cifar,
    "word2vec": corpus,
    "tree_lstm": treebank,
    "face_landmarks": faces,
    "coco_captions": coco,
}


def test_every_lesson_config_is_covered() -> None:
    configs = {p.stem for p in (REPO / "configs").glob("*.yaml")}
    assert configs - set(LESSONS) == {"feature_extraction"}


@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_bf16_mixed_fast_dev_run_has_a_finite_loss(
    lesson: str, in_tmp: Path, cifar_integrity_bypassed: None
) -> None:
    run = ExperimentCLI(
        args=[
            "--config", config(lesson),
            "--config", str(REPO / "configs" / "trainer" / "bf16.yaml"),
            *LESSONS[lesson](in_tmp),
            "--trainer.fast_dev_run=2",
            *QUIET,
        ],
        run=False,
    )  # fmt: skip
    autocast: list[torch.dtype | None] = []
    training_step = run.model.training_step

    def recording_step(*args, **kwargs):
        autocast.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return training_step(*args, **kwargs)

    run.model.training_step = recording_step
    run.trainer.fit(run.model, datamodule=run.datamodule)
    assert autocast and set(autocast) == {torch.bfloat16}, f"training steps ran with autocast {autocast}"
    losses = {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith("train/loss")}
    assert losses, f"no train/loss logged: {sorted(run.trainer.callback_metrics)}"
    assert all(math.isfinite(v) for v in losses.values()), losses
