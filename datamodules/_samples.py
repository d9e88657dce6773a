"""Tiny copies of the lessons' file-based datasets, written in their genuine formats, so that the real
reading code runs on them: the ``write_sample`` classmethods of the datamodules call these (tests, a
smoke run of an installed wheel), and ``tests/*_data.py`` re-export them for the tests' own cases.

- ``write_mnist``: torchvision's MNIST layout, ``<root>/MNIST/raw/`` with the four IDX files.
- ``write_cifar10``: ``<root>/cifar-10-batches-py/`` with pickled ``data_batch_1..5``, ``test_batch``
  and ``batches.meta``. Their md5 sums cannot match torchvision's constants, which ``CIFAR10`` checks:
  tests bypass that check (``cifar_integrity_bypassed`` in tests/conftest.py).
- ``write_image_folder``: ``<root>/<split>/<class>/<i>.jpg`` (or .png).
- ``write_topics_corpus``: plain text, lines drawn from two disjoint "topics" (``sun sky light ...``
  and ``fish sea boat ...``) plus common words; a skip-gram model learns in a few epochs that words of
  one topic are each other's neighbours.
- ``write_treebank``: the SST format, one PTB-bracketed binary tree a line with a label 0-4 on every
  node: random bracketings of random sentences over a tiny lexicon whose sentiment is known (a phrase's
  label follows the sum of its words' polarities). The lexicon holds the SST's awkward tokens: brackets
  written ``-LRB-``/``-RRB-``, an escaped slash, a non-breaking space inside a token, accented letters.
- ``write_faces``: the face-landmarks tutorial's ``face_landmarks.csv`` (header, then image name and 68
  x, y pairs per row) beside small JPEGs. ``face_template`` is a frontal face in the 68-point iBUG
  layout, mirror-symmetric about the image's vertical midline, so a test can check the flip's
  left/right relabelling without restating the permutation.
- ``write_coco_captions``: a captions JSON as ``pycocotools`` and ``torchvision.datasets.CocoCaptions``
  read it (``info``, ``images`` with ``id``, ``file_name``, ``width``, ``height``; ``annotations`` with
  ``id``, ``image_id``, ``caption``) and its JPEG images.

Every dataset is learnable in a few steps: an image shows a bright block placed by its label, a face is
drawn where its landmarks say, a COCO image has one coloured block whose colour and place its captions
name. A private module (its name starts with ``_``): imported only by whoever writes a sample.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.io import encode_jpeg, encode_png, write_file

# --- images: MNIST, CIFAR-10, class folders -----------------------------------------------------------------


def class_images(labels: np.ndarray, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 images ``(N, size, size, channels)``: noise plus a bright block placed by the label."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), size, size, channels), dtype=np.uint8)
    block = max(size // 5, 2)
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 9, 3)
        r, c = row * (size // 3), col * (size // 3)
        images[i, r : r + block, c : c + block, :] = 200 + int(label) * 5
    return images


def _idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """``n_train`` training and ``n_test`` test images in ``<root>/MNIST/raw/``; returns ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n)
        images = class_images(labels, 1, 28, seed + n)[..., 0]
        _idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30, seed: int = 0) -> Path:
    """Five training batches of ``per_batch`` images and a test batch of ``n_test`` in
    ``<root>/cifar-10-batches-py/``; returns ``root``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        labels = rng.integers(0, 10, size=n)
        images = class_images(labels, 3, 32, seed + k)  # N, H, W, C
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # CIFAR rows: all R, then G, then B
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_vis": 3072}, f)
    return Path(root)


def write_image_folder(
    root: Path,
    splits: dict[str, int] | None = None,
    classes: tuple[str, ...] = ("cat", "dog", "frog"),
    size: int = 16,
    fmt: str = "jpg",
    seed: int = 0,
) -> Path:
    """``splits`` maps split name to images per class, default ``{"train": 8, "test": 4}``."""
    splits = splits or {"train": 8, "test": 4}
    for s, (split, per_class) in enumerate(splits.items()):
        for label, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = class_images(np.full(per_class, label), 3, size, seed + 31 * s + label)
            for i, image in enumerate(images):
                chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
                data = encode_jpeg(chw, quality=95) if fmt == "jpg" else encode_png(chw)
                write_file(str(folder / f"{i}.{fmt}"), data)
    return Path(root)


# --- a plain-text corpus ------------------------------------------------------------------------------------


TOPICS = (
    ["sun", "sky", "light", "day", "cloud", "bright", "warm", "morning"],
    ["fish", "sea", "boat", "wave", "salt", "net", "shore", "deep"],
)
COMMON = ["the", "a", "and", "of", "is"]


def write_topics_corpus(path: Path, lines: int = 400, words_per_line: int = 12, seed: int = 0) -> Path:
    """Lines of one topic's words mixed with common words; Zipf-like word frequencies within a topic."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        topic = TOPICS[i % 2]
        words = []
        for _ in range(words_per_line):
            if rng.random() < 0.3:
                words.append(rng.choice(COMMON))
            else:
                # Earlier words of a topic are more frequent, so frequencies differ.
                words.append(topic[min(int(rng.expovariate(0.4)), len(topic) - 1)])
        out.append(" ".join(words).capitalize() + ".")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


