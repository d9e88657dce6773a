"""CocoCaptionsDataModule on tiny COCO captions JSON files and JPEGs written by the tests."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import DataConfigError, DataNotFoundError
from datamodules import coco_captions
from datamodules.captions import Vocabulary, tokenize
from datamodules.coco_captions import CocoCaptionsDataModule
from tests.coco_data import write_coco_captions, write_coco_json

TRAIN = {"train_annotations": "annotations/captions_train.json", "train_images": "train"}
VAL = {"val_annotations": "annotations/captions_val.json", "val_images": "val"}


def datamodule(root: Path, **kwargs) -> CocoCaptionsDataModule:
    args = {**TRAIN, **VAL, "image_size": 24, "min_count": 1, "batch_size": 4, **kwargs}
    return CocoCaptionsDataModule(str(root), **args)


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """6 training images (the third listed but missing) and 3 validation images."""
    root = write_coco_captions(tmp_path / "coco", n_images=6, missing=(2,))
    return write_coco_captions(root, "annotations/captions_val.json", "val", n_images=3, first_id=100)


def test_tokenize_lower_cases_and_drops_punctuation():
    words = ["a", "man's", "dog", "running", "in", "2", "parks"]
    assert tokenize("A man's DOG, running; in 2 parks!") == words


def test_a_missing_image_is_one_error_naming_the_count_files_and_option(coco_dir):
    with pytest.raises(DataNotFoundError) as error:
        datamodule(coco_dir).setup("fit")
    message = str(error.value)
    assert "\n" not in message
    assert "1 of the 6 images of captions_train.json are missing" in message
    assert "000000000003.jpg" in message and "--data.skip_missing true" in message


def test_skip_missing_uses_the_images_present_and_reports_the_counts(coco_dir, caplog):
    data = datamodule(coco_dir, skip_missing=True)
    with caplog.at_level(logging.INFO):
        data.setup("fit")
    assert data.image_counts[str(coco_dir / TRAIN["train_annotations"])] == (5, 1)
    assert data.image_counts[str(coco_dir / VAL["val_annotations"])] == (3, 0)
    assert "5 images found" in caplog.text and "1 skipped (missing)" in caplog.text
    assert data.splits["train"].ids == [1, 2, 4, 5, 6]
    assert len(data.splits["val"]) == 3


def test_vocabulary_holds_the_specials_then_training_words_by_frequency(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "z.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / name)
    write_coco_json(
        tmp_path / "annotations/captions_train.json",
        {1: ("a.jpg", ["A dog runs.", "a DOG sleeps!"]), 2: ("b.jpg", ["Cat on a mat"])},
    )
    write_coco_json(tmp_path / "annotations/captions_val.json", {9: ("z.jpg", ["a zebra"])})
    val = {"val_annotations": "annotations/captions_val.json", "val_images": "train"}
    words = datamodule(tmp_path, **val).vocabulary
    # "a" 3 times, "dog" twice, then the words seen once in alphabetical order; "zebra" is only in val.
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert words == [*specials, "a", "dog", "cat", "mat", "on", "runs", "sleeps"]
    assert datamodule(tmp_path, min_count=2, **val).vocabulary == [*specials, "a", "dog"]
    vocab = Vocabulary(datamodule(tmp_path, min_count=2, **val).vocabulary)
    assert vocab.encode("A dog and a zebra.") == [1, 4, 5, 3, 4, 3, 2]
    assert vocab.decode([1, 4, 5, 2, 4]) == "a dog"


def test_batches_hold_padded_captions_with_lengths_and_all_references(coco_dir):
    data = datamodule(coco_dir, skip_missing=True)
    data.setup("fit")
    vocab = Vocabulary(data.vocabulary)
    batch = next(iter(data.val_dataloader()))
    images, captions, lengths = batch["images"], batch["captions"], batch["lengths"]
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 24, 24)
    # Every image has two captions; captions of image i are rows 2i and 2i+1.
    assert batch["caption_image"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["image_ids"].tolist() == [100, 101, 102]
    assert batch["references"][0] == ["a red square at the top left", "the top left of the picture is red"]
    assert lengths.tolist() == [len(c.split()) + 2 for refs in batch["references"] for c in refs]
    assert captions.shape == (6, lengths.max())
    for row, length in zip(captions, lengths, strict=True):
        assert row[0] == vocab.bos and row[length - 1] == vocab.eos
        assert (row[length:] == vocab.pad).all() and (row[1 : length - 1] > vocab.unk).all()
    assert vocab.decode(captions[1].tolist()) == "the top left of the picture is red"


def test_images_are_normalised_on_the_device_side(coco_dir):
    data = datamodule(coco_dir, skip_missing=True, mean_std=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    moved = data.on_after_batch_transfer(batch, 0)
    assert moved["images"].dtype == torch.float32
    torch.testing.assert_close(moved["images"], (batch["images"] / 255 - 0.5) / 0.25)
    assert moved["captions"] is batch["captions"]


def test_one_annotation_file_gives_a_seeded_split(tmp_path):
    root = write_coco_captions(tmp_path, n_images=10)
    first = datamodule(root, val_annotations=None, val_split=3, seed=1)
    first.setup("fit")
    again = datamodule(root, val_annotations=None, val_split=0.3, seed=1)
    again.setup("fit")
    train, val = first.splits["train"].ids, first.splits["val"].ids
    assert len(val) == 3 and sorted(train + val) == list(range(1, 11))
    assert (again.splits["train"].ids, again.splits["val"].ids) == (train, val)
    # test and predict read the validation images when no test file is given.
    first.setup("test")
    assert first.splits["test"].ids == val
    # The vocabulary is made of the training part only.
    held_out_only = set(tokenize(" ".join(first.splits["val"].captions()))) - set(
        tokenize(" ".join(first.splits["train"].captions()))
    )
    assert not held_out_only & set(first.vocabulary)


def test_a_test_file_is_read_by_test_and_predict(coco_dir):
    data = datamodule(
        coco_dir, skip_missing=True, test_annotations="annotations/captions_val.json", test_images="val"
    )
    data.setup("test")
    data.setup("predict")
    assert data.splits["test"].ids == data.splits["predict"].ids == [100, 101, 102]
    assert len(next(iter(data.predict_dataloader()))["references"]) == 3


def test_predict_captions_images_that_have_no_captions(coco_dir):
    # COCO's image_info_test2017.json: images, no annotations.
    write_coco_json(coco_dir / "annotations/images_only.json", {7: ("000000000100.jpg", [])})
    test = {"test_annotations": "annotations/images_only.json", "test_images": "val"}
    data = datamodule(coco_dir, skip_missing=True, **test)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["images"].shape == (1, 3, 24, 24) and batch["image_ids"].tolist() == [7]
    assert batch["captions"].shape[0] == 0 and batch["references"] == [[]]
    with pytest.raises(DataConfigError, match="lists no image with a caption"):
        data.setup("test")


@pytest.mark.parametrize("val_split", [0, 6, 0.99])
def test_an_impossible_split_is_a_clear_error(tmp_path, val_split):
    root = write_coco_captions(tmp_path, n_images=6)
    with pytest.raises(DataConfigError, match=r"--data\.val_split"):
        datamodule(root, val_annotations=None, val_split=val_split).setup("fit")


def test_absent_annotations_name_the_path_the_archive_and_download(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        CocoCaptionsDataModule(str(tmp_path)).setup("fit")
    message = str(error.value)
    assert str(tmp_path / "annotations" / "captions_train2017.json") in message
    assert coco_captions.ANNOTATIONS_URL in message and "--data.download true" in message


def test_an_absent_image_folder_names_its_archive(tmp_path):
    write_coco_json(tmp_path / "annotations/captions_train2017.json", {1: ("a.jpg", ["a cat"])})
    with pytest.raises(DataNotFoundError, match=r"image folder not found: .*train2017.*zips/train2017\.zip"):
        CocoCaptionsDataModule(str(tmp_path)).setup("fit")


def test_a_file_that_is_not_coco_json_is_a_clear_error(tmp_path):
    write_coco_captions(tmp_path, n_images=2)
    (tmp_path / TRAIN["train_annotations"]).write_text("[1, 2, 3]")
    with pytest.raises(DataConfigError, match="is not a COCO captions JSON"):
        datamodule(tmp_path, val_annotations=None, val_split=1).setup("fit")


def test_download_fetches_the_official_archives_that_are_absent(tmp_path, monkeypatch):
    fetched = []

    def fake_download(url: str, download_root: str) -> None:
        # Stands in for the network: writes what the archive would extract.
        fetched.append(url)
        root = Path(download_root)
        if url == coco_captions.ANNOTATIONS_URL:
            for split in ("train2017", "val2017"):
                write_coco_captions(root, f"annotations/captions_{split}.json", split, n_images=3)
        else:
            (root / Path(url).stem).mkdir()

    monkeypatch.setattr(coco_captions, "download_and_extract_archive", fake_download)
    data = CocoCaptionsDataModule(str(tmp_path), download=True, min_count=1)
    data.prepare_data()
    assert fetched == [coco_captions.ANNOTATIONS_URL]
    data.setup("fit")
    assert len(data.splits["train"]) == 3

    fetched.clear()
    for folder in ("train2017", "val2017"):
        for image in (tmp_path / folder).iterdir():
            image.unlink()
        (tmp_path / folder).rmdir()
    data.prepare_data()
    assert fetched == [coco_captions.IMAGES_URL.format(folder=f) for f in ("train2017", "val2017")]


def test_download_refuses_files_it_cannot_fetch(tmp_path):
    data = datamodule(tmp_path, download=True)
    with pytest.raises(DataNotFoundError, match="not an official COCO 2017 captions file"):
        data.prepare_data()
