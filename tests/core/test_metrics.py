"""``core.metrics.EpochMean``: the epoch mean every lesson logs its loss with."""

from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

from core.metrics import EpochMean


class _Syncs(TorchFunctionMode):
    """Counts the calls that make a CUDA tensor wait for the device (``bool()`` of a tensor, ``.item()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", str(func))
        if name in ("__bool__", "item", "tolist", "cpu"):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_weights_count_as_in_a_weighted_mean() -> None:
    # torchmetrics' nan_strategy="disable" replaces weights with ones (torchmetrics#3434): a per-token
    # mean would become a mean of batch means. 1 * 3 + 4 * 1 over 4 tokens is 1.75, not 2.5.
    mean = EpochMean()
    mean.update(torch.tensor(1.0), weight=3)
    mean.update(torch.tensor(4.0), weight=torch.tensor(1.0))
    assert mean.compute().item() == 1.75
    vector = EpochMean()
    vector.update(torch.tensor([1.0, 4.0]), weight=torch.tensor([3.0, 1.0]))
    assert vector.compute().item() == 1.75


def test_unweighted_values_and_floats_average_plainly() -> None:
    mean = EpochMean()
    mean.update(2.0)
    mean.update(torch.tensor([4.0, 6.0]))
    assert mean.compute().item() == 4.0


def test_a_nan_shows_in_the_epoch_value_without_checking_each_update() -> None:
    mean = EpochMean()
    with _Syncs() as spy:
        mean.update(torch.tensor(1.0))
        mean.update(torch.tensor(float("nan")), weight=2.0)
    assert spy.calls == []  # no host sync per update: torchmetrics' default does `if nans.any()`
    assert math.isnan(mean.compute().item())