# --- SST trees ----------------------------------------------------------------------------------------------


NBSP = "\xa0"
# word -> polarity
LEXICON = {
    "good": 2,
    "great": 2,
    "fun": 1,
    "café": 1,
    f"8{NBSP}1\\/2": 1,
    "bad": -2,
    "awful": -2,
    "dull": -1,
    "the": 0,
    "movie": 0,
    "-LRB-": 0,
    "-RRB-": 0,
    "is": 0,
    ",": 0,
}


def label(polarity: int) -> int:
    """Sum of polarities -> SST label: 0 (very negative) .. 4 (very positive)."""
    return 0 if polarity <= -2 else 1 if polarity == -1 else 2 if polarity == 0 else 3 if polarity == 1 else 4


def random_tree(rng: random.Random, words: list[str]) -> tuple[str, int]:
    """A random binary bracketing of ``words`` as PTB text, and its polarity."""
    if len(words) == 1:
        polarity = LEXICON[words[0]]
        return f"({label(polarity)} {words[0]})", polarity
    split = rng.randint(1, len(words) - 1)
    left, p_left = random_tree(rng, words[:split])
    right, p_right = random_tree(rng, words[split:])
    polarity = p_left + p_right
    return f"({label(polarity)} {left} {right})", polarity


def treebank_lines(n: int, seed: int, max_words: int = 7) -> list[str]:
    """``n`` random trees of 1 to ``max_words`` words, one PTB line each."""
    rng = random.Random(seed)
    vocabulary = sorted(LEXICON)
    return [random_tree(rng, rng.choices(vocabulary, k=rng.randint(1, max_words)))[0] for _ in range(n)]


