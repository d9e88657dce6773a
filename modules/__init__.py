"""LightningModules, one file per lesson; importing the package registers them with the CLI."""

from modules.captioning import CaptionModel, CaptionModelError
from modules.classifier import ImageClassifier, InputShapeError
from modules.convnets import MNISTConvNet, SimpleCNN
from modules.feedforward import FeedForwardNet
from modules.landmarks import LandmarkRegressor, NormalizedMeanError
from modules.linear_regression import LinearRegression
from modules.regression import RegressionModule
from modules.scratch import ScratchNetwork
from modules.sine_rnn import SineRNN
from modules.skipgram import SkipGramModel
from modules.tabular import TabularRegressor
from modules.tree_lstm import TreeLSTM, WordVectorsError

__all__ = [
    "CaptionModel",
    "CaptionModelError",
    "FeedForwardNet",
    "ImageClassifier",
    "InputShapeError",
    "LandmarkRegressor",
    "LinearRegression",
    "MNISTConvNet",
    "NormalizedMeanError",
    "RegressionModule",
    "ScratchNetwork",
    "SimpleCNN",
    "SineRNN",
    "SkipGramModel",
    "TabularRegressor",
    "TreeLSTM",
    "WordVectorsError",
]
