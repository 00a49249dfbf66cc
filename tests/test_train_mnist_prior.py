"""The prior's training script: its v-prediction target and its resumable checkpoints."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_mnist_prior.py"


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("train_mnist_prior", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_v_target_inverts_to_x0_and_eps(train) -> None:
    """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho, 2022): with x_t = sqrt(a) x0 + sqrt(1 - a) eps,
    sqrt(a) x_t - sqrt(1 - a) v = x0 and sqrt(1 - a) x_t + sqrt(a) v = eps, exactly."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 5, 5, generator=gen), torch.randn(4, 1, 5, 5, generator=gen)
    a = torch.tensor([1e-4, 0.1, 0.5, 0.999]).view(4, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = train.target_for("v_prediction", x0, eps, a)
    torch.testing.assert_close(a.sqrt() * x_t - (1 - a).sqrt() * v, x0)
    torch.testing.assert_close((1 - a).sqrt() * x_t + a.sqrt() * v, eps)
    assert train.target_for("epsilon", x0, eps, a) is eps
    with pytest.raises(ValueError, match="prediction"):
        train.target_for("sample", x0, eps, a)


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(train, tmp_path: Path) -> None:
    """Two sittings (2 steps, then resume to 4) give the same weights, EMA, optimizer moments and
    generator state as one 4-step sitting; the checkpoint is safetensors + JSON only."""
    images = np.random.default_rng(0).integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    data = tmp_path / "digits.npz"
    np.savez(data, images=images, labels=np.zeros(12, np.int64))
    common = ["--data", str(data), "--batch-size", "5", "--channels", "32,32", "--warmup", "2"]

    def run(name: str, steps: int) -> None:
        train.main(
            [*common, "--steps", str(steps), "--out", str(tmp_path / f"w_{name}"),
             "--checkpoint", str(tmp_path / f"c_{name}")]
        )  # fmt: skip

    run("one", 4)
    run("two", 2)
    run("two", 4)
    one, two = (load_file(str(tmp_path / f"c_{n}" / "state.safetensors")) for n in ("one", "two"))
    assert set(one) == set(two) and any(k.startswith("opt.") for k in one)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=0, msg=key)
    state = json.loads((tmp_path / "c_two" / "state.json").read_text())
    assert state["step"] == 4
    assert sorted(p.name for p in (tmp_path / "c_two").iterdir()) == ["state.json", "state.safetensors"]
    info = json.loads((tmp_path / "w_two" / "training.json").read_text())
    assert info["steps"] == 4 and info["final"] and info["prediction_type"] == "v_prediction"
    with pytest.raises(ValueError, match="--lr"):
        train.main([*common, "--steps", "6", "--lr", "1e-2", "--checkpoint", str(tmp_path / "c_two")])
    # a cool-down that would have lowered the learning rate of steps already taken is refused
    with pytest.raises(ValueError, match="cooldown"):
        train.main(
            [*common, "--steps", "6", "--cooldown-steps", "4", "--checkpoint", str(tmp_path / "c_two")]
        )


def test_learning_rate_schedule(train) -> None:
    """Warm-up, constant, then a linear cool-down to 0 at the last step."""
    lrs = [train.lr_at(k, 1.0, 2, total=8, cooldown=4) for k in range(8)]
    assert lrs == [0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert train.lr_at(5, 1.0, 2) == 1.0
