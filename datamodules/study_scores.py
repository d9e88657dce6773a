"""The toy data of the from-scratch lesson (Convents: 从Scratch训练): hours of study and sleep -> test score.

The chapter shows the network but not its data; its code is that of the "neural network from scratch
in PyTorch" tutorial it was translated from, which trains on three students, ``X = [[2, 9], [1, 5],
[3, 6]]`` (hours studied, hours slept) with scores ``y = [92, 100, 89]``, and predicts a student who
studied 4 hours and slept 8. Inputs are scaled by the training columns' maxima (into [0, 1]) and
scores by the maximum score, 100, so that the sigmoid output can reach them.

Departure from that code: it scaled the student to predict by that student's own maximum (``[4, 8] /
8``), not the training data's, so its input meant something other than the training inputs did; here
every input is divided by the training maxima (4 hours of study becomes 4/3: beyond the data seen).

There are three students and no held-out data, as in the tutorial: ``val`` and ``test`` serve the
training rows, so their loss measures the fit, not generalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from core.domains import NonNegativeFloat, PositiveFloat, PositiveInt, Seed
from core.errors import DataConfigError
from datamodules.tensors import InMemoryDataModule, check_tensors

SEED_HOURS = [[2.0, 9.0], [1.0, 5.0], [3.0, 6.0]]
SEED_SCORES = [92.0, 100.0, 89.0]
SEED_PREDICT = [[4.0, 8.0]]


class StudyScoresDataModule(InMemoryDataModule):
    """Scaled ``(hours, score)`` pairs, shapes ``(n, 2)`` and ``(n, 1)``, as one full batch by default.

    ``predict`` serves ``predict_hours``, scaled like the training inputs; multiply a prediction by
    ``max_score`` to read it as a score.

    Args:
        hours: One row per student: hours studied, hours slept (or any finite, non-negative features; each
            column with a positive value); None for the tutorial's three students.
        scores: One test score per student, in ``0..max_score``; None for the tutorial's.
        predict_hours: Students whose score ``predict`` estimates (finite, non-negative, as many values a
            row as ``hours``); None for the tutorial's ``[[4, 8]]``.
        max_score: The highest possible score (finite, > 0); scores are divided by it.
        batch_size: Students per batch (>= 1); None for all of them (the tutorial's full-batch updates).
        seed: Seeds the training shuffle (0 to 2**32 - 1; it matters only with batches smaller than the data).
    """

    #: What ``predict`` runs on, for the message that answers ``--data.predict_path`` (this data is made
    #: or named by its own arguments, not read from the user's files).
    predicts_on: ClassVar[str] = "the students of --data.predict_hours (hours studied, hours slept)"

    # Three students, one full batch per update: every process of a data-parallel run takes all of them
    # and makes the same update, which is the one-process update (a shard would pad 3 rows to 4).
    shard = False

    def __init__(
        self,
        hours: list[list[NonNegativeFloat]] | None = None,
        scores: list[NonNegativeFloat] | None = None,
        predict_hours: list[list[NonNegativeFloat]] | None = None,
        max_score: PositiveFloat = 100.0,
        batch_size: PositiveInt | None = None,
        seed: Seed = 0,
    ) -> None:
        hours = SEED_HOURS if hours is None else hours
        scores = SEED_SCORES if scores is None else scores
        predict_hours = SEED_PREDICT if predict_hours is None else predict_hours
        if not hours or len(hours) != len(scores):
            raise DataConfigError(
                f"--data.hours and --data.scores need one entry per student, got {len(hours)} rows of "
                f"hours and {len(scores)} scores"
            )
        widths = {len(row) for row in [*hours, *predict_hours]}
        if len(widths) != 1:
            raise DataConfigError(
                f"every row of --data.hours and --data.predict_hours needs as many values, got {widths}"
            )
        if not 0 < max_score < float("inf"):
            raise DataConfigError(f"--data.max_score must be positive and finite, got {max_score}")
        super().__init__(batch_size=len(hours) if batch_size is None else batch_size, seed=seed)
        x = torch.tensor(hours, dtype=torch.float32)
        # As given, for check_data: the scaled tensors no longer show the values a user typed.
        self.given = {
            "hours": x,
            "scores": torch.tensor(scores, dtype=torch.float32),
            "predict_hours": torch.tensor(predict_hours, dtype=torch.float32),
        }
        # The tutorial's torch.max(X, 0): each column's largest value in the training data.
        self.hours_max = x.max(dim=0).values
        if (self.hours_max <= 0).any():
            raise DataConfigError(
                f"every column of --data.hours needs a positive value to scale by, got {hours}"
            )
        self.max_score = max_score
        self.x = x / self.hours_max
        self.y = torch.tensor(scores, dtype=torch.float32).unsqueeze(1) / max_score
        self.x_predict = torch.tensor(predict_hours, dtype=torch.float32) / self.hours_max

    def check_data(self, split: str, tensors: tuple[Tensor, ...]) -> None:
        """The values given for ``split`` (``hours`` and ``scores``, or ``predict_hours``): finite, hours
        not negative, scores within ``0..max_score`` (a sigmoid output reaches no other), then the scaled
        tensors (``InMemoryDataModule.check_data``)."""
        names = ("predict_hours",) if split == "predict" else ("hours", "scores")
        for name in names:
            given = self.given[name]
            check_tensors(f"--data.{name}", (given,), (name,))
            low = given < 0
            high = given > self.max_score if name == "scores" else torch.zeros_like(low)
            if bool((low | high).any()):
                bad = (low | high).reshape(len(given), -1).any(dim=1)
                row = int(bad.nonzero()[0])
                expected = (
                    f"a score within 0..--data.max_score={self.max_score:g}"
                    if name == "scores"
                    else "no negative value"
                )
                raise DataConfigError(
                    f"--data.{name}: entry {row} (counting from 0) holds {given[row].tolist()}; expected "
                    f"{expected}"
                )
        super().check_data(split, tensors)

    def make_split(self, split: str) -> tuple[Tensor, ...]:
        if split == "predict":
            return (self.x_predict,)
        return self.x, self.y

    # --- for python -m experiments export -------------------------------------------------------------
    def export_batch(self, count: int) -> Tensor:
        """Up to ``count`` students as a user gives them to an exported model: hours as typed (the
        training rows; there is no held-out data), not scaled."""
        return self.given["hours"][:count]

    def export_preprocess(self) -> Callable[[Tensor], Tensor]:
        """Hours to the network's input: divided by the training columns' maxima, as the splits are."""
        hours_max = self.hours_max
        return lambda hours: hours / hours_max

    def export_postprocess(self) -> Callable[[Tensor], Tensor]:
        """The network's sigmoid output, a fraction of ``max_score``, to a score."""
        max_score = self.max_score
        return lambda fraction: fraction * max_score

    def export_description(self) -> dict[str, object]:
        """The exported input's and output's names and meanings (sidecar JSON)."""
        return {
            "input": {"name": "hours", "meaning": "one row a student: hours studied, hours slept"},
            "output": {"name": "score", "meaning": f"the predicted test score, 0..{self.max_score:g}"},
        }
