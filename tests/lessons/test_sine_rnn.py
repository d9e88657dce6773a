"""configs/sine_rnn.yaml end to end: the tutorial's hand-made recurrent cell gives the tutorial's per-epoch
losses and weights, to 1e-5, and predicts the wave within the lesson's bar."""

from __future__ import annotations

import pytest
import torch

from tests import tutorial_loops
from tests.lessons.parity import lightning_run


def test_sine_rnn_matches_the_tutorials_loop(in_tmp):
    cli, initial, lightning_losses = lightning_run("sine_rnn")
    x, y = cli.datamodule.splits["train"]
    (w1, w2), (w1_0, w2_0), seed_losses = tutorial_loops.sine_rnn(x, y)
    assert torch.equal(w1_0, initial["w1"]) and torch.equal(w2_0, initial["w2"])
    assert len(lightning_losses) == 300
    assert lightning_losses == pytest.approx(seed_losses, abs=1e-5)
    assert torch.allclose(cli.model.w1, w1, atol=1e-5) and torch.allclose(cli.model.w2, w2, atol=1e-5)
    # The lesson's bar: predictions over the sequence within MSE 0.01.
    with torch.no_grad():
        assert (cli.model(x) - y).pow(2).mean().item() < 0.01
