"""A tiny COCO captions dataset in the genuine format: a captions JSON and its JPEG images.

The JSON has what ``pycocotools`` and ``torchvision.datasets.CocoCaptions`` read: ``info``, ``images``
(``id``, ``file_name``, ``width``, ``height``) and ``annotations`` (``id``, ``image_id``, ``caption``).
Each image is a dark square with one coloured block whose colour and place its captions name, so a
small captioning model can learn them in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

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
