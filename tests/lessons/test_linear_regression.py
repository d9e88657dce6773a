"""configs/linear_regression.yaml end to end: the same per-epoch losses as the tutorial's plain loop, to
1e-5, and the recovered slope and intercept within the lesson's bar."""

from __future__ import annotations

import pytest

from tests import tutorial_loops
from tests.lessons.parity import assert_same_initial_weights, lightning_run


def test_linear_regression_matches_the_tutorials_loop(in_tmp):
    cli, initial, lightning_losses = lightning_run("linear_regression")
    dm = cli.datamodule
    model, seed_initial, seed_losses = tutorial_loops.linear_regression(
        *dm.splits["train"], batch_size=dm.batch_size, shuffle_seed=dm.seed
    )
    assert_same_initial_weights(
        {k.removeprefix("linear."): v for k, v in seed_initial.items()}, initial, "net."
    )
    assert len(lightning_losses) == 100
    assert lightning_losses == pytest.approx(seed_losses, abs=1e-5)
    w, b = model.linear.weight.item(), model.linear.bias.item()
    assert cli.model.slope_intercept() == pytest.approx((w, b), abs=1e-5)
    # The lesson's bar.
    assert w == pytest.approx(2.0, abs=0.1) and b == pytest.approx(3.0, abs=0.1)
