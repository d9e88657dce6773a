"""The first three lessons' modules: shapes, gradients to every parameter, a step that lowers the loss,
and, for every MSE regressor (modules/regression.py), the one-line error for targets of the wrong shape."""

import pytest
import torch
from lightning.pytorch import Trainer

from core.errors import InputShapeError
from datamodules import SineWaveDataModule
from modules import FeedForwardNet, LinearRegression, SineRNN, TabularRegressor


def fixed_batch(n_in: int, n: int = 16):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, n_in, generator=generator)
    return x, (x.sum(dim=1, keepdim=True) > 0).float()


@pytest.mark.parametrize(
    ("module", "n_in", "n_out"),
    [(FeedForwardNet(), 10, 1), (FeedForwardNet(n_in=3, n_h=4, n_out=2), 3, 2), (LinearRegression(), 1, 1)],
)
def test_regression_modules_shapes(module, n_in, n_out):
    assert module(torch.randn(7, n_in)).shape == (7, n_out)


def test_feedforward_is_the_tutorials_network():
    net = FeedForwardNet().net
    kinds = [type(layer).__name__ for layer in net]
    assert kinds == ["Linear", "ReLU", "Linear", "Sigmoid"]
    assert (net[0].in_features, net[0].out_features, net[2].out_features) == (10, 5, 1)
    out = FeedForwardNet()(torch.randn(100, 10) * 10)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("make", [lambda: FeedForwardNet(), lambda: LinearRegression()])
def test_regression_step_moves_every_parameter_and_lowers_the_loss(make):
    torch.manual_seed(0)
    module = make()
    n_in = module.net[0].in_features if isinstance(module, FeedForwardNet) else 1
    batch = fixed_batch(n_in)
    optimizer = module.configure_optimizers()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    # training_step logs; outside a Trainer that is a no-op with a warning, so silence it.
    module.log = lambda *args, **kwargs: None
    loss = module.training_step(batch, 0)
    optimizer.zero_grad()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    optimizer.step()
    for name, p in module.named_parameters():
        assert not torch.equal(p, before[name]), name
    assert module.training_step(batch, 0).item() < loss.item()


@pytest.mark.parametrize(
    ("y", "found", "hint"),
    [
        (torch.zeros(16), "float32 targets of shape (16,)", "(y.unsqueeze(1) for one target per sample)"),
        (torch.zeros(16, 1, dtype=torch.long), "int64 targets of shape (16, 1)", "floats of shape (N, 1)"),
        (torch.zeros(16, 2), "float32 targets of shape (16, 2)", "floats of shape (N, 1)"),
    ],
)
@pytest.mark.parametrize("make", [FeedForwardNet, LinearRegression, TabularRegressor])
def test_regression_targets_of_the_wrong_shape_or_type_are_one_line(make, y, found, hint):
    # (16,) targets against (16, 1) predictions would broadcast to a (16, 16) loss, wrong and silent.
    module = make()
    module.log = lambda *args, **kwargs: None
    n_in = next(m for m in module.net.modules() if isinstance(m, torch.nn.Linear)).in_features
    x = torch.randn(16, n_in)
    with pytest.raises(InputShapeError) as error:
        module.training_step((x, y), 0)
    message = str(error.value)
    assert message.startswith(f"{make.__name__} predicts a batch of shape (16, 1), got {found} from the data")
    assert hint in message and "\n" not in message
    assert module.training_step((x, torch.zeros(16, 1)), 0).ndim == 0  # the right form trains


def test_optimizer_is_injected():
    module = FeedForwardNet(optimizer=lambda params: torch.optim.Adam(params, lr=0.123))
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 0.123
    default = FeedForwardNet().configure_optimizers()
    assert isinstance(default, torch.optim.SGD) and default.param_groups[0]["lr"] == 0.01


def test_linear_regression_reports_its_line():
    module = LinearRegression()
    with torch.no_grad():
        module.net.weight.fill_(2.5)
        module.net.bias.fill_(-1.0)
    assert module.slope_intercept() == (2.5, -1.0)
    assert module(torch.tensor([[2.0]])).item() == pytest.approx(4.0)


def test_sine_rnn_shapes_and_initialisation():
    torch.manual_seed(0)
    module = SineRNN()
    assert module.w1.shape == (7, 6) and module.w2.shape == (6, 1)
    big = SineRNN(hidden_size=200)
    assert big.w1.std().item() == pytest.approx(0.4, rel=0.05)
    assert big.w2.std().item() == pytest.approx(0.3, rel=0.05)
    x = torch.randn(20, 1)
    assert module(x).shape == (20, 1)
    out, context = module.cell(x[:1], module.initial_context())
    assert out.shape == (1, 1) and context.shape == (1, 6)
    assert context.abs().max() <= 1  # tanh


def test_sine_rnn_gradients_reach_both_weights():
    torch.manual_seed(0)
    module = SineRNN()
    x = torch.randn(5, 1)
    module(x).pow(2).sum().backward()
    assert module.w1.grad.abs().sum() > 0 and module.w2.grad.abs().sum() > 0


def test_sine_rnn_training_step_updates_per_point_and_lowers_the_loss():
    torch.manual_seed(0)
    module = SineRNN()
    dm = SineWaveDataModule()
    dm.setup("fit")
    x, y = dm.splits["train"]
    before = ((module(x) - y).pow(2).sum() / 2).item()
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, dm)
    # One training step (one epoch) holds the tutorial's 20 per-point updates.
    assert trainer.global_step == 20
    with torch.no_grad():
        after = ((module(x) - y).pow(2).sum() / 2).item()
    assert after < before


def sine_fit(optimizer, epochs: int = 3) -> SineRNN:
    torch.manual_seed(0)
    module = SineRNN(optimizer=optimizer)
    dm = SineWaveDataModule()
    Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    ).fit(module, dm)
    return module


def test_sine_rnn_plain_sgd_shortcut_is_sgds_own_update_and_other_optimizers_step():
    from modules.sine_rnn import plain_sgd_lr

    w = [torch.nn.Parameter(torch.ones(2))]
    assert plain_sgd_lr(torch.optim.SGD(w, lr=0.1), w) == 0.1
    assert plain_sgd_lr(torch.optim.SGD(w, lr=0.1, momentum=0.9), w) is None
    assert plain_sgd_lr(torch.optim.SGD(w, lr=0.1, weight_decay=1e-4), w) is None
    assert plain_sgd_lr(torch.optim.Adam(w), w) is None
    # The shortcut against SGD.step() itself (the shortcut switched off): bit for bit the same weights.
    import modules.sine_rnn as sine_rnn

    fast = sine_fit(lambda p: torch.optim.SGD(p, lr=0.1))
    original = sine_rnn.plain_sgd_lr
    sine_rnn.plain_sgd_lr = lambda *args: None
    try:
        stepped = sine_fit(lambda p: torch.optim.SGD(p, lr=0.1))
    finally:
        sine_rnn.plain_sgd_lr = original
    assert torch.equal(fast.w1, stepped.w1) and torch.equal(fast.w2, stepped.w2)
    # Any other optimizer goes through its own step, and moves the weights its own way.
    torch.manual_seed(0)
    initial = SineRNN().w1.detach().clone()
    adam = sine_fit(lambda p: torch.optim.Adam(p, lr=0.01))
    assert not torch.equal(adam.w1, initial) and not torch.equal(adam.w1, fast.w1)
