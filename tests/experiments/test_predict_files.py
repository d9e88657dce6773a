"""``predict --data.predict_path`` on the user's own files, through the real command: image files of other
sizes and modes than the lessons' data (PNG, JPEG, GIF; RGB, grey, RGBA, palette, 16-bit), given as a
folder, a glob or one file, and a CSV of houses; ``predictions.csv`` read back (a row per input, named,
nothing to decode); and the mistakes (a file that is not an image, a glob matching nothing, a CSV
missing a column, a lesson that reads no files) as one ``error:`` line.

The models are untrained (predict without a checkpoint): what is checked is the way in and the way out;
the README's "Predicting on your own files" gives what a trained MNIST model reads from a drawn digit.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from core.callbacks import prediction_rows
from core.distributed import run_dir
from core.errors import DataConfigError, DataNotFoundError
from datamodules import CIFAR10DataModule, CocoCaptionsDataModule, FaceLandmarksDataModule, MNISTDataModule
from datamodules.images import read_image
from datamodules.mnist import mnist_digit
from experiments.main import main
from modules import SimpleCNN
from tests.conftest import QUIET, config
from tests.tabular_data import linear_table, write_rows

CPU = "--trainer.accelerator=cpu"


def table(run: Path) -> tuple[list[str], list[list[str]]]:
    """predictions.csv of a predict run folder: header and rows."""
    with open(run / "predictions.csv", newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    return header, rows


def predict(cli, *args: str) -> Path:
    """Run ``predict`` with ``args``; the folder it wrote its predictions in."""
    folder = run_dir(cli("predict", *args, CPU).trainer)
    assert folder is not None and (folder / "predictions.pt").is_file()
    return folder


def digit_picture(size: tuple[int, int], mode: str, ink: int = 0, paper: int = 255) -> Image.Image:
    """A thick "7" drawn dark on light paper, as a person draws one, in ``mode``."""
    width, height = size
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    stroke = max(2, width // 12)
    draw.line([(width * 0.3, height * 0.2), (width * 0.7, height * 0.2)], fill=ink, width=stroke)
    draw.line([(width * 0.7, height * 0.2), (width * 0.45, height * 0.85)], fill=ink, width=stroke)
    return image.convert(mode)


def write_pictures(folder: Path) -> dict[str, tuple[int, int]]:
    """Pictures of other sizes and modes than MNIST's 28x28 grey: file name -> (width, height)."""
    folder.mkdir(parents=True)
    digit_picture((200, 200), "RGB").save(folder / "a_rgb.png")
    digit_picture((50, 40), "L").save(folder / "b_grey.jpg", quality=90)
    rgba = digit_picture((64, 48), "RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255))
    rgba.save(folder / "c_rgba.png")
    digit_picture((30, 30), "P").save(folder / "d_palette.gif")
    sixteen = np.asarray(digit_picture((40, 40), "L"), dtype=np.uint16) * 257
    Image.fromarray(sixteen).save(folder / "e_16bit.png")
    return {"a_rgb.png": (200, 200), "b_grey.jpg": (50, 40), "c_rgba.png": (64, 48),
            "d_palette.gif": (30, 30), "e_16bit.png": (40, 40)}  # fmt: skip


def check_classes(
    header: list[str], rows: list[list[str]], names: list[str], classes: tuple[str, ...]
) -> None:
    assert header == ["input", "class", "probability", "class_2", "probability_2", "class_3", "probability_3"]
    assert [row[0] for row in rows] == names
    for row in rows:
        assert {row[1], row[3], row[5]} <= set(classes) and len({row[1], row[3], row[5]}) == 3
        probabilities = [float(row[2]), float(row[4]), float(row[6])]
        assert all(0 <= p <= 1 for p in probabilities) and probabilities == sorted(
            probabilities, reverse=True
        )
        assert sum(probabilities) <= 1.0005


# --- reading and converting images ------------------------------------------------------------------------
def test_every_mode_reads_as_the_same_picture(tmp_path: Path) -> None:
    sizes = write_pictures(tmp_path / "in")
    for name, (width, height) in sizes.items():
        grey = read_image(tmp_path / "in" / name, "L")
        colour = read_image(tmp_path / "in" / name, "RGB")
        assert grey.shape == (1, height, width) and colour.shape == (3, height, width), name
        assert grey.dtype == torch.uint8
        # Light paper, dark ink, in every mode (16-bit scaled, not clipped to white; no alpha made black).
        assert grey[0, 0, 0] > 200 and grey.min() < 60, name
    transparent = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # black but transparent: paper shows
    transparent.save(tmp_path / "clear.png")
    assert read_image(tmp_path / "clear.png", "L").min() == 255


def test_a_digit_is_made_as_mnist_made_its_images() -> None:
    # An MNIST-like digit: a bright 20-tall, 12-wide stroke pattern centred in 28x28 on black ...
    digit = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digit[0, 4:24, 8:20] = 255
    digit[0, 8:20, 12:16] = 0
    # ... drawn five times larger, dark on light, off-centre in a 200x160 picture.
    picture = torch.full((1, 160, 200), 250, dtype=torch.uint8)
    picture[:, 10:110, 20:80] = 255 - digit[:, 4:24, 8:20].repeat_interleave(5, 1).repeat_interleave(5, 2)
    made = mnist_digit(picture)
    assert made.shape == (1, 28, 28) and made.dtype == torch.uint8
    assert made[0, 0, 0] == 0 and made.max() == 255  # inverted: light ink on black, full range
    rows = made[0].gt(64).any(dim=1).nonzero()[:, 0]
    columns = made[0].gt(64).any(dim=0).nonzero()[:, 0]
    assert rows.max() - rows.min() + 1 == 20 and columns.max() - columns.min() + 1 == 12  # 20-pixel box
    assert (made.float() - digit.float()).abs().mean() < 8  # back where MNIST has it, up to antialiasing
    light_on_dark = 255 - picture  # the other way round is not inverted: the same digit comes out
    assert (mnist_digit(light_on_dark).float() - made.float()).abs().max() <= 1


# --- the table ---------------------------------------------------------------------------------------------
class Named:
    """A datamodule as the writer sees one: names for the inputs, and the classes."""

    predict_names = ("a.png", "b.png")
    classes = ("cat", "dog", "frog")


def test_the_rows_name_each_input_and_decode_the_prediction() -> None:
    probabilities = torch.tensor([[0.1, 0.7, 0.2, 0.0], [0.5, 0.15, 0.05, 0.3]])
    rows = prediction_rows(Named(), SimpleCNN(num_classes=4), probabilities)
    # A fourth output the data has no class for is named by its index.
    assert rows == [
        ["input", "class", "probability", "class_2", "probability_2", "class_3", "probability_3"],
        ["a.png", "dog", "0.7000", "frog", "0.2000", "cat", "0.1000"],
        ["b.png", "cat", "0.5000", "3", "0.3000", "dog", "0.1500"],
    ]
    # Without names, inputs are numbered; a module without a table gets none.
    assert [row[0] for row in prediction_rows(None, SimpleCNN(num_classes=4), probabilities)] == [
        "input",
        0,
        1,
    ]
    assert prediction_rows(Named(), torch.nn.Linear(1, 1), probabilities) is None


# --- the image lessons through the command --------------------------------------------------------------
def test_mnist_predicts_a_folder_and_a_file(cli, in_tmp: Path, mnist_dir: Path) -> None:
    sizes = write_pictures(in_tmp / "digits")
    args = ["--config", config("logistic_regression"), f"--data.data_dir={mnist_dir}"]
    for given, expected in [("digits", sorted(sizes)), ("digits/b_grey.jpg", ["digits/b_grey.jpg"])]:
        run = predict(cli, *args, f"--data.predict_path={given}")
        header, rows = table(run)
        check_classes(header, rows, expected, MNISTDataModule.classes)
        probabilities = torch.load(run / "predictions.pt")
        assert probabilities.shape == (len(expected), 10)
        torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(len(expected)))
        top = probabilities.max(dim=1).values
        assert [float(row[2]) for row in rows] == pytest.approx(top.tolist(), abs=5e-5)


