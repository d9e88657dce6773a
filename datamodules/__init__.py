"""LightningDataModules, one file per data source; importing the package registers them with the CLI."""

from datamodules.line import LineDataModule
from datamodules.random_tensors import RandomTensorDataModule
from datamodules.sine_wave import SineWaveDataModule
from datamodules.tensors import InMemoryDataModule, TensorBatches

__all__ = [
    "InMemoryDataModule",
    "LineDataModule",
    "RandomTensorDataModule",
    "SineWaveDataModule",
    "TensorBatches",
]
