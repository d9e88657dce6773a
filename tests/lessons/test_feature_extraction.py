"""configs/feature_extraction.yaml end to end: predict from a trained MNIST checkpoint writes the named
layers' activations of the test set, and its mistakes are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets
from torchvision.models.feature_extraction import create_feature_extractor

from experiments.main import main
from modules import MNISTConvNet
from tests.conftest import QUIET, config

QUIET_TRAINER = {"enable_progress_bar": False, "enable_model_summary": False}
SMALL = ["--data.val_split=16", "--data.batch_size=16"]


def test_feature_extraction_fast_dev_run(cli, mnist_dir):
    run = cli(
        "predict",
        "--config",
        config("feature_extraction"),
        f"--data.data_dir={mnist_dir}",
        *SMALL,
        "--trainer.fast_dev_run=true",
    )
    assert run.trainer.state.finished


def test_predict_writes_the_named_features_of_the_checkpoint(cli, in_tmp, mnist_dir):
    # On the CPU: the features are compared with a CPU computation of the same layers to float32 rounding.
    cli(
        "fit", "--config", config("mnist_convnet"), "--data.data_dir", str(mnist_dir),
        "--data.val_split", "16", "--data.batch_size", "16", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    predict = cli(
        "predict", "--config", config("feature_extraction"), "--data.data_dir", str(mnist_dir),
        "--data.batch_size", "16", "--ckpt_path", "last", "--trainer.accelerator", "cpu",
    )  # fmt: skip
    runs = in_tmp / "lightning_logs" / "mnist_convnet"
    checkpoint = runs / "version_0" / "checkpoints" / "last.ckpt"
    assert Path(predict.trainer.ckpt_path).resolve() == checkpoint.resolve()

    saved = torch.load(runs / "version_0" / "predict_feature_extraction" / "features.pt")
    assert set(saved) == {"features", "labels", "layers"}
    assert saved["layers"] == ["conv_1", "conv_2"] == list(saved["features"])
    conv_1, conv_2 = saved["features"]["conv_1"], saved["features"]["conv_2"]
    assert conv_1.shape == (32, 32, 26, 26) and conv_2.shape == (32, 64, 24, 24)
    assert conv_1.dtype == conv_2.dtype == torch.float32
    # The first image's features as a figure beside the file: the input, conv_1 and conv_2 panels.
    with Image.open(runs / "version_0" / "predict_feature_extraction" / "figures" / "features.png") as figure:
        assert figure.size == (1200, 360)  # 3 panels, conv_1 8 maps wide: the 12-inch cap
    # The 32 test images in file order, not shuffled, none dropped.
    test = datasets.MNIST(mnist_dir, train=False)
    assert saved["labels"].shape == (32,)
    assert torch.equal(saved["labels"], test.targets.long())

    # The trained weights (2 Adadelta steps at lr 1.0 from the same seed), on the images as the
    # datamodule hands them over: x / 255, the config's normalize: false.
    net = MNISTConvNet.load_from_checkpoint(checkpoint, map_location="cpu").net.eval()
    images = test.data.unsqueeze(1).float() / 255
    with torch.no_grad():
        expected_1 = F.conv2d(images, net.conv_1.weight, net.conv_1.bias)
        expected_2 = create_feature_extractor(net, return_nodes={"conv_1": "out"})(images)["out"]
    torch.testing.assert_close(conv_1, expected_1)
    torch.testing.assert_close(conv_2, expected_2)  # torchvision's "conv_1" is the module conv_2
    untrained = MNISTConvNet().net.conv_1
    assert not torch.allclose(untrained.weight, net.conv_1.weight)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--trainer.callbacks.init_args.layers=[conv_3]", 'no layer "conv_3" in MNISTConvNet.net'),
        ("--trainer.callbacks.init_args.module=body", 'MNISTConvNet has no network "body"'),
        ("--trainer.callbacks.init_args.dtype=int8", "dtype: expected one of 'float32', 'float16'"),
    ],
)
def test_command_reports_mistakes_in_one_line(in_tmp, mnist_dir, capsys, flag, message):
    args = ["predict", "--config", config("feature_extraction"), "--data.data_dir", str(mnist_dir), flag]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
