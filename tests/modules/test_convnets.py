"""SimpleCNN and MNISTConvNet: the tutorial's architectures, Keras's initialisation, and the shared
classification steps (loss, accuracy, dropout on and off, probabilities from predict)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from datamodules import MNISTDataModule
from modules import MNISTConvNet, SimpleCNN


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_simple_cnn_is_the_tutorials_network():
    model = SimpleCNN()
    layers = dict(model.net.named_children())
    assert (layers["conv1"].in_channels, layers["conv1"].out_channels, layers["conv1"].kernel_size) == (
        3,
        18,
        (3, 3),
    )
    assert layers["conv1"].padding == (1, 1) and layers["fc1"].in_features == 4608
    assert (layers["fc1"].out_features, layers["fc2"].out_features) == (64, 10)
    assert n_params(model) == 504 + 4608 * 64 + 64 + 650
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_mnist_convnet_matches_the_keras_summary():
    model = MNISTConvNet()
    # Keras's model.summary() for the chapter's network: 1,199,882 trainable parameters.
    assert n_params(model) == 1_199_882
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    for name, module in model.net.named_children():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(module.bias) == 0, name
            fan_in, fan_out = module.weight.shape[1] * module.weight[0, 0].numel(), module.weight.shape[0]
            fan_out *= module.weight[0, 0].numel()
            limit = (6 / (fan_in + fan_out)) ** 0.5  # Glorot uniform
            assert module.weight.abs().max() <= limit + 1e-6, name
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adadelta)
    assert optimizer.defaults["lr"] == 1.0 and optimizer.defaults["rho"] == 0.95


def test_dropout_is_on_in_training_and_off_in_evaluation():
    torch.manual_seed(0)
    model = MNISTConvNet()
    x = torch.randn(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(("make", "shape"), [(SimpleCNN, (3, 32, 32)), (MNISTConvNet, (1, 28, 28))])
def test_one_step_moves_every_parameter_and_lowers_the_loss(make, shape):
    torch.manual_seed(0)
    model = make(optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
    model.eval()  # no dropout noise: the same batch before and after the step
    images, labels = torch.randn(16, *shape), torch.randint(0, 10, (16,))
    optimizer = model.configure_optimizers()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = model.training_step((images, labels), 0)
    optimizer.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    optimizer.step()
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name
    model.train_loss.reset()
    assert model.training_step((images, labels), 0).item() < loss.item()


def test_predict_returns_probabilities():
    model = SimpleCNN().eval()
    probs = model.predict_step((torch.randn(6, 3, 32, 32), torch.zeros(6, dtype=torch.long)), 0)
    assert probs.shape == (6, 10) and torch.allclose(probs.sum(dim=1), torch.ones(6)) and (probs >= 0).all()


def test_training_learns_and_tracks_accuracy(mnist_dir):
    torch.manual_seed(0)
    model = MNISTConvNet()
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_split=16, batch_size=16, normalize=False)
    trainer = Trainer(
        max_epochs=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"} <= set(metrics)
    # The fixture's digits are a block placed by the label: easy to learn from 48 images.
    assert metrics["train/acc"] > 0.5
    assert metrics["val/acc_best"] >= metrics["val/acc"]
    result = trainer.test(model, dm, verbose=False)[0]
    assert set(result) == {"test/loss", "test/acc"}