def write_treebank(
    folder: Path, sizes: dict[str, int] | None = None, seed: int = 0, max_words: int = 7
) -> Path:
    """``folder`` with ``train.txt``, ``dev.txt`` and ``test.txt`` (``sizes`` trees each; a split of size
    0 is not written)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": 60, "dev": 20, "test": 20} if sizes is None else sizes
    for offset, (split, n) in enumerate(sizes.items()):
        if n:
            lines = treebank_lines(n, seed + offset, max_words)
            (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# --- face landmarks -----------------------------------------------------------------------------------------


def face_template() -> Tensor:
    """``(68, 2)`` points in [0, 1]: a frontal face centred at x = 0.5, symmetric about it."""
    points: list[tuple[float, float]] = []
    # jaw 0-16: a half ellipse from the subject's right ear (image left) under the chin (8) to the left
    points += [(0.5 + 0.3 * math.cos(a), 0.45 + 0.35 * math.sin(a)) for a in np.linspace(math.pi, 0, 17)]
    points += [(x, 0.32) for x in np.linspace(0.28, 0.44, 5)]  # right brow 17-21, outer to inner
    points += [(x, 0.32) for x in np.linspace(0.56, 0.72, 5)]  # left brow 22-26, inner to outer
    points += [(0.5, y) for y in np.linspace(0.40, 0.55, 4)]  # nose bridge 27-30
    points += [(x, 0.58) for x in np.linspace(0.44, 0.56, 5)]  # nostrils 31-35, right to left
    right_eye = [(0.30, 0.42), (0.34, 0.40), (0.38, 0.40), (0.42, 0.42), (0.38, 0.44), (0.34, 0.44)]
    points += right_eye  # 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid
    left_eye = [(1 - x, y) for x, y in right_eye]  # the mirror of each right-eye point...
    points += [left_eye[i] for i in (3, 2, 1, 0, 5, 4)]  # ...in iBUG order: 42 inner, 43-44, 45 outer, 46-47
    # lips: ellipses starting at the right corner (image left), along the upper lip, back along the lower
    outer, inner = math.pi + np.arange(12) * math.pi / 6, math.pi + np.arange(8) * math.pi / 4
    points += [(0.5 + 0.12 * math.cos(a), 0.68 + 0.05 * math.sin(a)) for a in outer]  # 48-59
    points += [(0.5 + 0.07 * math.cos(a), 0.68 + 0.02 * math.sin(a)) for a in inner]  # 60-67
    return torch.tensor(points, dtype=torch.float32)


# (width, height) of the test images: landscape, portrait and square, so letterboxing is exercised.
FACE_SIZES = [(48, 36), (36, 48), (40, 40), (50, 30)]


def draw_face(size: tuple[int, int], points: Tensor, rng: np.random.Generator) -> Image.Image:
    """A noisy background with a face oval, eyes and mouth at ``points`` (pixels)."""
    width, height = size
    noise = rng.integers(0, 70, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    jaw = points[:17]
    box = [jaw[:, 0].min(), points[17:27, 1].min(), jaw[:, 0].max(), jaw[:, 1].max()]
    draw.ellipse([float(v) for v in box], fill=(220, 180, 150))
    for eye in (points[36:42], points[42:48]):
        draw.polygon([tuple(p) for p in eye.tolist()], fill=(30, 30, 30))
    draw.polygon([tuple(p) for p in points[48:60].tolist()], fill=(150, 30, 40))
    return image


def write_faces(root: Path, count: int = 12, seed: int = 0) -> Path:
    """``count`` faces of varied sizes, places and scales; returns ``root`` (the ``data_dir``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    template = face_template()
    header = ["image_name"] + [f"part_{i}_{axis}" for i in range(68) for axis in ("x", "y")]
    rows = []
    for i in range(count):
        width, height = FACE_SIZES[i % len(FACE_SIZES)]
        scale = rng.uniform(0.5, 0.8) * min(width, height)
        offset = np.array([rng.uniform(0, width - scale), rng.uniform(0, height - scale)])
        points = template * scale + torch.tensor(offset, dtype=torch.float32)
        name = f"face_{i:02d}.jpg"
        draw_face((width, height), points, rng).save(root / name, quality=95)
        rows.append([name] + [f"{v:.4f}" for v in points.flatten().tolist()])
    with open(root / "face_landmarks.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return root


# --- COCO captions ------------------------------------------------------------------------------------------


COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (40, 60, 230), "yellow": (230, 220, 40)}
PLACES = ("top left", "top right", "bottom left", "bottom right", "middle")


def image_and_captions(i: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Image ``i`` (HWC uint8) and its two captions; 20 distinct (colour, place) pairs."""
    colour = list(COLOURS)[(i // len(PLACES)) % len(COLOURS)]
    place = PLACES[i % len(PLACES)]
    image = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
    half, quarter = size // 2, size // 4
    top, left = {
        "top left": (0, 0),
        "top right": (0, half),
        "bottom left": (half, 0),
        "bottom right": (half, half),
        "middle": (quarter, quarter),
    }[place]
    image[top : top + half, left : left + half] = COLOURS[colour]
    captions = [f"A {colour} square at the {place}.", f"The {place} of the picture is {colour}!"]
    return image, captions


def write_coco_json(path: Path, images: dict[int, tuple[str, list[str]]], size: int = 32) -> Path:
    """A captions JSON at ``path``: ``images`` maps image id to (file name, captions)."""
    entries, anns = [], []
    for image_id, (file_name, captions) in images.items():
        entries.append({"id": image_id, "file_name": file_name, "width": size, "height": size, "license": 1})
        for caption in captions:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "caption": caption})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"info": {"description": "test"}, "licenses": [], "images": entries, "annotations": anns}
    path.write_text(json.dumps(document))
    return path


def write_coco_captions(
    root: Path,
    annotations: str = "annotations/captions_train.json",
    images: str = "train",
    n_images: int = 10,
    missing: tuple[int, ...] = (),
    first_id: int = 1,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``n_images`` images (ids ``first_id``...) and their captions under ``root``; the images at
    the positions in ``missing`` are listed in the JSON but not written. Returns ``root``."""
    root = Path(root)
    (root / images).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    listed = {}
    for i in range(n_images):
        pixels, captions = image_and_captions(i, size, rng)
        file_name = f"{first_id + i:012d}.jpg"
        listed[first_id + i] = (file_name, captions)
        if i not in missing:
            Image.fromarray(pixels).save(root / images / file_name, quality=95)
    write_coco_json(root / annotations, listed, size)
    return root
