"""The named problems of ``compare`` and ``calibrate`` and the image prior behind them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from posterior.cli._common import UsageError, check_device, first_line

__all__ = ["PROBLEMS_HELP", "image_prior", "make_problem"]

PROBLEMS_HELP = (
    "gmm-demo (2-D, 25-component mixture, one noisy linear measurement); "
    "gmm:DIM:OBS (the MCGdiff mixture benchmark, e.g. gmm:8:2); "
    "mnist-inpaint, mnist-sr4, mnist-blur, mnist-denoise (held-out digits; --prior picks the model)"
)


def image_prior(spec: str, device: Any) -> Any:
    """A shipped prior by name (``mnist``) or a diffusers folder; :class:`UsageError` otherwise."""
    import posterior as ps

    path = Path(spec)
    if path.exists() or os.sep in spec or spec.startswith("."):
        if not path.is_dir():
            raise UsageError(f"prior folder {spec!r} does not exist or is not a folder")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"prior folder {spec!r} is not readable")
        if not ((path / "unet").is_dir() or (path / "config.json").is_file()):  # before importing diffusers
            raise UsageError(
                f"cannot load a diffusers prior from {spec!r}: no unet/ subfolder and no config.json"
            )
        try:
            return ps.DiffusersPrior.from_pretrained(path, device=device)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise UsageError(f"cannot load a diffusers prior from {spec!r}: {first_line(err)}") from None
    try:
        return ps.load_prior(spec, device=device)
    except ValueError as err:
        raise UsageError(f"{first_line(err)} (or pass a diffusers folder)") from None


def make_problem(
    spec: str,
    num_problems: int = 1,
    seed: int = 0,
    device: str = "cpu",
    prior: str = "mnist",
    noise: float | None = None,
) -> Any:
    """Build a named problem (see :data:`PROBLEMS_HELP`); ``num_problems > 1`` simulates a batch
    with known truths from the same prior, operator and noise level."""
    import torch

    import posterior as ps

    dev = check_device(device)
    if spec == "gmm-demo" or spec.startswith("gmm:"):
        if spec == "gmm-demo":
            base = ps.problems.gmm_demo(seed)
        else:
            parts = spec.split(":")
            try:
                dim, obs = int(parts[1]), int(parts[2])
                if len(parts) != 3:
                    raise ValueError
            except (ValueError, IndexError):
                raise UsageError(f"bad problem {spec!r}: expected gmm:DIM:OBS, e.g. gmm:8:2") from None
            try:
                base = ps.problems.gmm_benchmark(dim, obs, seed)
            except ValueError as err:
                raise UsageError(f"bad problem {spec!r}: {first_line(err)}") from None
        if num_problems > 1:
            base = ps.problems.simulate(base.prior, base.operator, base.noise_std, num_problems, seed=seed)
        return base.to(dev)
    image_ops = {"inpaint", "sr4", "blur", "denoise"}
    kind = spec.removeprefix("mnist-")
    if not spec.startswith("mnist-") or kind not in image_ops:
        raise UsageError(f"unknown problem {spec!r}; known problems: {PROBLEMS_HELP}")
    model = image_prior(prior, dev)
    shape = tuple(model.event_shape)
    ops = ps.operators
    if kind == "inpaint":
        op = ops.Inpainting(ops.half_mask(shape, "bottom", device=dev))
    elif kind == "sr4":
        op = ops.SuperResolution(4)
    elif kind == "blur":
        op = ops.Blur(ops.gaussian_kernel(1.5, device=dev, dtype=model.dtype))
    else:
        op = ops.Identity()
    noise = 0.1 if noise is None else noise
    if shape == (1, 28, 28):
        truth, _ = ps.priors.shipped.mnist_heldout(slice(0, num_problems), device=dev, dtype=model.dtype)
        if truth.shape[0] < num_problems:
            raise UsageError(f"only {truth.shape[0]} held-out digits; ask for fewer problems")
    else:  # another model: truths drawn from the model itself
        truth = model.sample(num_problems, torch.Generator(dev).manual_seed(seed), num_steps=50)
    problem = ps.problems.simulate(model, op, noise, num_problems, seed=seed, truth=truth)
    if num_problems == 1:  # a single problem, unbatched
        single = ps.InverseProblem(model, problem.operator, problem.y_batch[0], noise)
        single.truth = truth[0]
        return single
    return problem
