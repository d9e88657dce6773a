"""The first three lessons' datamodules: splits per stage, sizes, values, seeding."""

import math

import pytest
import torch

from datamodules import LineDataModule, RandomTensorDataModule, SineWaveDataModule


def everything(loader):
    return tuple(torch.cat(parts) for parts in zip(*list(loader), strict=True))


@pytest.mark.parametrize("stage", ["fit", "validate", "test", "predict"])
def test_random_tensors_setup_each_stage(stage):
    dm = RandomTensorDataModule(n_features=4, n_train=12, n_val=5, n_test=3, batch_size=5, seed=1)
    dm.setup(stage)
    loaders = {
        "fit": [("train", dm.train_dataloader, 12), ("val", dm.val_dataloader, 5)],
        "validate": [("val", dm.val_dataloader, 5)],
        "test": [("test", dm.test_dataloader, 3)],
        "predict": [("predict", dm.predict_dataloader, 3)],
    }[stage]
    for _, make_loader, size in loaders:
        x, y = everything(make_loader())
        assert x.shape == (size, 4)
        assert y.shape == (size, 1)
        assert set(y.unique().tolist()) <= {0.0, 1.0}


def test_random_tensors_seeding():
    a, b, c = (RandomTensorDataModule(seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert not torch.equal(a.splits["train"][0], c.splits["train"][0])
    # Splits are independent draws, not copies of one another.
    assert not torch.equal(a.splits["train"][0], a.splits["val"][0])
    # Inputs look like N(0, 1) on a larger draw.
    big = RandomTensorDataModule(n_train=4000).make_split("train")[0]
    assert abs(big.mean().item()) < 0.05
    assert abs(big.std().item() - 1) < 0.05


def test_random_tensors_rejects_empty_split():
    with pytest.raises(ValueError, match="n_train"):
        RandomTensorDataModule(n_train=0)


def test_line_split_sizes_and_disjointness():
    dm = LineDataModule(seed=5)
    dm.setup("fit")
    dm.setup("test")
    x_train, _ = dm.splits["train"]
    x_val, _ = dm.splits["val"]
    assert len(x_train) == 205 and len(x_val) == 51
    assert len(dm.splits["test"][0]) == 64
    assert not set(x_train[:, 0].tolist()) & set(x_val[:, 0].tolist())
    assert x_train.min() >= 0 and x_train.max() <= 1


def test_line_points_lie_on_the_line():
    dm = LineDataModule(n_points=5000, noise_std=0.25, seed=0)
    x, y = dm.make_split("train")
    # Least squares on the generated points gives back the line; residual spread is the noise.
    design = torch.cat([x, torch.ones_like(x)], dim=1)
    slope, intercept = torch.linalg.lstsq(design, y).solution[:, 0].tolist()
    assert slope == pytest.approx(2.0, abs=0.05)
    assert intercept == pytest.approx(3.0, abs=0.03)
    assert (y - design @ torch.tensor([[slope], [intercept]])).std().item() == pytest.approx(0.25, abs=0.01)
    noiseless = LineDataModule(noise_std=0.0, slope=-1.0, intercept=0.5).make_split("val")
    assert torch.allclose(noiseless[1], -noiseless[0] + 0.5)


def test_line_seeding_and_validation():
    assert torch.equal(
        LineDataModule(seed=3).make_split("train")[0], LineDataModule(seed=3).make_split("train")[0]
    )
    assert not torch.equal(
        LineDataModule(seed=3).make_split("train")[0], LineDataModule(seed=4).make_split("train")[0]
    )
    with pytest.raises(ValueError, match="val_fraction"):
        LineDataModule(val_fraction=1.5)


def test_sine_wave_is_the_tutorials_sequence():
    dm = SineWaveDataModule()
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 1
    x, y = train[0]
    assert x.shape == y.shape == (20, 1)
    t = [2 + 8 * i / 20 for i in range(21)]
    assert x[:, 0].tolist() == pytest.approx([math.sin(v) for v in t[:-1]], abs=1e-6)
    assert y[:, 0].tolist() == pytest.approx([math.sin(v) for v in t[1:]], abs=1e-6)
    # The order of the points is the data: training must not shuffle it, in any epoch.
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(7)
    assert torch.equal(next(iter(loader))[0], x)
    for stage in ("validate", "test", "predict"):
        dm.setup(stage)
    assert torch.equal(next(iter(dm.test_dataloader()))[0], x)
    with pytest.raises(ValueError, match="n_points"):
        SineWaveDataModule(n_points=1)
