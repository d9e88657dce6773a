"""ScratchNetwork: the hand-written backward pass against autograd, the tutorial's update, and learning."""

from __future__ import annotations

import itertools

import pytest
import torch
from lightning.pytorch import Trainer

from datamodules import StudyScoresDataModule
from modules import ScratchNetwork
from tests.conftest import EpochHistory


def quiet_trainer(**kwargs) -> Trainer:
    return Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_the_tutorials_shapes():
    torch.manual_seed(0)
    module = ScratchNetwork()
    assert module.W1.shape == (2, 3) and module.W2.shape == (3, 1)
    out = module(torch.rand(5, 2) * 100 - 50)
    assert out.shape == (5, 1) and ((out > 0) & (out < 1)).all()
    big = ScratchNetwork(input_size=300, hidden_size=300)
    assert big.W1.std().item() == pytest.approx(1.0, rel=0.02)  # torch.randn, as the tutorial


@pytest.mark.parametrize(
    ("sizes", "batch", "seed"), [((2, 3, 1), 3, 0), ((2, 3, 1), 17, 1), ((5, 4, 3), 8, 2)]
)
def test_hand_gradients_equal_autograd_in_float64(sizes, batch, seed):
    torch.manual_seed(seed)
    module = ScratchNetwork(*sizes).double()
    x = torch.rand(batch, sizes[0], dtype=torch.float64)
    y = torch.rand(batch, sizes[2], dtype=torch.float64)
    hidden, output = module.layers(x)
    expected = torch.autograd.grad(module.objective(output, y), [module.W1, module.W2])
    with torch.no_grad():
        by_hand = module.gradients(x, y, hidden, output)
    for mine, autograd in zip(by_hand, expected, strict=True):
        assert mine.dtype == torch.float64 and mine.shape == autograd.shape
        torch.testing.assert_close(mine, autograd, atol=1e-6, rtol=0)
        assert autograd.abs().max() > 1e-3  # a gradient worth comparing, not zeros


def test_one_training_step_is_the_tutorials_update():
    """An epoch over the tutorial's three students is one full-batch step: the tutorial's
    ``W += Xᵀ @ delta``."""
    data = StudyScoresDataModule()
    x, y = data.make_split("train")
    torch.manual_seed(3)
    module = ScratchNetwork()
    W1, W2 = module.W1.detach().clone(), module.W2.detach().clone()  # the tutorial's names
    # The tutorial's forward and backward, verbatim apart from the `+ =` typo.
    z2 = 1 / (1 + torch.exp(-(x @ W1)))
    o = 1 / (1 + torch.exp(-(z2 @ W2)))
    o_delta = (y - o) * (o * (1 - o))
    z2_error = torch.matmul(o_delta, torch.t(W2))
    z2_delta = z2_error * (z2 * (1 - z2))
    W1 += torch.matmul(torch.t(x), z2_delta)
    W2 += torch.matmul(torch.t(z2), o_delta)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    torch.testing.assert_close(module.W1.detach(), W1, atol=1e-6, rtol=0)
    torch.testing.assert_close(module.W2.detach(), W2, atol=1e-6, rtol=0)
    assert not torch.allclose(W1, module.W1.new_tensor(0.0))


def test_loss_falls_substantially_on_the_tutorials_students():
    torch.manual_seed(0)
    module = ScratchNetwork()
    history = EpochHistory("train/loss")
    trainer = quiet_trainer(max_epochs=60, limit_val_batches=0, callbacks=[history], log_every_n_steps=1)
    trainer.fit(module, datamodule=StudyScoresDataModule())
    losses = history.values
    assert len(losses) == 60
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])
    assert all(b <= a * 1.01 for a, b in itertools.pairwise(losses))  # falls nearly monotonically
    prediction = trainer.predict(module, datamodule=StudyScoresDataModule())[0]
    assert prediction.shape == (1, 1) and 0 < prediction.item() < 1


def test_another_optimizer_uses_the_hand_gradients():
    torch.manual_seed(0)
    module = ScratchNetwork(optimizer=lambda params: torch.optim.Adam(params, lr=0.1))
    before = module.W1.detach().clone()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(module, datamodule=StudyScoresDataModule())
    # Adam's first step moves every weight with a non-zero gradient by lr, whatever its size.
    moved = (module.W1.detach() - before).abs()
    torch.testing.assert_close(moved, torch.full((2, 3), 0.1), atol=1e-4, rtol=0)


def test_impossible_sizes():
    with pytest.raises(ValueError, match="must be at least 1"):
        ScratchNetwork(hidden_size=0)
