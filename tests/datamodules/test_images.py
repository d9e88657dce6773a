"""Image datamodules over tiny datasets in their genuine formats: IDX (MNIST), pickled batches
(CIFAR-10), a JPEG folder; per-batch augmentation; normalisation; the offline errors."""

from __future__ import annotations

import pytest
import torch

from core.errors import DataConfigError, DataNotFoundError
from datamodules import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule
from datamodules.images import random_crop_flip
from tests.image_data import write_image_folder


def first_batch(loader):
    return next(iter(loader))


def test_mnist_reads_idx_files_splits_and_seeds(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_split=10, batch_size=8, seed=3)
    dm.setup("fit")
    dm.setup("test")
    (x_train, y_train), (x_val, _), (x_test, _) = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert x_train.shape == (54, 1, 28, 28) and x_train.dtype == torch.uint8
    assert x_val.shape == (10, 1, 28, 28) and x_test.shape == (32, 1, 28, 28)
    assert y_train.dtype == torch.long and y_train.min() >= 0 and y_train.max() <= 9
    # The bytes are the IDX file's: the class block written by the fixture is where the label says.
    raw = (mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:]
    assert torch.equal(x_test.flatten(), torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    again = MNISTDataModule(data_dir=str(mnist_dir), val_split=10, seed=3)
    again.setup("fit")
    assert torch.equal(again.splits["val"][1], dm.splits["val"][1])
    other = MNISTDataModule(data_dir=str(mnist_dir), val_split=10, seed=4)
    other.setup("fit")
    assert not torch.equal(other.splits["val"][0], dm.splits["val"][0])
    fraction = MNISTDataModule(data_dir=str(mnist_dir), val_split=0.25)
    fraction.setup("fit")
    assert len(fraction.splits["val"][1]) == 16


def test_mnist_batches_become_normalised_floats_on_transfer(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_split=0, batch_size=64, normalize=True)
    dm.setup("fit")
    images, _ = dm.on_after_batch_transfer(first_batch(dm.train_dataloader()), 0)
    assert images.dtype == torch.float32 and images.shape == (64, 1, 28, 28)
    raw = dm.splits["train"][0].float() / 255
    expected_mean = (raw.mean() - 0.1307) / 0.3081
    assert images.mean().item() == pytest.approx(expected_mean.item(), abs=1e-4)
    plain = MNISTDataModule(data_dir=str(mnist_dir), val_split=0, batch_size=64, normalize=False)
    plain.setup("fit")
    images, _ = plain.on_after_batch_transfer(first_batch(plain.train_dataloader()), 0)
    assert images.min() >= 0 and images.max() <= 1


def test_per_sample_path_gives_the_same_batches(mnist_dir):
    memory = MNISTDataModule(data_dir=str(mnist_dir), val_split=10, batch_size=64, seed=1)
    streamed = MNISTDataModule(data_dir=str(mnist_dir), val_split=10, batch_size=64, seed=1, in_memory=False)
    for dm in (memory, streamed):
        dm.setup("fit")
        dm.setup("test")
    x_mem, y_mem = first_batch(memory.test_dataloader())
    x_str, y_str = first_batch(streamed.test_dataloader())
    assert x_str.dtype == torch.uint8 and torch.equal(x_mem, x_str) and torch.equal(y_mem, y_str)
    assert sorted(streamed.splits["val"].indices) == sorted(
        torch.randperm(64, generator=torch.Generator().manual_seed(1))[:10].tolist()
    )


def test_cifar10_reads_pickled_batches(cifar_dir):
    dm = CIFAR10DataModule(data_dir=str(cifar_dir), val_split=10, batch_size=16)
    dm.setup("fit")
    dm.setup("test")
    x_train, _ = dm.splits["train"]
    assert x_train.shape == (90, 3, 32, 32) and x_train.dtype == torch.uint8
    assert dm.splits["test"][0].shape == (30, 3, 32, 32)
    # Channel-first conversion: the pickle's rows hold R, then G, then B planes.
    import pickle

    with open(cifar_dir / "cifar-10-batches-py" / "test_batch", "rb") as f:
        entry = pickle.load(f)
    assert torch.equal(dm.splits["test"][0][0].flatten(), torch.from_numpy(entry["data"][0]))
    assert dm.splits["test"][1].tolist() == entry["labels"]
    assert dm.random_crop_padding == 4 and dm.horizontal_flip


def test_cifar10_corrupted_files_are_one_clear_error(tmp_path):
    from tests.image_data import write_cifar10

    root = write_cifar10(tmp_path / "cifar")  # md5 sums cannot match: torchvision's check is kept
    dm = CIFAR10DataModule(data_dir=str(root))
    with pytest.raises(
        DataNotFoundError, match=r"not found or corrupted.*data_batch_1\.\.5.*--data\.download"
    ):
        dm.setup("fit")


def test_missing_mnist_names_folder_files_and_fix(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "--data.download true" in message
    assert "\n" not in message


def test_image_folder_decodes_caches_and_splits(image_folder_dir):
    dm = ImageFolderDataModule(data_dir=str(image_folder_dir), val_split=0.25, batch_size=8, seed=0)
    assert dm.classes == ["cat", "dog", "frog"]
    dm.setup("fit")
    dm.setup("test")
    x_train, y_train = dm.splits["train"]
    assert x_train.shape == (18, 3, 16, 16) and len(dm.splits["val"][1]) == 6
    assert dm.splits["test"][0].shape == (12, 3, 16, 16)
    assert sorted(torch.cat([y_train, dm.splits["val"][1]]).tolist()) == [0] * 8 + [1] * 8 + [2] * 8
    caches = sorted((image_folder_dir / ".cache").glob("*.pt"))
    assert len(caches) == 2
    # A later run reads the cache and decodes nothing.
    import datamodules.image_folder as image_folder

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    original = image_folder.decode_image
    image_folder.decode_image = no_decoding
    try:
        cached = ImageFolderDataModule(data_dir=str(image_folder_dir), val_split=0.25, seed=0)
        cached.setup("fit")
        assert torch.equal(cached.splits["train"][0], x_train)
    finally:
        image_folder.decode_image = original
    # JPEG is lossy; the bright class block the fixture wrote (top-left for "cat", value 200) survives.
    test_cats = dm.splits["test"][0][dm.splits["test"][1] == 0]
    assert (test_cats[:, :, :3, :3].float().mean() - 200).abs() < 10
    assert test_cats[:, :, 8:, 8:].float().mean() < 80


def test_a_truncated_image_cache_is_rebuilt_with_a_warning(image_folder_dir):
    first = ImageFolderDataModule(data_dir=str(image_folder_dir), val_split=0.25, seed=0)
    first.setup("fit")
    (cache,) = (image_folder_dir / ".cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:200])  # a copy cut short, a disk that filled up
    again = ImageFolderDataModule(data_dir=str(image_folder_dir), val_split=0.25, seed=0)
    with pytest.warns(
        UserWarning, match=rf"the image cache {cache} is unreadable .*decoding the images again"
    ):
        again.setup("fit")
    assert torch.equal(again.splits["train"][0], first.splits["train"][0])
    assert torch.load(cache, weights_only=True)["images"].shape[0] == 24  # written whole again
    assert not list(cache.parent.glob("*.tmp"))


def test_image_folder_uses_val_folder_and_rejects_bad_layouts(tmp_path):
    root = write_image_folder(tmp_path / "d", splits={"train": 4, "val": 2, "test": 2}, fmt="png")
    dm = ImageFolderDataModule(data_dir=str(root))
    dm.setup("fit")
    assert len(dm.splits["train"][1]) == 12 and len(dm.splits["val"][1]) == 6
    (root / "test" / "zebra").mkdir()
    with pytest.raises(DataNotFoundError, match="zebra"):
        ImageFolderDataModule(data_dir=str(root)).setup("test")
    with pytest.raises(DataNotFoundError, match="no class folders"):
        ImageFolderDataModule(data_dir=str(tmp_path / "empty"))
    mixed = write_image_folder(tmp_path / "mixed", splits={"train": 2}, size=16)
    write_image_folder(tmp_path / "mixed", splits={"train": 2}, classes=("extra",), size=20)
    with pytest.raises(DataConfigError, match="image_size"):
        ImageFolderDataModule(data_dir=str(mixed)).setup("fit")
    resized = ImageFolderDataModule(data_dir=str(mixed), image_size=8, val_split=0)
    resized.setup("fit")
    assert resized.splits["train"][0].shape[1:] == (3, 8, 8)


def test_random_crop_flip_is_per_image():
    torch.manual_seed(0)
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4).repeat(64, 1, 1, 1)
    flipped = random_crop_flip(images, padding=0, flip=True)
    is_flipped = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True)]
    assert 10 < sum(is_flipped) < 118  # drawn per image, not once per batch
    cropped = random_crop_flip(images, padding=2, flip=False)
    assert cropped.shape == images.shape
    shifted = [not torch.equal(c, i) for c, i in zip(cropped, images, strict=True)]
    assert 10 < sum(shifted) < 128
    # Every crop is a window of the zero-padded image.
    padded = torch.nn.functional.pad(images[0], (2, 2, 2, 2))
    windows = [padded[:, r : r + 4, c : c + 4] for r in range(5) for c in range(5)]
    assert any(torch.equal(cropped[0], w) for w in windows)
    assert torch.equal(random_crop_flip(images, padding=0, flip=False), images)
