"""The tutorial's two image networks: the CNN chapter's SimpleCNN and the convnet chapter's Keras model.

Run:
    python -m experiments fit --config configs/simple_cnn.yaml      # CIFAR-10
    python -m experiments fit --config configs/mnist_convnet.yaml   # MNIST

Departures from the tutorial: the CNN chapter's ``SimpleCNN`` is PyTorch and is kept layer for layer (its
``forward`` reshapes with ``view(-1, 18 * 16 * 16)``, the same as ``flatten(1)``). The convnet chapter's
序列处理 section trains its MNIST model with Keras, not PyTorch; ``MNISTConvNet`` is that model in
PyTorch, with Keras's initialisation (Glorot-uniform weights, zero biases) and Keras's Adadelta
settings (lr 1.0, rho 0.95, eps 1e-7) in the config. Keras's final softmax is left to the loss
(``predict`` applies it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from core.domains import Pixels, PositiveInt
from core.errors import InputShapeError
from core.optim import LRSchedulerCallable, OptimizerCallable
from modules.classifier import ImageClassifier


class SimpleCNN(ImageClassifier):
    """The CNN chapter's network: conv 3→18 (3x3, padding 1), ReLU, max-pool 2, fc 4608→64, ReLU, fc 64→10.

    Layers are named ``conv1``, ``fc1``, ``fc2`` as in the tutorial, so feature extraction can name them.

    Args:
        num_classes: Classes to tell apart (a count >= 2).
        optimizer: Builds the optimizer from the parameters (SGD, lr 0.001, momentum 0.9 by default).
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch.
    """

    input_shape = (3, 32, 32)  # fc1's 4608 inputs are 18 channels of 16x16 after the pool

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.001, momentum=0.9),
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net = nn.Sequential()
        self.net.add_module("conv1", nn.Conv2d(3, 18, kernel_size=3, stride=1, padding=1))
        self.net.add_module("relu1", nn.ReLU())
        self.net.add_module("pool", nn.MaxPool2d(kernel_size=2, stride=2))
        self.net.add_module("flatten", nn.Flatten())
        self.net.add_module("fc1", nn.Linear(18 * 16 * 16, 64))
        self.net.add_module("relu2", nn.ReLU())
        self.net.add_module("fc2", nn.Linear(64, num_classes))


class MNISTConvNet(ImageClassifier):
    """The Keras MNIST convnet: Conv 32 3x3 ReLU, Conv 64 3x3 ReLU, MaxPool 2, Dropout 0.25, Flatten,
    Dense 128 ReLU, Dropout 0.5, Dense 10. Layers ``conv_1``, ``conv_2``, ``dense_1``, ``dense_2``.

    Args:
        num_classes: Classes to tell apart (a count >= 2).
        in_channels: Image channels (a count >= 1; 1 for MNIST).
        image_size: Side of the square input in pixels (at least 6, for two 3x3 convolutions and a 2x2
            pool; 28 for MNIST).
        optimizer: Builds the optimizer (Keras's Adadelta settings by default).
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch.
    """

    #: Its dropout is fixed, as in the Keras model, and its masks are drawn per process: a fit on two
    #: processes cannot equal one process's (docs/architecture.md).
    deterministic_args: ClassVar[dict[str, Any] | None] = None

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 1,
        image_size: Pixels = 28,
        optimizer: OptimizerCallable = lambda params: torch.optim.Adadelta(
            params, lr=1.0, rho=0.95, eps=1e-7
        ),
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        if image_size < 6:
            raise InputShapeError(
                f"--model.image_size {image_size}: MNISTConvNet's two 3x3 convolutions and 2x2 pool need "
                "images of at least 6x6 pixels; give 6 or more (and data of that size)"
            )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.input_shape = (in_channels, image_size, image_size)
        side = (image_size - 4) // 2  # two valid 3x3 convolutions, then a 2x2 pool
        self.net = nn.Sequential()
        self.net.add_module("conv_1", nn.Conv2d(in_channels, 32, kernel_size=3))
        self.net.add_module("relu_1", nn.ReLU())
        self.net.add_module("conv_2", nn.Conv2d(32, 64, kernel_size=3))
        self.net.add_module("relu_2", nn.ReLU())
        self.net.add_module("pool", nn.MaxPool2d(2))
        self.net.add_module("dropout_1", nn.Dropout(0.25))
        self.net.add_module("flatten", nn.Flatten())
        self.net.add_module("dense_1", nn.Linear(64 * side * side, 128))
        self.net.add_module("relu_3", nn.ReLU())
        self.net.add_module("dropout_2", nn.Dropout(0.5))
        self.net.add_module("dense_2", nn.Linear(128, num_classes))
        for module in self.net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)  # Keras's glorot_uniform
                nn.init.zeros_(module.bias)