def test_a_glob_and_the_mistakes_in_a_path(tmp_path: Path, mnist_dir: Path) -> None:
    write_pictures(tmp_path / "digits")

    def read(given: str) -> MNISTDataModule:
        data = MNISTDataModule(str(mnist_dir), predict_path=given)
        data.setup("predict")
        return data

    matched = read(str(tmp_path / "digits" / "*.png"))
    assert matched.predict_names == [
        str(tmp_path / "digits" / n) for n in ("a_rgb.png", "c_rgba.png", "e_16bit.png")
    ]
    images, labels = matched.splits["predict"]
    assert images.shape == (3, 1, 28, 28) and images.dtype == torch.uint8 and labels.tolist() == [-1] * 3
    nested = tmp_path / "digits" / "more" / "deeper"
    nested.mkdir(parents=True)
    (tmp_path / "digits" / "a_rgb.png").rename(nested / "a_rgb.png")
    assert read(str(tmp_path / "digits" / "**" / "a_*.png")).predict_names == [str(nested / "a_rgb.png")]
    with pytest.raises(DataNotFoundError, match=r"predict_path=.*\*\.bmp: the pattern matches no file$"):
        read(str(tmp_path / "digits" / "*.bmp"))
    with pytest.raises(
        DataNotFoundError, match=r"predict_path=.*nowhere: no such file or folder; give an image"
    ):
        read(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"the folder holds no files"):
        read(str(tmp_path / "empty"))
    good = (tmp_path / "digits" / "c_rgba.png").read_bytes()
    (tmp_path / "digits" / "c_rgba.png").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataConfigError, match=r"predict_path: .*c_rgba.png is not an image that can be read"):
        read(str(tmp_path / "digits"))


