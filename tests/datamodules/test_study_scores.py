"""StudyScoresDataModule: the tutorial's students scaled into [0, 1], and the student to predict scaled
alike."""

from __future__ import annotations

import pytest
import torch

from core.errors import DataConfigError
from datamodules import StudyScoresDataModule


def test_tutorial_students_scaled_by_training_maxima():
    data = StudyScoresDataModule()
    data.setup("fit")
    x, y = data.splits["train"]
    expected = torch.tensor([[2 / 3, 9 / 9], [1 / 3, 5 / 9], [3 / 3, 6 / 9]])
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(y, torch.tensor([[0.92], [1.00], [0.89]]))
    assert x.min() >= 0 and x.max() <= 1
    # val and test are the same three students: the tutorial has no held-out data.
    data.setup("validate")
    data.setup("test")
    assert torch.equal(data.splits["val"][0], x) and torch.equal(data.splits["test"][1], y)
    batches = list(data.train_dataloader())
    assert len(batches) == 1 and batches[0][0].shape == (3, 2)  # one full batch, as the tutorial


def test_prediction_input_uses_the_training_scale():
    data = StudyScoresDataModule()
    data.setup("predict")
    # [4, 8] divided by the training maxima [3, 9], not by its own maximum 8 (the tutorial's slip).
    torch.testing.assert_close(data.splits["predict"][0], torch.tensor([[4 / 3, 8 / 9]]))


def test_own_students_and_batches():
    data = StudyScoresDataModule(
        hours=[[1, 2], [2, 4], [4, 8], [3, 1]],
        scores=[10, 20, 40, 30],
        predict_hours=[[2, 2]],
        max_score=50,
        batch_size=2,
    )
    data.setup("fit")
    x, y = data.splits["train"]
    torch.testing.assert_close(x[2], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(y.flatten(), torch.tensor([0.2, 0.4, 0.8, 0.6]))
    assert [len(b[0]) for b in data.train_dataloader()] == [2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hours": [[1, 2]], "scores": [1, 2]}, "one entry per student"),
        ({"hours": [[1, 2], [1]], "scores": [1, 2]}, "as many values"),
        ({"predict_hours": [[1, 2, 3]]}, "as many values"),
        ({"max_score": 0}, "max_score must be positive"),
        ({"hours": [[0, 2], [0, 3]], "scores": [1, 2]}, "positive value to scale by"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        StudyScoresDataModule(**kwargs)
