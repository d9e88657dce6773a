"""Lesson Convents: 从Scratch训练: the 2-3-1 sigmoid network with its hand-written backward pass.

Run: ``python -m experiments fit --config configs/scratch_network.yaml``

The network: ``hidden = sigmoid(x @ W1)``, ``out = sigmoid(hidden @ W2)``, with ``W1`` (2x3) and ``W2``
(3x1) drawn from N(0, 1) and no biases. The tutorial's ``backward`` is the chain rule written out:

    o_delta  = (y - o) * o (1 - o)               # error at the output, through the sigmoid
    z2_delta = (o_delta @ W2ᵀ) * z2 (1 - z2)      # carried back to the hidden layer
    W1 += Xᵀ @ z2_delta,  W2 += z2ᵀ @ o_delta

which is gradient descent with step 1 on ``E = ½ Σ (o - y)²`` (the sum over the batch): ``Xᵀ @
z2_delta`` is ``-∂E/∂W1``. Here ``gradients`` computes those same expressions and returns ``∂E/∂W1`` and
``∂E/∂W2``; the training step (Lightning's manual optimisation, as ``sine_rnn.py``) puts them in the
parameters' ``.grad`` and steps the injected optimizer, SGD with lr 1 by default: the tutorial's update
exactly. No autograd graph is built while training; ``tests/modules/test_scratch.py`` checks the hand
gradients against autograd's.

Departures from the tutorial: ``W1 + = ...`` (a syntax error) is an optimizer step on hand-computed
gradients, so any optimizer can replace the tutorial's step; the weights are ``nn.Parameter``s (the
tutorial's plain tensors are not moved to a device, saved in a checkpoint nor seen by an optimizer);
the chapter's indentation puts ``sigmoid``, ``sigmoidPrime`` and ``backward`` inside ``forward``, after
its ``return``; they are methods and functions here. ``sigmoid`` is ``torch.sigmoid``, the same
function as the tutorial's ``1 / (1 + exp(-s))``. ``layers`` returns the hidden activation instead of
storing ``self.z``/``self.z2`` on the module; ``saveWeights``'s ``torch.save(model, "NN")`` is
Lightning's checkpoint; ``predict`` prints nothing and returns the outputs. The tutorial's comment calls
``W1`` a "3 X 2 tensor"; it is 2x3.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from core.domains import PositiveInt
from core.errors import InputShapeError
from core.optim import OptimizerCallable, build_optimizer


def sigmoid_prime(activation: Tensor) -> Tensor:
    """The sigmoid's derivative written with its output, ``s (1 - s)``, as the tutorial's ``sigmoidPrime``."""
    return activation * (1 - activation)


class ScratchNetwork(LightningModule):
    """The tutorial's ``Neural_Network``: two sigmoid layers without biases, trained on hand-made gradients.

    Logged once per epoch: ``train/loss``, ``val/loss`` and ``test/loss``, the tutorial's printed loss
    ``mean((y - o)²)`` (``train/loss`` is measured before the epoch's update, as the tutorial prints it).
    ``predict`` returns the outputs.

    Args:
        input_size: Inputs (a count >= 1; the tutorial's 2).
        hidden_size: Hidden sigmoid units (a count >= 1; the tutorial's 3).
        output_size: Outputs (a count >= 1; the tutorial's 1).
        optimizer: Builds the optimizer; SGD with lr 1 is the tutorial's ``W += Xᵀ @ delta``.
    """

    #: Why ``--compile.enabled`` refuses this module (experiments/compile.py).
    compile_unsupported = "its gradients are computed by hand, outside autograd and forward"

    def __init__(
        self,
        input_size: PositiveInt = 2,
        hidden_size: PositiveInt = 3,
        output_size: PositiveInt = 1,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=1.0),
    ) -> None:
        super().__init__()
        # The parser enforces these domains; a module built from Python is checked here.
        if min(input_size, hidden_size, output_size) < 1:
            raise ValueError(
                f"input_size, hidden_size and output_size must be at least 1, got {input_size}, "
                f"{hidden_size} and {output_size}"
            )
        self.save_hyperparameters(ignore=["optimizer"])
        # The gradients are computed by hand: Lightning must not call backward or step for us.
        self.automatic_optimization = False
        self.optimizer = optimizer
        # torch.randn as in the tutorial, W1 first, so a seed gives the tutorial's weights.
        self.W1 = nn.Parameter(torch.randn(input_size, hidden_size))
        self.W2 = nn.Parameter(torch.randn(hidden_size, output_size))

    def layers(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The hidden activation (the tutorial's ``z2``) and the output ``o``."""
        hidden = torch.sigmoid(x @ self.W1)
        return hidden, torch.sigmoid(hidden @ self.W2)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)[1]

    @staticmethod
    def objective(output: Tensor, y: Tensor) -> Tensor:
        """``E = ½ Σ (o - y)²``, the function whose gradient the tutorial's backward pass computes."""
        return (output - y).pow(2).sum() / 2

    def gradients(self, x: Tensor, y: Tensor, hidden: Tensor, output: Tensor) -> tuple[Tensor, Tensor]:
        """``(∂E/∂W1, ∂E/∂W2)`` by the tutorial's backward pass, from one forward pass's activations."""
        output_delta = (y - output) * sigmoid_prime(output)
        hidden_delta = (output_delta @ self.W2.T) * sigmoid_prime(hidden)
        # The tutorial adds Xᵀ @ delta to the weights: that is minus the gradient.
        return -(x.T @ hidden_delta), -(hidden.T @ output_delta)

    def check_input(self, x: Tensor) -> None:
        """Fail with a readable message naming both shapes, not a matrix-multiply error."""
        if x.dim() != 2 or x.shape[1] != self.W1.shape[0]:
            raise InputShapeError(
                f"ScratchNetwork takes rows of {self.W1.shape[0]} inputs, got a batch of shape "
                f"{tuple(x.shape)} from the data: set --model.input_size to {x.shape[-1]}"
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.check_input(x)
        optimizer = self.optimizers()
        with torch.no_grad():
            hidden, output = self.layers(x)
            grad_w1, grad_w2 = self.gradients(x, y, hidden, output)
            if self.trainer.world_size > 1:
                # DDP averages the gradients autograd makes; these bypass autograd, so they are averaged
                # here, or each process would step its own way.
                grad_w1, grad_w2 = (
                    self.trainer.strategy.reduce(g, reduce_op="mean") for g in (grad_w1, grad_w2)
                )
        optimizer.zero_grad()
        # Under autocast (bf16-mixed) the matmuls give bf16; a .grad must have its parameter's dtype.
        self.W1.grad, self.W2.grad = grad_w1.to(self.W1.dtype), grad_w2.to(self.W2.dtype)
        # LightningOptimizer.step: one call per batch, so its hooks cost nothing here, and it counts
        # global_step.
        optimizer.step()
        loss = (y - output).pow(2).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)

    def _evaluate(self, batch: tuple[Tensor, Tensor], phase: str) -> None:
        x, y = batch
        self.check_input(x)
        loss = (y - self(x)).pow(2).mean()
        self.log(f"{phase}/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer, self.parameters())