def test_cifar_and_an_image_folder_read_colour_pictures_of_any_size(
    cli, in_tmp: Path, cifar_dir: Path, image_folder_dir: Path
) -> None:
    write_pictures(in_tmp / "pictures")
    run = predict(cli, "--config", config("simple_cnn"), f"--data.data_dir={cifar_dir}",
                  f"--data.predict_path={in_tmp / 'pictures'}")  # fmt: skip
    header, rows = table(run)
    check_classes(
        header, rows, sorted(p.name for p in (in_tmp / "pictures").iterdir()), CIFAR10DataModule.classes
    )
    # The class-per-folder images are 16x16; SimpleCNN takes 32x32: image_size resizes both alike.
    run = predict(cli, "--config", config("simple_cnn"), "--data", "ImageFolderDataModule",
                  f"--data.data_dir={image_folder_dir}", "--data.image_size=32", "--model.num_classes=3",
                  f"--data.predict_path={in_tmp / 'pictures' / 'c_rgba.png'}")  # fmt: skip
    header, rows = table(run)
    check_classes(header, rows, [str(in_tmp / "pictures" / "c_rgba.png")], ("cat", "dog", "frog"))


def test_faces_landmarks_are_in_each_files_pixels(cli, in_tmp: Path) -> None:
    data = FaceLandmarksDataModule.write_sample(in_tmp / "faces")
    photos = in_tmp / "photos"
    photos.mkdir()
    first = sorted(Path(data["data_dir"]).glob("*.jpg"))[0]
    with Image.open(first) as face:
        face.resize((90, 60)).save(photos / "wide.png")
        face.convert("L").resize((40, 70)).save(photos / "tall_grey.jpg")
    small = ["--data.image_size=32", "--data.crop_size=28", "--data.val_split=4", "--model.width=8"]
    run = predict(cli, "--config", config("face_landmarks"), f"--data.data_dir={data['data_dir']}", *small,
                  f"--data.predict_path={photos}")  # fmt: skip
    header, rows = table(run)
    assert header[:3] == ["image_name", "part_0_x", "part_0_y"] and len(header) == 1 + 68 * 2
    assert [row[0] for row in rows] == ["tall_grey.jpg", "wide.png"]
    points = torch.load(run / "predictions.pt")
    written = torch.tensor([[float(v) for v in row[1:]] for row in rows]).view(2, 68, 2)
    torch.testing.assert_close(written, points, atol=0.006, rtol=0)
    # Soft-argmax puts every point inside the centre crop, which lies inside each file's picture.
    for face, (width, height) in zip(points, [(40, 70), (90, 60)], strict=True):
        assert face[:, 0].min() >= 0 and face[:, 0].max() <= width
        assert face[:, 1].min() >= 0 and face[:, 1].max() <= height


