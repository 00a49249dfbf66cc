"""The examples' command lines: they write under ``out/`` unless ``--out`` says otherwise (never
into the tracked ``docs/figures/``). Only the argument parsing runs here, not the examples."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mnist_inpainting", "photon_limited_mnist"])
def test_examples_write_under_out_unless_told(name: str) -> None:
    module = _load(name)
    args = module.parse_args([])
    assert args.out == Path("out") / f"{name}.png" and not args.out.is_absolute()
    assert module.parse_args(["--out", "docs/figures/x.png"]).out == Path("docs/figures/x.png")


def test_spread_picks_draws_over_all_of_them() -> None:
    spread = _load("mnist_inpainting").spread
    assert spread(64, 3) == [0, 32, 63] and spread(2, 3) == [0, 1]
