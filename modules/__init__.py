"""LightningModules, one file per lesson; importing the package registers them with the CLI."""

from modules.feedforward import FeedForwardNet
from modules.linear_regression import LinearRegression
from modules.regression import RegressionModule
from modules.sine_rnn import SineRNN

__all__ = ["FeedForwardNet", "LinearRegression", "RegressionModule", "SineRNN"]
