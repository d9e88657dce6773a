"""scripts/gallery.py's own parts, without running a lesson: its table covers every config, pictures shrink
under the byte budget, TensorBoard images and the CIFAR-10 extract are read right, missing data skips."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gallery", REPO / "scripts" / "gallery.py")
assert spec is not None and spec.loader is not None
gallery = importlib.util.module_from_spec(spec)
sys.modules["gallery"] = gallery  # dataclasses look their module up there
spec.loader.exec_module(gallery)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_every_config_has_an_image_or_a_reason():
    shots = {shot.config for shot in gallery.SHOTS}
    assert sorted(shots | set(gallery.SKIPPED)) == gallery.configs()
    assert not shots & set(gallery.SKIPPED), "a config both skipped and shot"
    images = [shot.image for shot in gallery.SHOTS]
    assert len(images) == len(set(images)), "two shots write the same image"


def test_a_shot_sharing_a_run_shares_its_flags():
    # "visualize" reads the mnist_convnet run: one run for both, so their run keys must be equal.
    by_image = {shot.image: shot for shot in gallery.SHOTS}
    assert by_image["visualize"].run_key == by_image["mnist_convnet"].run_key


def test_shrink_keeps_a_photograph_under_the_budget():
    noise = torch.randint(0, 256, (600, 800, 3), dtype=torch.uint8).numpy()  # incompressible
    original = png(Image.fromarray(noise))
    assert len(original) > 1_000_000
    small = gallery.shrink(original, max_bytes=50_000)
    assert len(small) <= 50_000
    image = Image.open(io.BytesIO(small))
    assert image.format == "PNG" and 64 <= image.width <= gallery.MAX_WIDTH
    assert image.height == pytest.approx(image.width * 600 / 800, abs=1)


def test_shrink_leaves_a_small_figure_its_size_and_colours():
    figure = Image.new("RGB", (400, 300), "white")
    figure.paste((31, 119, 180), (50, 50, 150, 250))  # matplotlib's first colour
    small = Image.open(io.BytesIO(gallery.shrink(png(figure)))).convert("RGB")
    assert small.size == (400, 300)
    assert small.getpixel((100, 100)) == (31, 119, 180) and small.getpixel((300, 100)) == (255, 255, 255)


def test_shrink_refuses_an_impossible_budget():
    with pytest.raises(ValueError, match="does not fit in 100 bytes"):
        gallery.shrink(png(Image.effect_noise((200, 200), 100).convert("RGB")), max_bytes=100)


def test_tensorboard_image_is_the_last_one_of_the_tag(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run"))
    writer.add_image("weights/filters/conv_1", torch.zeros(3, 8, 16), global_step=0)
    writer.add_image("weights/filters/conv_1", torch.ones(3, 10, 20), global_step=5)
    writer.close()
    found = gallery.tensorboard_image(tmp_path, "weights/filters", since=0)
    image = Image.open(io.BytesIO(found)).convert("RGB")
    assert image.size == (20, 10) and image.getpixel((0, 0)) == (255, 255, 255)
    assert gallery.tensorboard_image(tmp_path, "train/inputs", since=0) is None


def test_cifar_extract_takes_the_first_images_of_each_class(tmp_path):
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", 4), ("test", 3)):
            for name in ("cat", "dog"):
                for i in range(count):
                    data = png(Image.new("RGB", (2, 2)))
                    info = tarfile.TarInfo(f"CIFAR-10-images/{split}/{name}/{i:04}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    folder = gallery.extract_cifar(archive, tmp_path / "out", train_per_class=2, test_per_class=1)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg")) == [
        "test/cat/0000.jpg",
        "test/dog/0000.jpg",
        "train/cat/0000.jpg",
        "train/cat/0001.jpg",
        "train/dog/0000.jpg",
        "train/dog/0001.jpg",
    ]


def test_missing_data_skips_with_a_reason(tmp_path, capsys):
    assert gallery.main(["--only", "mnist_convnet", "--out", str(tmp_path / "images")]) == 0
    assert "skipped mnist_convnet: needs MNIST/raw under --data" in capsys.readouterr().out
    shot = next(shot for shot in gallery.SHOTS if shot.image == "mnist_convnet")
    assert gallery.missing(shot, tmp_path) == f"{tmp_path / 'MNIST/raw'} missing"
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    assert gallery.missing(shot, tmp_path) is None
    assert list((tmp_path / "images").iterdir()) == []


def test_an_unknown_image_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        gallery.main(["--only", "mnist"])
    assert exit.value.code == 2
    assert "--only: no image named mnist; the images are linear_regression" in capsys.readouterr().err


def test_the_readme_shows_the_committed_images_and_each_is_small():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r'<img src="docs/images/([^"]+)\.png"', readme)
    assert shown, "the README shows no image of docs/images/"
    assert set(shown) <= {shot.image for shot in gallery.SHOTS}, "an image no shot of the gallery makes"
    committed = {path.stem: path.stat().st_size for path in gallery.IMAGES.glob("*.png")}
    assert sorted(committed) == sorted(shown), "docs/images/ and the README's images differ"
    assert max(committed.values()) <= gallery.MAX_BYTES
    assert sum(committed.values()) <= gallery.MAX_TOTAL
    for name in committed:
        assert Image.open(gallery.IMAGES / f"{name}.png").format == "PNG"
