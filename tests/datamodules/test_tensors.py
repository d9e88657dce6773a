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


def test_shards_together_are_the_single_process_batches() -> None:
    x = torch.arange(64)
    single = [b[0] for b in TensorBatches(x, batch_size=16, shuffle=True, seed=3)]
    shards = [
        list(TensorBatches(x, batch_size=8, shuffle=True, seed=3, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == len(single) == 4
    for k, batch in enumerate(single):
        together = torch.cat([shards[0][k][0], shards[1][k][0]])
        assert sorted(together.tolist()) == sorted(batch.tolist())


def test_training_shards_are_padded_to_equal_length_evaluation_shards_are_not() -> None:
    x = torch.arange(5)
    train = [TensorBatches(x, batch_size=2, num_replicas=2, rank=r, equal_shards=True) for r in (0, 1)]
    # Index 0 served twice, as DistributedSampler pads.
    assert [t.shard_indices().tolist() for t in train] == [[0, 2, 4], [1, 3, 0]]
    assert len(train[0]) == len(train[1]) == 2
    evaluation = [TensorBatches(x, batch_size=2, num_replicas=2, rank=r) for r in (0, 1)]
    assert [e.shard_indices().tolist() for e in evaluation] == [[0, 2, 4], [1, 3]]  # every sample once
    with pytest.raises(ValueError, match="rank must be in"):
        TensorBatches(x, batch_size=2, num_replicas=2, rank=2)


def test_resume_at_skips_the_batches_already_trained_once() -> None:
    loader = TensorBatches(torch.arange(10), batch_size=3, shuffle=True, seed=1)
    full = [b[0].tolist() for b in loader]
    loader.resume_at(2)
    assert [b[0].tolist() for b in loader] == full[2:]
    assert [b[0].tolist() for b in loader] == full  # the next epoch starts from the beginning
