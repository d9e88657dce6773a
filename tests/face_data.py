"""A tiny face-landmarks dataset in the tutorial's genuine format (``face_landmarks.csv`` beside small
JPEGs), and ``read_points`` to read its CSV back. The writers live in ``datamodules/_samples.py``, beside
the datamodules' ``write_sample``; this module keeps the name the tests import them by."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor

from datamodules._samples import FACE_SIZES, draw_face, face_template, write_faces

__all__ = ["FACE_SIZES", "draw_face", "face_template", "read_points", "write_faces"]


def read_points(root: Path) -> dict[str, Tensor]:
    """The CSV's points per image name, as written (4 decimals)."""
    with open(Path(root) / "face_landmarks.csv", newline="") as file:
        rows = list(csv.reader(file))[1:]
    return {row[0]: torch.tensor([float(v) for v in row[1:]]).view(68, 2) for row in rows}
