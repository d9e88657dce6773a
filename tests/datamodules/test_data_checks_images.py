"""The image datamodules' checks of what they read (one bad value in a file in its genuine format: the
error names the file, the sample or row, and the value) and of their arguments' domains (a value out of
its domain on the command line: exit status 2 and one line naming the flag)."""

from __future__ import annotations

import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import DataConfigError, DataNotFoundError
from datamodules import CIFAR10DataModule, FaceLandmarksDataModule, ImageFolderDataModule, MNISTDataModule
from datamodules.coco_captions import CocoCaptionsDataModule
from experiments.main import main
from tests.coco_data import write_coco_captions
from tests.conftest import QUIET, config
from tests.face_data import write_faces
from tests.image_data import write_image_folder, write_mnist


# --- MNIST ------------------------------------------------------------------------------------------------
def set_byte(path: Path, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] = value
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("in_memory", [True, False])
def test_an_mnist_label_out_of_range_names_the_file_sample_and_value(tmp_path, in_memory):
    root = write_mnist(tmp_path / "mnist")
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    set_byte(labels, 8 + 5, 11)  # after the 8-byte header: sample 5's label
    dm = MNISTDataModule(data_dir=str(root), val_split=16, in_memory=in_memory)
    with pytest.raises(DataConfigError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert message.startswith(f"{labels}: label 11 at sample 5 (counting from 0) is outside 0..9 ")
    assert "(10 classes in MNIST)" in message and "--data.download true" in message


def test_mnist_images_of_another_size_name_the_file_and_both_sizes(tmp_path):
    root = write_mnist(tmp_path / "mnist")
    images = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    pixels = np.zeros((32, 32, 32), dtype=np.uint8)  # a valid IDX file, of 32x32 images
    images.write_bytes(struct.pack(">IIII", 0x00000803, 32, 32, 32) + pixels.tobytes())
    with pytest.raises(DataConfigError) as error:
        MNISTDataModule(data_dir=str(root)).setup("test")
    assert str(error.value).startswith(
        f"{images}: images are 1 channel of 32x32 pixels, expected 1 channel of 28x28 pixels for MNIST"
    )


def test_mnist_labels_fewer_than_images_name_the_labels_file(tmp_path):
    root = write_mnist(tmp_path / "mnist")
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    values = labels.read_bytes()[8:-2]  # a valid IDX file of 30 labels for the 32 images
    labels.write_bytes(struct.pack(">II", 0x00000801, len(values)) + values)
    with pytest.raises(DataConfigError, match=r"t10k-labels-idx1-ubyte: 30 labels for the 32 images of"):
        MNISTDataModule(data_dir=str(root)).setup("test")


# --- CIFAR-10 (pickled batches) ---------------------------------------------------------------------------
def test_a_cifar_label_out_of_range_names_the_batch_sample_and_value(cifar_dir):
    batch = cifar_dir / "cifar-10-batches-py" / "test_batch"
    with open(batch, "rb") as file:
        entry = pickle.load(file)
    entry["labels"][3] = 10
    with open(batch, "wb") as file:
        pickle.dump(entry, file)
    with pytest.raises(DataConfigError) as error:
        CIFAR10DataModule(data_dir=str(cifar_dir)).setup("test")
    assert str(error.value).startswith(
        f"{batch}: label 10 at sample 3 (counting from 0) is outside 0..9 (10 classes in CIFAR-10)"
    )


# --- class folders and their cache ------------------------------------------------------------------------
def tamper_cache(folder: Path, edit) -> Path:
    (cache,) = (folder / ".cache").glob("train-*.pt")
    cached = torch.load(cache, weights_only=True)
    torch.save(edit(cached), cache)
    return cache


def with_label(cached: dict, index: int, label: int) -> dict:
    cached["labels"][index] = label
    return cached


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda c: with_label(c, 2, 7),
            r"label 7 at sample 2 \(counting from 0, train/cat/2.jpg\) is outside",
        ),
        (
            lambda c: with_label(c, 9, 2),
            r"label 2 at sample 9 \(counting from 0, train/dog/1.jpg\), whose fold",
        ),
        (
            lambda c: {**c, "images": c["images"][:, :1]},
            r"images are 1 channel of 16x16 pixels, expected 3 channels of 16x16 pixels for the class",
        ),
    ],
)
def test_a_cache_that_fails_the_check_is_named_and_decoded_again(tmp_path, edit, expected):
    folder = write_image_folder(tmp_path / "images")
    first = ImageFolderDataModule(data_dir=str(folder), val_split=6, image_size=16, seed=0)
    first.setup("fit")
    cache = tamper_cache(folder, edit)
    again = ImageFolderDataModule(data_dir=str(folder), val_split=6, image_size=16, seed=0)
    with pytest.warns(UserWarning, match=rf"^{cache}: {expected}.*decoding the images again"):
        again.setup("fit")
    assert torch.equal(again.splits["train"][0], first.splits["train"][0])
    assert torch.equal(again.splits["train"][1], first.splits["train"][1])
    assert torch.load(cache, weights_only=True)["labels"].tolist() == [0] * 8 + [1] * 8 + [2] * 8


