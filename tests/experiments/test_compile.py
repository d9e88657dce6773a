"""``--compile.*`` (experiments/compile.py): a lesson trains compiled on the CPU (inductor), learns as the
eager run does, and its checkpoints load either way, with the state dict's own keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.compile import MODES, Compile
from tests.conftest import config

SHORT = ["--trainer.max_epochs=4", "--trainer.check_val_every_n_epoch=1", "--compile.dynamic=false"]


def last(root: Path, version: int) -> Path:
    return root / "lightning_logs" / "first_network" / f"version_{version}" / "checkpoints" / "last.ckpt"


def test_a_compiled_lesson_learns_like_the_eager_one_and_its_checkpoints_load_both_ways(cli, in_tmp):
    from modules import FeedForwardNet

    eager = cli("fit", "--config", config("first_network"), *SHORT)
    compiled = cli("fit", "--config", config("first_network"), *SHORT, "--compile.enabled=true")
    # Compiled in place: forward goes through TorchDynamo, and the module is still the lesson's class.
    assert getattr(compiled.model, "_compiled_call_impl", None) is not None
    assert type(compiled.model) is FeedForwardNet
    losses = [run.trainer.callback_metrics["train/loss"] for run in (eager, compiled)]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)
    saved = torch.load(last(in_tmp, 1), map_location="cpu", weights_only=True)
    assert not [key for key in saved["state_dict"] if "_orig_mod" in key]
    reference = torch.load(last(in_tmp, 0), map_location="cpu", weights_only=True)["state_dict"]
    assert saved["state_dict"].keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(saved["state_dict"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    # The compiled run's checkpoint in an eager module, and the eager run's in a compiled test.
    restored = FeedForwardNet.load_from_checkpoint(last(in_tmp, 1))
    assert torch.equal(restored.net[0].weight, saved["state_dict"]["net.0.weight"])
    tested = cli(
        "test",
        "--config",
        config("first_network"),
        f"--ckpt_path={last(in_tmp, 0)}",
        "--compile.enabled=true",
    )
    assert getattr(tested.model, "_compiled_call_impl", None) is not None
    assert torch.isfinite(tested.trainer.callback_metrics["test/loss"])


def test_the_options_reach_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    seen: dict = {}
    module = SimpleNamespace(compile=lambda **kwargs: seen.update(kwargs))
    Compile(enabled=True, mode="max-autotune", dynamic=True, fullgraph=True).setup(None, module, "fit")
    assert seen == {"backend": "inductor", "mode": "max-autotune", "dynamic": True, "fullgraph": True}
    seen.clear()
    Compile(enabled=True, backend="aot_eager").setup(None, module, "fit")
    assert seen["mode"] is None  # a mode is inductor's only
    seen.clear()
    Compile(enabled=False).setup(None, module, "fit")
    assert not seen
    assert set(MODES) <= set(torch._inductor.list_mode_options()) | {"default"}
