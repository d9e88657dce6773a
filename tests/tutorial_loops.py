"""The tutorial's plain PyTorch training loops, ported with their bugs fixed.

The parity tests compare them with the Lightning experiments epoch by epoch, and
benchmarks/lesson_overhead.py times them against the experiments. Each function seeds torch with
``seed`` and builds its model exactly as the tutorial does, so the same seed gives the same initial weights
as the experiment (the CLI's ``seed_everything: 42``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def first_network(x: Tensor, y: Tensor, epochs: int = 50, lr: float = 0.01, seed: int = 42):
    """神经网络实现, steps 2-6. Returns (model, initial state_dict, per-epoch losses)."""
    torch.manual_seed(seed)
    n_in, n_h, n_out = x.shape[1], 5, 1
    model = nn.Sequential(nn.Linear(n_in, n_h), nn.ReLU(), nn.Linear(n_h, n_out), nn.Sigmoid())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _epoch in range(epochs):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, initial, losses


class LinearRegressionModel(nn.Module):
    """The tutorial's model of 线性回归."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def linear_regression(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    shuffle_seed: int,
    epochs: int = 100,
    lr: float = 0.1,
    seed: int = 42,
):
    """线性回归, step 3, plus the training loop the chapter leaves out: SGD on mini-batches shuffled by
    the ``shuffle_seed + epoch`` permutation the experiment's loader uses. Returns (model, initial
    state_dict, per-epoch losses weighted by batch size)."""
    torch.manual_seed(seed)
    model = LinearRegressionModel(x.shape[1], y.shape[1])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    n = len(x)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(shuffle_seed + epoch))
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = criterion(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    return model, initial, losses


def sine_rnn(
    x: Tensor,
    y: Tensor,
    epochs: int = 300,
    lr: float = 0.1,
    hidden_size: int = 6,
    seed: int = 42,
    update: str = "manual",
):
    """递归神经网络, steps 2-5, without ``Variable`` and reading the loss with ``.item()``.

    ``update="manual"`` is the tutorial's hand-written ``w -= lr * grad``; ``"sgd"`` makes the same update
    with ``torch.optim.SGD``, as the experiment does. Returns ((w1, w2), initial (w1, w2), per-epoch
    total losses)."""
    torch.manual_seed(seed)
    input_size = 1 + hidden_size
    w1 = torch.empty(input_size, hidden_size).normal_(0.0, 0.4).requires_grad_()
    w2 = torch.empty(hidden_size, 1).normal_(0.0, 0.3).requires_grad_()
    initial = (w1.detach().clone(), w2.detach().clone())

    def forward(value: Tensor, context_state: Tensor) -> tuple[Tensor, Tensor]:
        xh = torch.cat((value, context_state), 1)
        context_state = torch.tanh(xh.mm(w1))
        return context_state.mm(w2), context_state

    optimizer = torch.optim.SGD([w1, w2], lr=lr) if update == "sgd" else None
    losses = []
    for _epoch in range(epochs):
        total_loss = 0.0
        context_state = torch.zeros((1, hidden_size))
        for j in range(x.size(0)):
            pred, context_state = forward(x[j : j + 1], context_state)
            loss = (pred - y[j : j + 1]).pow(2).sum() / 2
            total_loss += loss.item()
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            else:
                loss.backward()
                with torch.no_grad():
                    w1 -= lr * w1.grad
                    w2 -= lr * w2.grad
                w1.grad.zero_()
                w2.grad.zero_()
            context_state = context_state.detach()
        losses.append(total_loss)
    return (w1, w2), initial, losses
