"""Lesson 线性回归's other half: logistic regression (逻辑回归), a linear classifier of MNIST digits.

Run: ``python -m experiments fit --config configs/logistic_regression.yaml --data.data_dir <folder>``

The chapter opens with "logistic regression or linear regression are supervised methods for classifying
discrete categories" and then fits only a line. This is the classifier it names: multinomial logistic
regression (softmax regression), one linear map from the pixels to a score per class, trained on the
cross-entropy of the softmax of the scores (the logistic loss; ``ImageClassifier`` computes it, with the
accuracy per phase). Without a hidden layer the model is convex: SGD finds the same optimum from any
start, and on MNIST it sits near 92 % test accuracy, the bar the convnet lessons leave far behind.

Departure from the chapter: its code is TensorFlow's linear regression; there is no logistic regression
code to port, so this follows the textbook form. ``class_templates()`` gives each class's weights as an
image, the classic picture of what a linear classifier learns.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from core.domains import Pixels, PositiveInt
from core.optim import LRSchedulerCallable, OptimizerCallable
from modules.classifier import ImageClassifier


class LogisticRegression(ImageClassifier):
    """Softmax regression: ``logits = W x + b`` on the flattened image, one row of ``W`` per class.

    Args:
        num_classes: Classes to tell apart (a count >= 2).
        in_channels: Image channels (a count >= 1; 1 for MNIST).
        image_size: Side of the square input in pixels (a count >= 1; 28 for MNIST).
        optimizer: Builds the optimizer (SGD with lr 0.1 by default).
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch.
    """

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 1,
        image_size: Pixels = 28,
        optimizer: OptimizerCallable = lambda params: torch.optim.SGD(params, lr=0.1),
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.input_shape = (in_channels, image_size, image_size)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(self.input_shape), num_classes))
        # Zero weights: the convex loss needs no symmetry breaking, and every run starts the same.
        nn.init.zeros_(self.net[1].weight)
        nn.init.zeros_(self.net[1].bias)

    def class_templates(self) -> Tensor:
        """Each class's weights in the shape of an image: ``(num_classes, channels, height, width)``."""
        return self.net[1].weight.detach().view(-1, *self.input_shape)
