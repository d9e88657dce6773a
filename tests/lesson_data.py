"""Small data for every lesson config, found from the config itself: the arguments that point a config
at test-made files in the genuine formats (and shrink its model), so tests run every shipped config.

A config names its datamodule and model classes; ``DATA`` writes files for a datamodule class and
returns the flags that point the config at them, ``SMALL_MODEL`` shrinks a model class. A new lesson
whose datamodule is already here needs nothing added; a new datamodule adds one writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from tests.conftest import CONFIGS

#: Writes a datamodule's files under the given folder and returns the flags pointing a config at them.
DataWriter = Callable[[Path], list[str]]


def no_data(root: Path) -> list[str]:
    """Data made in memory or shipped with the package."""
    return []


def mnist(root: Path) -> list[str]:
    from tests.image_data import write_mnist

    return [f"--data.data_dir={write_mnist(root / 'mnist')}", "--data.val_split=16"]


def cifar(root: Path) -> list[str]:
    """Test-made pickles cannot match torchvision's md5 sums: in-process runs need
    ``cifar_integrity_bypassed`` (tests/conftest.py), and other processes ``bypass_cifar_integrity``."""
    from tests.image_data import write_cifar10

    return [f"--data.data_dir={write_cifar10(root / 'cifar')}", "--data.val_split=20"]


def corpus(root: Path) -> list[str]:
    from tests.text_data import write_topics_corpus

    path = write_topics_corpus(root / "corpus" / "topics.txt")
    return [f"--data.path={path}", "--data.min_count=1", "--data.sample=0"]


def treebank(root: Path) -> list[str]:
    from tests.tree_data import write_treebank

    return [f"--data.data_dir={write_treebank(root / 'sst', {'train': 40, 'dev': 12, 'test': 12})}"]


def faces(root: Path) -> list[str]:
    from tests.face_data import write_faces

    folder = write_faces(root / "faces", count=12)
    return [f"--data.data_dir={folder}", "--data.image_size=32", "--data.crop_size=28", "--data.val_split=4"]


def coco(root: Path) -> list[str]:
    from tests.coco_data import write_coco_captions

    folder = write_coco_captions(root / "coco", "annotations/captions_train2017.json", "train2017", 6)
    folder = write_coco_captions(folder, "annotations/captions_val2017.json", "val2017", 3, first_id=100)
    return [f"--data.data_dir={folder}", "--data.min_count=1", "--data.num_workers=0"]


#: By datamodule class name (a config's ``data.class_path``, last part).
DATA: dict[str, DataWriter] = {
    "RandomTensorDataModule": no_data,
    "LineDataModule": no_data,
    "SineWaveDataModule": no_data,
    "BostonHousingDataModule": no_data,
    "StudyScoresDataModule": no_data,
    "MNISTDataModule": mnist,
    "CIFAR10DataModule": cifar,
    "TextCorpusDataModule": corpus,
    "TreebankDataModule": treebank,
    "FaceLandmarksDataModule": faces,
    "CocoCaptionsDataModule": coco,
}

#: By model class name: flags that make a config's model small enough for a test (none: it is).
SMALL_MODEL: dict[str, list[str]] = {
    "SkipGramModel": ["--model.embedding_dim=16"],
    "TreeLSTM": ["--model.embedding_dim=16", "--model.hidden_size=8"],
    "CaptionModel": ["--data.image_size=32", "--model.embed_dim=32", "--model.hidden_dim=64"],
}


def lesson_configs() -> list[str]:
    """The name of every shipped lesson config (``configs/*.yaml``, not the trainer presets)."""
    return sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def classes(lesson: str) -> tuple[str, str]:
    """The model and datamodule class names a lesson config names."""
    config = yaml.safe_load((CONFIGS / f"{lesson}.yaml").read_text(encoding="utf-8"))
    return config["model"]["class_path"].rsplit(".", 1)[-1], config["data"]["class_path"].rsplit(".", 1)[-1]


def lesson_args(lesson: str, root: Path) -> list[str]:
    """Flags that run ``configs/<lesson>.yaml`` on small data written under ``root``, with a small model."""
    model, data = classes(lesson)
    return [*DATA[data](root), *SMALL_MODEL.get(model, [])]


def bypass_cifar_integrity() -> None:
    """Accept test-made CIFAR pickles in this process (see ``cifar``)."""
    from torchvision.datasets import CIFAR10, cifar

    CIFAR10._check_integrity = lambda self: True  # type: ignore[method-assign]
    cifar.check_integrity = lambda *args, **kwargs: True
