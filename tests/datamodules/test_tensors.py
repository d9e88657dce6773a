"""TensorBatches: batching by indexing, deterministic per-epoch shuffling, Lightning's set_epoch."""

import pytest
import torch

from datamodules.tensors import TensorBatches


def make(n: int = 10, **kwargs):
    x = torch.arange(n).float().unsqueeze(1)
    return TensorBatches(x, x * 2, **kwargs)


@pytest.mark.parametrize(
    ("n", "batch", "drop_last", "expected"), [(10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3)]
)
def test_length_counts_batches(n, batch, drop_last, expected):
    loader = make(n, batch_size=batch, drop_last=drop_last)
    assert len(loader) == expected
    assert len(list(loader)) == expected


def test_unshuffled_batches_keep_order_and_pairs():
    batches = list(make(10, batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(x[:, 0], torch.arange(10).float())
    assert torch.equal(y, x * 2)


def test_shuffle_is_a_permutation_fixed_by_seed_and_epoch():
    loader = make(50, batch_size=7, shuffle=True, seed=3)
    first = torch.cat([b[0] for b in loader])[:, 0]
    assert sorted(first.tolist()) == list(range(50))
    assert not torch.equal(first, torch.arange(50).float())
    again = torch.cat([b[0] for b in make(50, batch_size=7, shuffle=True, seed=3)])[:, 0]
    assert torch.equal(first, again)
    loader.sampler.set_epoch(1)
    second = torch.cat([b[0] for b in loader])[:, 0]
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat([b[0] for b in loader])[:, 0], first)


def test_mismatched_tensors_are_rejected():
    with pytest.raises(ValueError, match="share their first dimension"):
        TensorBatches(torch.zeros(3), torch.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches(torch.zeros(3), batch_size=0)
