"""LightningModules, one file per lesson; importing the package registers them with the CLI."""

from modules.classifier import ImageClassifier, InputShapeError
from modules.convnets import MNISTConvNet, SimpleCNN
from modules.feedforward import FeedForwardNet
from modules.linear_regression import LinearRegression
from modules.regression import RegressionModule
from modules.sine_rnn import SineRNN

__all__ = [
    "FeedForwardNet",
    "ImageClassifier",
    "InputShapeError",
    "LinearRegression",
    "MNISTConvNet",
    "RegressionModule",
    "SimpleCNN",
    "SineRNN",
]
