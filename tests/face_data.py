"""A tiny face-landmarks dataset in the tutorial's genuine format: ``face_landmarks.csv`` (header, then
image name and 68 x, y pairs per row) beside small JPEGs written with PIL.

``face_template`` is a frontal face in the 68-point iBUG layout, built from geometry (a jaw arc, brows,
nose, eyes, lip ellipses) and mirror-symmetric about the image's vertical midline, so a test can check
the flip's left/right relabelling without restating the permutation. Each image shows the face (a
bright oval, dark eyes and mouth) where its landmarks say, so a network can learn them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor


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
SIZES = [(48, 36), (36, 48), (40, 40), (50, 30)]


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
        width, height = SIZES[i % len(SIZES)]
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


def read_points(root: Path) -> dict[str, Tensor]:
    """The CSV's points per image name, as written (4 decimals)."""
    with open(Path(root) / "face_landmarks.csv", newline="") as file:
        rows = list(csv.reader(file))[1:]
    return {row[0]: torch.tensor([float(v) for v in row[1:]]).view(68, 2) for row in rows}