def test_coco_captions_the_users_pictures(cli, in_tmp: Path) -> None:
    data = CocoCaptionsDataModule.write_sample(in_tmp / "coco")
    write_pictures(in_tmp / "pictures")
    run = predict(cli, "--config", config("coco_captions"), f"--data.data_dir={data['data_dir']}",
                  "--data.image_size=32", "--data.min_count=1", "--data.num_workers=0",
                  "--model.embed_dim=32", "--model.hidden_dim=64", "--model.max_caption_length=5",
                  f"--data.predict_path={in_tmp / 'pictures' / '*.png'}")  # fmt: skip
    header, rows = table(run)
    expected = [str(in_tmp / "pictures" / n) for n in ("a_rgb.png", "c_rgba.png", "e_16bit.png")]
    assert header == ["input", "caption"] and [row[0] for row in rows] == expected
    assert [row[1] for row in rows] == torch.load(run / "predictions.pt")


def test_boston_names_each_row_and_the_target(cli, in_tmp: Path) -> None:
    columns = [
        "CRIM",
        "ZN",
        "INDUS",
        "CHAS",
        "NOX",
        "RM",
        "AGE",
        "DIS",
        "RAD",
        "TAX",
        "PTRATIO",
        "B",
        "LSTAT",
    ]
    houses = in_tmp / "houses.csv"
    houses.write_text(",".join(["name", *reversed(columns)]) + "\n" + "".join(
        f"house {i}," + ",".join(str(0.5 + i + j) for j in range(13)) + "\n" for i in range(3)))  # fmt: skip
    run = predict(cli, "--config", config("boston_housing"), f"--data.predict_path={houses}")
    header, rows = table(run)
    assert header == ["input", "MEDV"]
    assert [row[0] for row in rows] == ["houses.csv line 2", "houses.csv line 3", "houses.csv line 4"]
    torch.testing.assert_close(
        torch.tensor([float(row[1]) for row in rows]), torch.load(run / "predictions.pt")[:, 0]
    )


# --- mistakes: one line, exit 2 ---------------------------------------------------------------------------
def error_line(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["experiments"])
    with pytest.raises(SystemExit) as stop:
        main([*args, *QUIET])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_inputs_are_one_error_line(
    in_tmp: Path, mnist_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnist = ["predict", "--config", config("logistic_regression"), f"--data.data_dir={mnist_dir}", CPU]
    write_pictures(in_tmp / "digits")
    (in_tmp / "digits" / "notes.txt").write_text("my digits\n")
    (in_tmp / "digits" / ".DS_Store").write_bytes(b"\0\1")  # hidden: skipped
    err = error_line([*mnist, "--data.predict_path=digits"], capsys, monkeypatch)
    assert "--data.predict_path: digits/notes.txt is not an image that can be read" in err
    houses = write_rows(in_tmp / "houses.csv", linear_table(3))  # columns a, b, c, price: not Boston's
    err = error_line(["predict", "--config", config("boston_housing"), CPU, f"--data.predict_path={houses}"],
                     capsys, monkeypatch)  # fmt: skip
    assert f"{houses} has no column 'CRIM'" in err
    # A lesson whose data is not files says what it predicts on.
    err = error_line(
        ["predict", "--config", config("sine_rnn"), "--data.predict_path=digits"], capsys, monkeypatch
    )
    assert "--data.predict_path: SineWaveDataModule has no argument 'predict_path'" in err
    assert not (in_tmp / "lightning_logs").exists()  # every mistake was found before a run folder was made