# --- face landmarks ---------------------------------------------------------------------------------------
def set_csv_value(csv: Path, line: int, column: int, value: str) -> None:
    """Cell ``column`` (from 1) of ``line`` (from 1, the header is line 1) of ``csv`` becomes ``value``."""
    lines = csv.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column - 1] = value
    lines[line - 1] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")


def faces_module(folder: Path) -> FaceLandmarksDataModule:
    return FaceLandmarksDataModule(data_dir=str(folder), image_size=32, crop_size=28, val_split=2)


def test_a_landmark_far_outside_its_image_names_the_line_point_and_value(tmp_path):
    folder = write_faces(tmp_path / "faces", count=6)
    csv = folder / "face_landmarks.csv"
    set_csv_value(csv, line=3, column=2 + 2 * 5, value="1000")  # the x of point 5 of face_01 (36x48)
    with pytest.raises(DataConfigError) as error:
        faces_module(folder).setup("fit")
    message = str(error.value)
    assert message.startswith(f"{csv} line 3: point 5 (x=1000, y=")
    assert "outside the 36x48 image face_01.jpg by more than 10% of its size" in message


def test_a_landmark_just_outside_its_image_is_accepted(tmp_path):
    # Annotators place a chin or an ear cut off by the frame: the tutorial's own CSV has some.
    folder = write_faces(tmp_path / "faces", count=6)
    set_csv_value(folder / "face_landmarks.csv", line=3, column=2 + 2 * 8 + 1, value="50.5")  # 48 high
    dm = faces_module(folder)
    dm.setup("fit")
    assert dm.faces().points_read[1, 8, 1] == 50.5


def test_a_missing_face_image_names_the_csv_line(tmp_path):
    folder = write_faces(tmp_path / "faces", count=6)
    (folder / "face_03.jpg").unlink()
    with pytest.raises(DataNotFoundError) as error:
        faces_module(folder).setup("fit")
    csv = folder / "face_landmarks.csv"
    assert f"image {folder / 'face_03.jpg'} not found ({csv} line 5 names it)" in str(error.value)


# --- COCO captions ------------------------------------------------------------------------------------------
def coco_with(tmp_path: Path, edit) -> tuple[Path, dict]:
    """A COCO folder of 4 training images whose JSON ``edit`` changes in place."""
    root = write_coco_captions(tmp_path / "coco", "annotations/captions_train2017.json", "train2017", 4)
    path = root / "annotations" / "captions_train2017.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return path, document


