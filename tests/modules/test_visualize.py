"""The 可视化 callbacks: what they put in TensorBoard after a short MNIST fit, the confusion matrix's
counts, which predictions count as wrong, and the helpers that prepare images for display."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from modules.visualize import ConfusionMatrix, filter_image, unnormalize, wrong_predictions
from tests.conftest import config

SHORT = [
    "--data.val_split=16",
    "--data.batch_size=16",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
]


def test_mnist_fit_puts_the_four_images_in_tensorboard(cli, in_tmp, mnist_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli("fit", "--config", config("mnist_convnet"), "--data.data_dir", str(mnist_dir), *SHORT)
    run = in_tmp / "lightning_logs" / "mnist_convnet" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    tags = set(events.Tags()["images"])
    assert {"train/inputs", "val/predictions", "weights/filters/net.conv_1", "val/confusion_matrix"} <= tags
    # One epoch, one image each: the sanity check draws nothing.
    assert all(len(events.Images(tag)) == 1 for tag in tags)

    # 16 images of 28x28, 8 per row, 2 pixels between: make_grid's layout.
    inputs = events.Images("train/inputs")[0]
    assert (inputs.width, inputs.height) == (8 * 30 + 2, 2 * 30 + 2)
    # 32 filters of 3x3 enlarged 8 times, 6 per row (ceil of sqrt 32), 1 pixel between.
    filters = events.Images("weights/filters/net.conv_1")[0]
    assert (filters.width, filters.height) == (6 * 25 + 1, 6 * 25 + 1)
    # matplotlib figures: 16 images in 8 columns x 2 rows at 100 dpi; a 10-class heat map.
    predictions = events.Images("val/predictions")[0]
    assert predictions.width > 2 * predictions.height > 200
    matrix = events.Images("val/confusion_matrix")[0]
    assert 300 < matrix.width < 1500 and 300 < matrix.height < 1500
    assert {p.name for p in (run / "figures").iterdir()} == {"val_predictions.png", "confusion_matrix.png"}


@pytest.mark.parametrize("flag", ["--trainer.logger=false", "--trainer.fast_dev_run=true"])
def test_without_tensorboard_the_callbacks_stand_aside(cli, in_tmp, mnist_dir, flag):
    run = cli("fit", "--config", config("mnist_convnet"), "--data.data_dir", str(mnist_dir), *SHORT, flag)
    assert run.trainer.state.finished
    assert not (in_tmp / "lightning_logs").exists()


def test_confusion_matrix_counts_true_against_predicted(tmp_path):
    trainer = SimpleNamespace(
        sanity_checking=False, fast_dev_run=False, loggers=[TensorBoardLogger(tmp_path)], is_global_zero=True
    )
    module = SimpleNamespace(device=torch.device("cpu"))
    callback = ConfusionMatrix()
    # Logits pick classes 0, 1, 2, 2 then 1, 1; the labels are 0, 1, 1, 2 then 1, 0.
    logits = torch.eye(3)[[0, 1, 2, 2, 1, 1]] * 5
    labels = torch.tensor([0, 1, 1, 2, 1, 0])
    callback.on_validation_batch_end(trainer, module, logits[:4], (None, labels[:4]), 0)
    callback.on_validation_batch_end(trainer, module, logits[4:], (None, labels[4:]), 1)
    expected = torch.tensor([[1, 1, 0], [0, 2, 1], [0, 0, 1]])  # row = true class, column = predicted
    assert torch.equal(callback.metric.compute(), expected)

    # The sanity check's batches are not counted.
    trainer.sanity_checking = True
    callback.on_validation_batch_end(trainer, module, logits, (None, labels), 0)
    assert torch.equal(callback.metric.compute(), expected)


def test_wrong_predictions_from_classes_or_logits():
    labels = torch.tensor([3, 1, 4, 1, 5])
    predicted = torch.tensor([3, 2, 4, 0, 5])
    assert wrong_predictions(predicted, labels).tolist() == [1, 3]
    assert wrong_predictions(torch.eye(6)[predicted], labels).tolist() == [1, 3]
    assert wrong_predictions(labels, labels).tolist() == []


def test_unnormalize_undoes_the_datamodules_normalisation():
    images = torch.rand(2, 3, 4, 4)
    mean_std = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    assert torch.allclose(unnormalize((images - mean) / std, mean_std), images, atol=1e-6)
    shown = unnormalize(images * 3 - 1, None)  # shown as is, clamped to [0, 1]
    assert shown.min() == 0 and shown.max() == 1


@pytest.mark.parametrize("in_channels", [1, 3, 5])
def test_filter_image_scales_each_filter_to_its_own_range(in_channels):
    conv = nn.Conv2d(in_channels, 4, kernel_size=3)
    with torch.no_grad():
        conv.weight.mul_(torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(4, 1, 1, 1))
    grid = filter_image(conv.weight, pixels_per_weight=2)
    # 4 filters, 2 per row, each 3x3 enlarged to 6x6, 1 pixel between: 3 x 15 x 15, grey when one channel.
    assert grid.shape == (3, 15, 15)
    if in_channels != 3:
        assert torch.equal(grid[0], grid[1]) and torch.equal(grid[0], grid[2])
    for row in (1, 8):
        for col in (1, 8):
            tile = grid[:, row : row + 6, col : col + 6]
            assert tile.min() == 0 and tile.max() == 1
