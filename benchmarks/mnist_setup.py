"""MNIST problems whose truths the shipped prior drew itself, shared by the diagnostic scripts.

The truths are ancestral draws of the prior over the samplers' own ``steps``-step grid, so an exact
sampler targets the very chain that drew them.
"""

from __future__ import annotations

from typing import Any

import torch

import posterior as ps


def prior_drawn_problems(
    num: int, steps: int = 25, operator: str = "inpaint", noise: float = 0.1, seed: int = 0
) -> tuple[ps.InverseProblem, torch.Tensor]:
    """``num`` problems at once and their truths ``[num, 1, 28, 28]``: ``operator`` is ``"inpaint"``
    (bottom half hidden) or ``"sr2"`` (2x super-resolution); Gaussian noise ``noise``."""
    prior = ps.load_prior("mnist")
    gen = torch.Generator().manual_seed(seed)
    truth = prior.sample(num, gen, num_steps=steps)
    if operator == "inpaint":
        op: Any = ps.operators.Inpainting(ps.operators.half_mask(tuple(prior.event_shape), "bottom"))
    elif operator == "sr2":
        op = ps.operators.SuperResolution(2)
    else:
        raise ValueError(f"operator must be 'inpaint' or 'sr2', got {operator!r}")
    clean = op.A(truth)
    y = clean + noise * torch.randn(clean.shape, generator=gen)
    return ps.InverseProblem(prior, op, y, noise), truth