def coco_module(annotations: Path) -> CocoCaptionsDataModule:
    root = annotations.parent.parent
    return CocoCaptionsDataModule(str(root), val_annotations=None, val_split=1, min_count=1, image_size=16)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["annotations"][5].update(image_id=999),
            "annotations[5] (id 6) is for image_id 999, which is not among the file's 4 images",
        ),
        (
            lambda d: d["annotations"][3].update(caption=" "),
            "annotations[3] (id 4, image_id 2) has caption ' '",
        ),
        (
            lambda d: d["annotations"][0].update(caption=None),
            "annotations[0] (id 1, image_id 1) has caption None",
        ),
        (lambda d: d["images"][2].update(id=1), "images[2] has id 1, as an earlier image has"),
    ],
)
def test_a_bad_coco_entry_names_the_file_entry_and_value(tmp_path, edit, expected):
    annotations, _ = coco_with(tmp_path, edit)
    with pytest.raises(DataConfigError) as error:
        coco_module(annotations).setup("fit")
    assert str(error.value).startswith(f"{annotations}: {expected}")


# --- the arguments' domains -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "flag"),
    [
        (lambda r: MNISTDataModule(data_dir=str(r), val_split=2.5), "--data.val_split=2.5"),
        (lambda r: CIFAR10DataModule(data_dir=str(r), random_crop_padding=-1), "--data.random_crop_padding"),
        (lambda r: FaceLandmarksDataModule(data_dir=str(r), image_size=9, crop_size=10), "--data.crop_size"),
        (lambda r: FaceLandmarksDataModule(data_dir=str(r), rotation=200), "--data.rotation=200"),
        (lambda r: FaceLandmarksDataModule(data_dir=str(r), csv_file="."), "--data.csv_file"),
        (lambda r: CocoCaptionsDataModule(str(r), val_split=1.5), "--data.val_split=1.5"),
        (lambda r: CocoCaptionsDataModule(str(r), mean_std=((0, 0, 0), (1, 0, 1))), "--data.mean_std"),
    ],
)
def test_a_python_caller_gets_the_domain_checks_too(tmp_path, build, flag):
    with pytest.raises(DataConfigError, match=rf"^{flag}"):
        build(tmp_path)


def test_image_folder_mean_std_must_give_one_per_channel(tmp_path):
    folder = write_image_folder(tmp_path / "images")
    with pytest.raises(DataConfigError, match=r"^--data.mean_std: 3 means and 3 stds for 1-channel images"):
        ImageFolderDataModule(data_dir=str(folder), grayscale=True, mean_std=((0.5,) * 3, (0.2,) * 3))


FOLDER = ["--data", "ImageFolderDataModule", "--data.data_dir=absent", "--model.num_classes=3"]
#: (lesson, flag=value): each value outside the flag's domain; the parser refuses it before anything runs.
OUT_OF_DOMAIN = [
    ("mnist_convnet", "--data.val_split=2.5"),
    ("mnist_convnet", "--data.num_workers=-1"),
    ("mnist_convnet", "--data.data_dir={file}"),
    ("simple_cnn", "--data.random_crop_padding=-1"),
    ("simple_cnn", *FOLDER, "--data.image_size=0"),
    ("simple_cnn", *FOLDER, "--data.mean_std=[[0.5,0.5,0.5],[0.2,0,0.2]]"),
    ("face_landmarks", "--data.translate=1.5"),
    ("face_landmarks", "--data.scale_range=[0,1]"),
    ("face_landmarks", "--data.rotation=-5"),
    ("face_landmarks", "--data.predict_dir=absent"),
    ("coco_captions", "--data.min_count=0"),
    ("coco_captions", "--data.val_split=1.5"),
]


@pytest.mark.parametrize(
    "case", OUT_OF_DOMAIN, ids=[f"{case[0]}{case[-1].split('=')[0]}" for case in OUT_OF_DOMAIN]
)
def test_an_argument_out_of_its_domain_is_one_line_naming_the_flag(case, in_tmp, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["experiments"])  # as a shell runs it: no pytest arguments
    (in_tmp / "a_file").write_text("not a folder")
    lesson, *args = case
    args = [arg.format(file=in_tmp / "a_file") for arg in args]
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config(lesson), *args, *QUIET])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    flag = args[-1].split("=")[0]
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}:"), lines
    assert not (in_tmp / "lightning_logs").exists()
