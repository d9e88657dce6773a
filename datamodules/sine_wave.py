"""The sine wave of the recurrent-network lesson (递归神经网络): 21 points of sin(t), t in [2, 10].

The tutorial's input sequence is the first 20 values and its target the last 20 (each point predicts the
next). The whole sequence is one batch: the lesson trains through it point by point inside one
training step, so every split serves the same single batch ``(x, y)`` of shape ``(20, 1)`` each.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from core.domains import FiniteFloat, PositiveInt
from core.errors import DataConfigError
from datamodules.tensors import InMemoryDataModule, check_memory


class SineWaveDataModule(InMemoryDataModule):
    """One sequence ``x = sin(t[:-1])``, ``y = sin(t[1:])`` with ``t = linspace(t_start, t_end, n_points)``.

    Args:
        n_points: Points of the wave (the tutorial's ``seq_length + 1``; >= 2: an input and its target).
        t_start: First time step (a finite number).
        t_end: Last time step (a finite number above ``t_start``).
    """

    #: What ``predict`` runs on, for the message that answers ``--data.predict_path`` (this data is made
    #: or named by its own arguments, not read from the user's files).
    predicts_on: ClassVar[str] = "the sine wave it generates from --data.t_start to --data.t_end"

    shuffle_train = False  # the order of the points is what the network learns
    # One sequence, learnt point by point, cannot be split between processes: each trains on all of it
    # and all make the same updates, so a data-parallel run computes what one process does.
    shard = False

    def __init__(
        self, n_points: PositiveInt = 21, t_start: FiniteFloat = 2.0, t_end: FiniteFloat = 10.0
    ) -> None:
        if n_points < 2:
            raise DataConfigError(
                f"--data.n_points must be at least 2 (one input and its target), got {n_points}"
            )
        if not t_start < t_end:
            raise DataConfigError(
                f"--data.t_end={t_end} must be above --data.t_start={t_start}: the wave runs forward in time"
            )
        # float64 times and their sine, float32 values and the inputs and targets cut from them
        check_memory(4 * 8 * n_points, f"--data.n_points={n_points}")
        super().__init__(batch_size=n_points - 1, seed=0)
        # float64 as in the tutorial (numpy), cast to float32 once, like `torch.Tensor(data)`.
        self.time_steps = torch.linspace(t_start, t_end, n_points, dtype=torch.float64)
        self.values = torch.sin(self.time_steps).float().unsqueeze(1)

    def make_split(self, split: str) -> tuple[Tensor, Tensor]:
        return self.values[:-1], self.values[1:]

    # --- for python -m experiments export -------------------------------------------------------------
    def export_batch(self, count: int) -> Tensor:
        """The wave's input sequence as the exported model takes it: a batch of one sequence, ``(1, T)``
        (``SineRNN.export_forward`` takes ``(N, T)``)."""
        return self.values[:-1].view(1, -1)

    def export_description(self) -> dict[str, object]:
        """The exported input's name and meaning (sidecar JSON)."""
        meaning = f"sequences of {len(self.values) - 1} values of the wave, one row a sequence"
        return {"input": {"name": "sequences", "meaning": meaning}}
