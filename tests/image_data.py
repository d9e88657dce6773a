"""Tiny image datasets written in their genuine formats, so the real loading code runs in tests.

- ``write_mnist``: torchvision's MNIST layout, ``<root>/MNIST/raw/`` with the four IDX files.
- ``write_cifar10``: ``<root>/cifar-10-batches-py/`` with pickled ``data_batch_1..5``, ``test_batch``
  and ``batches.meta``. Their md5 sums cannot match torchvision's constants; tests bypass that check
  with ``cifar_integrity_bypassed``.
- ``write_image_folder``: ``<root>/<split>/<class>/<i>.jpg`` (or .png).

Images are random but class-dependent (a bright block whose place depends on the label), so a network
can learn them in a few steps.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg, encode_png, write_file


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
