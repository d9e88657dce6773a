"""Lesson 递归神经网络 (sine wave): the tutorial's hand-made recurrent cell, trained one point at a time.

Run: ``python -m experiments fit --config configs/sine_rnn.yaml``

The cell: ``context = tanh([x, context] @ w1)``, ``out = context @ w2``, with ``w1`` (7x6) ~ N(0, 0.4)
and ``w2`` (6x1) ~ N(0, 0.3). Each point gives a loss ``(out - target)²/2``, a backward pass and a
plain SGD update (lr 0.1), and the context is detached before the next point, as in the tutorial.

Design: the tutorial makes 20 updates per epoch, 6,000 in 300 epochs. Making each point a Lightning
training step would pay Lightning's per-step cost (hooks, logging, progress, checks) 6,000 times.
Instead one training step is one pass over the sequence (one batch), run with manual optimisation, and
inside it the tutorial's loop runs as written: ``loss.backward()`` and the optimizer's own ``step()`` per
point. Lightning's ``manual_backward`` and ``LightningOptimizer.step`` are not used per point because
each runs every callback's hooks, which costs more than the arithmetic of a 7x6 network. What that
gives up: a gradient scaler (16-mixed precision) and per-point optimizer hooks; autocast (bf16-mixed)
still applies, as Lightning enters it around the training step. For this network fp32 is the
sensible precision anyway. ``global_step`` still counts updates (6,000), as Lightning defines it. With
plain SGD (the lesson's optimizer: no momentum or weight decay) a point's update is
``torch.autograd.grad`` and ``p.add_(grad, alpha=-lr)``, SGD.step()'s own arithmetic (bit for bit)
without its per-call bookkeeping and ``zero_grad``; any other optimizer runs its ``step()``.

Departures from the tutorial: ``Variable``, ``init.normal`` and ``.data`` arithmetic become parameters,
``nn.init.normal_`` and ``torch.optim.SGD`` (the same update, ``w -= lr * grad``); ``total_loss.data[0]``
(an error on a 0-d tensor in current PyTorch) is logged as ``train/loss``; the initial context needs
no gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from core.callbacks import collect_all
from core.domains import NonNegativeFloat, NonNegativeInt, PositiveInt
from core.figures import log_figure, new_figure
from core.optim import OptimizerCallable, build_optimizer


def plain_sgd_lr(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> float | None:
    """The learning rate when ``optimizer`` is torch's SGD without momentum, weight decay or other options
    over exactly ``params`` (its step is then ``p -= lr * grad``); None for any other optimizer."""
    if type(optimizer) is not torch.optim.SGD or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    plain = not (group["momentum"] or group["weight_decay"] or group["maximize"] or group["nesterov"])
    ours = group["params"]
    same = len(ours) == len(params) and all(a is b for a, b in zip(ours, params, strict=True))
    return float(group["lr"]) if plain and same and not group.get("differentiable") else None


class SineRNN(LightningModule):
    """The tutorial's recurrent cell over a sequence of scalars, predicting each next value.

    Logged: ``train/loss`` (the tutorial's ``total_loss``: the sum over the sequence of ``(pred - y)²/2``),
    ``val/loss`` (the same sum with the weights fixed) and ``val/mse`` (mean squared error of the
    predictions, the lesson's bar). ``predict`` returns the predicted sequence.

    Args:
        hidden_size: Context neurons (a count >= 1); the input is one value plus the context (the
            tutorial's 7 = 1 + 6).
        output_size: Values predicted per step (a count >= 1).
        w1_std: Standard deviation of w1's normal initialisation (a finite number >= 0).
        w2_std: Standard deviation of w2's normal initialisation (a finite number >= 0).
        optimizer: Builds the optimizer; the tutorial's update is SGD with lr 0.1.
    """

    #: Why ``--compile.enabled`` refuses this module (experiments/compile.py).
    compile_unsupported = (
        "its training step is the tutorial's per-point loop of 1x7 products with an update after each, "
        "not a call of forward"
    )

    def __init__(
        self,
        hidden_size: PositiveInt = 6,
        output_size: PositiveInt = 1,
        w1_std: NonNegativeFloat = 0.4,
        w2_std: NonNegativeFloat = 0.3,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.1),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        # Updates happen per point inside training_step, not once per Lightning step.
        self.automatic_optimization = False
        self.optimizer = optimizer
        self.hidden_size = hidden_size
        # Drawn in the tutorial's order (w1 then w2) so the same seed gives the tutorial's weights.
        self.w1 = nn.Parameter(nn.init.normal_(torch.empty(1 + hidden_size, hidden_size), 0.0, w1_std))
        self.w2 = nn.Parameter(nn.init.normal_(torch.empty(hidden_size, output_size), 0.0, w2_std))

    def initial_context(self) -> Tensor:
        return torch.zeros(1, self.hidden_size, device=self.w1.device, dtype=self.w1.dtype)

    def cell(self, value: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """One step: ``value`` (1, 1) and ``context`` (1, hidden) to ``(out, new_context)``."""
        context = torch.tanh(torch.cat((value, context), dim=1) @ self.w1)
        return context @ self.w2, context

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``(T, output_size)`` for a sequence ``x`` of shape ``(T, 1)``, from a zero context."""
        context = self.initial_context()
        outputs = []
        for j in range(x.size(0)):
            out, context = self.cell(x[j : j + 1], context)
            outputs.append(out)
        return torch.cat(outputs)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        # The tutorial's loop as it is: a plain backward() and optimizer step per point. Lightning's
        # manual_backward and LightningOptimizer.step run the callback hooks on every call, which for
        # 20 points of a 7x6 network costs more than the arithmetic; see the module docstring.
        optimizer = self.optimizers().optimizer
        # Lightning counts global_step in LightningOptimizer.step(); count the plain steps ourselves so
        # that global_step (checkpoint names, max_steps, log_every_n_steps) is still the update count.
        # Lightning 2.6 has no public way to; tests/experiments/test_lightning_internals.py checks this.
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        params = [self.w1, self.w2]
        lr = plain_sgd_lr(optimizer, params)
        context = self.initial_context()
        losses = []
        for j in range(x.size(0)):
            pred, context = self.cell(x[j : j + 1], context)
            loss = (pred - y[j : j + 1]).pow(2).sum() / 2
            if lr is not None:
                # Plain SGD is p -= lr * grad: the same update as SGD.step() (p.add_(grad, alpha=-lr)),
                # without its per-call bookkeeping and zero_grad, which for a 7x6 network cost a third
                # of the point's time.
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for param, grad in zip(params, grads, strict=True):
                        param.add_(grad, alpha=-lr)
            else:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            progress.increment_ready()
            progress.increment_completed()
            # Truncated backpropagation through time of length one, as the tutorial.
            context = context.detach()
            losses.append(loss.detach())
        total_loss = torch.stack(losses).sum()
        self.log(
            "train/loss",
            total_loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=1,
            sync_dist=True,
        )

    def _evaluate(self, batch: tuple[Tensor, Tensor], phase: str) -> None:
        x, y = batch
        pred = self(x)
        # sync_dist: each process of a data-parallel run logs the mean over all of them.
        self.log(f"{phase}/loss", (pred - y).pow(2).sum() / 2, prog_bar=True, batch_size=1, sync_dist=True)
        self.log(f"{phase}/mse", (pred - y).pow(2).mean(), prog_bar=True, batch_size=1, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def export_forward(self, sequences: Tensor) -> Tensor:
        """What ``python -m experiments export`` puts in the exported graph: a batch of sequences
        ``(N, T)`` (``SineWaveDataModule.export_batch``) to each point's prediction of the next value,
        ``(N, T)``, from a zero context, as ``forward`` computes for one sequence. The loop over the points
        is unrolled when the graph is traced, so the exported file takes sequences of the traced length."""
        # shape[0], not len(): len() would fix the batch size in the traced graph.
        context = self.initial_context().expand(sequences.shape[0], -1)
        outputs = []
        for j in range(sequences.size(1)):
            out, context = self.cell(sequences[:, j : j + 1], context)
            outputs.append(out)
        predictions = torch.stack(outputs, dim=1)  # (N, T, output_size)
        return predictions.squeeze(-1) if predictions.shape[-1] == 1 else predictions

    def export_description(self) -> dict[str, Any]:
        """The exported output's name and meaning, for the export's sidecar JSON."""
        meaning = "each point's prediction of the next value of its sequence"
        return {"output": {"name": "next_values", "meaning": meaning}}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer, self.parameters())


class SequencePlot(Callback):
    """The tutorial's sine-wave figure: the actual points and the predicted next points over time.

    Drawn every ``every_n_epochs`` validation epochs into TensorBoard, and at the end of training
    also as ``figures/predictions.png``. Time steps come from the datamodule's ``time_steps`` when it
    has them, else the point indices.

    Args:
        every_n_epochs: Epochs between figures in TensorBoard (a count >= 0); 0 draws only the final one.
    """

    def __init__(self, every_n_epochs: NonNegativeInt = 50) -> None:
        self.every_n_epochs = every_n_epochs

    def _plot(self, trainer: Trainer, pl_module: LightningModule, png_name: str | None) -> None:
        if trainer.val_dataloaders is None:
            return
        # The whole sequence first: a recurrent network's predictions depend on every earlier point.
        sequence = collect_all(trainer, trainer.val_dataloaders)
        if not sequence:  # None: not global rank 0, whose is the figure; (): no points at all
            return
        x = sequence[0]
        with torch.no_grad():
            pred = pl_module(x.to(pl_module.device)).cpu()
        t = getattr(trainer.datamodule, "time_steps", None)
        t = torch.arange(len(x) + 1, dtype=torch.float64) if t is None else t.cpu()
        actual, epoch = x[:, 0].cpu(), trainer.current_epoch

        def draw() -> Any:
            figure = new_figure((8, 4))
            ax = figure.subplots()
            ax.scatter(t[:-1], actual, s=90, label="Actual")
            ax.scatter(t[1:], pred[:, 0], label="Predicted")
            ax.set_title(f"epoch {epoch}")
            ax.legend()
            return figure

        log_figure(trainer, draw, "val/predictions", png_name=png_name)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.every_n_epochs:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._plot(trainer, pl_module, None)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._plot(trainer, pl_module, "predictions")
