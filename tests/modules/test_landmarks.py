"""LandmarkRegressor and its NME metric: the metric against hand-computed values, output shapes, the
map of predictions back to the image files' pixels, the mean-shape baseline, and learning on tiny faces."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from core.errors import ExperimentError
from datamodules import FaceLandmarksDataModule
from modules import LandmarkRegressor, NormalizedMeanError
from modules.landmarks import SoftArgmax, face_errors
from tests.conftest import EpochHistory
from tests.face_data import write_faces


def two_faces() -> tuple[torch.Tensor, torch.Tensor]:
    """Truth and prediction for two faces whose NMEs are 0.5 and 0.01."""
    torch.manual_seed(0)
    target = torch.rand(2, 68, 2) * 50
    target[0, 36], target[0, 45] = torch.tensor([0.0, 0.0]), torch.tensor([6.0, 8.0])  # eye corners 10 apart
    target[1, 36], target[1, 45] = torch.tensor([5.0, 5.0]), torch.tensor([5.0, 25.0])  # 20 apart
    preds = target.clone()
    preds[0] += torch.tensor([3.0, 4.0])  # every point 5 off: 5 / 10
    preds[1, 0] += torch.tensor([0.0, 13.6])  # one point 13.6 off, mean 0.2: 0.2 / 20
    return preds, target


def test_nme_matches_hand_computed_values():
    preds, target = two_faces()
    torch.testing.assert_close(face_errors(preds, target), torch.tensor([0.5, 0.01]))
    metric = NormalizedMeanError()
    metric.update(preds, target)
    assert metric.compute().item() == pytest.approx(0.255, abs=1e-6)
    # Face by face, the mean over faces is the same.
    metric.reset()
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    assert metric.compute().item() == pytest.approx(0.255, abs=1e-6)
    # Other reference points change the normaliser: points 0 and 1 of face 0.
    other = NormalizedMeanError(left=0, right=1)
    other.update(preds[:1], target[:1])
    distance = (target[0, 0] - target[0, 1]).norm()
    assert other.compute().item() == pytest.approx((5 / distance).item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"must both be \(N, points, 2\)"):
        metric.update(preds[:, :10], target)


def test_soft_argmax_finds_the_peak_and_averages_between_peaks():
    maps = torch.full((1, 2, 4, 8), -1e4)
    maps[0, 0, 1, 6] = 0.0  # one peak: cell (row 1, column 6) of a 4 x 8 map
    maps[0, 1, 0, 0] = maps[0, 1, 3, 7] = 0.0  # two equal peaks in opposite corners
    points = SoftArgmax()(maps)
    # Cell centres, relative to the image: x = (6 + 0.5) / 8 - 0.5, y = (1 + 0.5) / 4 - 0.5.
    torch.testing.assert_close(points[0, 0], torch.tensor([0.3125, -0.125]))
    torch.testing.assert_close(points[0, 1], torch.tensor([0.0, 0.0]))


@pytest.mark.parametrize("head", ["soft_argmax", "linear"])
def test_outputs_68_points_and_predict_maps_to_the_files_pixels(head):
    model = LandmarkRegressor(head=head, width=4).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        relative = model(images)
        assert relative.shape == (2, 68, 2)
        # to_original: scale then offset per axis, per image.
        to_original = torch.tensor([[[2.0, 3.0], [10.0, -4.0]], [[0.5, 0.5], [0.0, 1.0]]])
        mapped = model.predict_step((images, to_original), 0)
    pixels = (relative + 0.5) * 32
    expected = torch.stack(
        [
            pixels[0] * torch.tensor([2.0, 3.0]) + torch.tensor([10.0, -4.0]),
            pixels[1] * 0.5 + torch.tensor([0.0, 1.0]),
        ]
    )
    torch.testing.assert_close(mapped, expected)


def test_eye_corners_must_exist_and_differ():
    message = r"^--model\.eye_corners \[36, 45\] must be point indices below --model\.num_points 5: give two"
    with pytest.raises(ExperimentError, match=message):
        LandmarkRegressor(num_points=5)
    with pytest.raises(ExperimentError, match=r"^--model\.eye_corners \[2, 2\]: the two points must differ"):
        LandmarkRegressor(num_points=5, eye_corners=(2, 2))


def test_mean_shape_baseline_is_the_mean_training_target():
    model = LandmarkRegressor(width=4)
    assert model.mean_shape() is None
    size = torch.tensor([32.0, 32.0])
    train_points = torch.rand(6, 68, 2) * 32
    model.training_step((torch.rand(6, 3, 32, 32), train_points), 0)
    torch.testing.assert_close(model.mean_shape(), (train_points / size - 0.5).mean(dim=0))
    # Validation scores that mean shape, in pixels, against every face.
    val_points = torch.rand(3, 68, 2) * 32
    with torch.no_grad():
        model.validation_step((torch.rand(3, 3, 32, 32), val_points), 0)
    mean_pixels = train_points.mean(dim=0).expand_as(val_points)
    expected = face_errors(mean_pixels, val_points).mean()
    assert model.val_nme_mean_shape.compute().item() == pytest.approx(expected.item(), rel=1e-4)


def test_learns_tiny_faces(tmp_path):
    data = FaceLandmarksDataModule(
        data_dir=str(write_faces(tmp_path / "faces", count=16)),
        image_size=32,
        crop_size=28,
        val_split=4,
        batch_size=4,
    )
    model = LandmarkRegressor(width=8, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    history = EpochHistory("train/loss")
    trainer = Trainer(
        max_epochs=12,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history],
    )
    trainer.fit(model, data)
    losses = history.values
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
    metrics = trainer.callback_metrics
    for key in ("val/nme", "val/nme_mean_shape", "val/nme_best", "train/nme"):
        assert torch.isfinite(metrics[key]) and metrics[key] > 0
