"""The 特征提取 lesson: ``predict`` from a trained checkpoint writes named activations of the whole test set
into one file; layer names are the network's module names; mistakes read as one line."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import nn
from torchvision import datasets
from torchvision.models.feature_extraction import get_graph_node_names

from datamodules import MNISTDataModule
from modules import MNISTConvNet
from modules.feature_extraction import FeatureWriter, feature_grid, grid_columns, layer_nodes, picture

QUIET_TRAINER = {"enable_progress_bar": False, "enable_model_summary": False}


def test_float16_features_and_other_layers(in_tmp, mnist_dir):
    model = MNISTConvNet()
    data = MNISTDataModule(data_dir=str(mnist_dir), batch_size=16, normalize=False)
    writer = FeatureWriter(["dense_1", "conv_2"], filename="half.pt", dtype="float16")
    logger = TensorBoardLogger(in_tmp, name="run")
    trainer = Trainer(logger=logger, callbacks=[writer], **QUIET_TRAINER)
    trainer.predict(model, datamodule=data, return_predictions=False)

    saved = torch.load(in_tmp / "run" / "version_0" / "half.pt")
    assert saved["layers"] == ["dense_1", "conv_2"]
    dense_1, conv_2 = saved["features"]["dense_1"], saved["features"]["conv_2"]
    assert dense_1.dtype == conv_2.dtype == torch.float16
    assert dense_1.shape == (32, 128) and conv_2.shape == (32, 64, 24, 24)
    images = datasets.MNIST(mnist_dir, train=False).data.unsqueeze(1).float() / 255
    with torch.no_grad():
        expected = model.net[:8].eval()(images)  # conv_1 ... dense_1, dropout off
    torch.testing.assert_close(dense_1.float(), expected, rtol=1e-3, atol=1e-3)
    # The figure of the first image's features: the input, then a panel per layer, 3.6 inches high.
    with Image.open(in_tmp / "run" / "version_0" / "figures" / "features.png") as figure:
        assert figure.size == (1000, 360)


def test_feature_grid_tiles_each_map_scaled_to_its_own_range():
    maps = torch.stack(
        [torch.arange(4.0).view(2, 2), -5 * torch.ones(2, 2), torch.tensor([[0.0, 2], [4, 8]])]
    )
    grid = feature_grid(maps)
    # 3 maps in one row (3 divides 3), 2x2 each with 1 pixel of NaN around: 4 x 10.
    assert grid.shape == (4, 10)
    torch.testing.assert_close(grid[1:3, 1:3], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert torch.equal(grid[1:3, 4:6], torch.zeros(2, 2))  # a flat map is 0, not a division by zero
    torch.testing.assert_close(grid[1:3, 7:9], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert grid[0].isnan().all() and grid[:, 3].isnan().all()  # the padding, drawn as background
    # A dense layer's 5 values: a 3x3 block scaled together, the rest NaN.
    block = feature_grid(torch.tensor([0.0, 1, 2, 3, 4]))
    torch.testing.assert_close(block.flatten()[:5], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert block.shape == (3, 3) and block.flatten()[5:].isnan().all()


def test_grid_columns_make_full_rectangles_where_they_can():
    assert [grid_columns(n) for n in (32, 64, 10, 7, 1)] == [8, 8, 5, 3, 1]


def test_picture_shows_colour_images_in_colour_and_others_by_their_first_channel():
    assert picture(torch.rand(3, 4, 5)).shape == (4, 5, 3)
    grey = picture(torch.tensor([[[2.0, 4.0]]]))
    assert torch.equal(grey, torch.tensor([[0.0, 1.0]]))


def test_no_file_without_a_run_folder(in_tmp, mnist_dir):
    data = MNISTDataModule(data_dir=str(mnist_dir), batch_size=16)
    writer = FeatureWriter(["conv_1"])
    trainer = Trainer(fast_dev_run=True, callbacks=[writer], **QUIET_TRAINER)
    trainer.predict(MNISTConvNet(), datamodule=data, return_predictions=False)
    assert not list(in_tmp.rglob("*.pt"))


def test_unknown_layer_lists_the_layers(in_tmp, mnist_dir):
    data = MNISTDataModule(data_dir=str(mnist_dir), batch_size=16)
    trainer = Trainer(logger=False, callbacks=[FeatureWriter(["conv_1", "conv_3"])], **QUIET_TRAINER)
    with pytest.raises(ValueError, match='no layer "conv_3"') as error:
        trainer.predict(MNISTConvNet(), datamodule=data)
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith(
        "input, conv_1, relu_1, conv_2, relu_2, pool, dropout_1, flatten, dense_1, relu_3, dropout_2, dense_2"
    )


def test_layers_are_module_names_not_torchvision_node_names():
    net = MNISTConvNet().net.eval()
    # torchvision strips the "_1" of conv_1 and renumbers: its "conv_1" is the second convolution.
    assert get_graph_node_names(net)[1][:4] == ["input", "conv", "relu", "conv_1"]
    nodes = layer_nodes(net)
    assert (nodes["conv_1"], nodes["conv_2"], nodes["dense_2"]) == ("conv", "conv_1", "dense_1")

    class Body(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block_1 = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.act(self.block_1(x)) + x)

    module = nn.Module()
    module.net = Body().eval()
    # A module called twice: its own name is the first call, torchvision's act_1 the second; add is an
    # operation; block_1 holds other modules and gives its last output.
    assert list(layer_nodes(module.net)) == ["x", "block_1.0", "block_1.1", "act", "add", "act_1"]
    writer = FeatureWriter(["block_1", "act", "act_1", "add"])
    writer.on_predict_start(None, module)  # type: ignore[arg-type]
    x = torch.randn(3, 4)
    out = writer.extractor(x)
    first = torch.relu(torch.tanh(module.net.block_1[0](x)))
    torch.testing.assert_close(out["block_1"], torch.tanh(module.net.block_1[0](x)))
    torch.testing.assert_close(out["act"], first)
    torch.testing.assert_close(out["add"], first + x)
    torch.testing.assert_close(out["act_1"], torch.relu(first + x))
