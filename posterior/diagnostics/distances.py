"""Distances between sample sets, for checking samplers against exact posteriors."""

from __future__ import annotations

import torch
from torch import Tensor

from posterior._utils import as_generator

__all__ = ["sliced_wasserstein", "wasserstein_1d"]


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """W1 between the empirical laws of ``a: [..., n]`` and ``b: [..., n']`` along the last dim.

    Equal sizes use sorted differences; unequal sizes compare quantile functions on the merged
    grid of both CDFs (exact for empirical measures).
    """
    a, b = a.sort(-1).values, b.sort(-1).values
    if a.shape[-1] == b.shape[-1]:
        return (a - b).abs().mean(-1)
    n, m = a.shape[-1], b.shape[-1]
    levels = torch.cat(
        [torch.arange(1, n + 1, device=a.device) / n, torch.arange(1, m + 1, device=a.device) / m]
    )
    levels = levels.sort().values.to(a.dtype)
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    ia = torch.clamp(torch.ceil(levels * n - 1e-9).long() - 1, 0, n - 1)
    ib = torch.clamp(torch.ceil(levels * m - 1e-9).long() - 1, 0, m - 1)
    return ((a[..., ia] - b[..., ib]).abs() * widths).sum(-1)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 100,
    seed: int | torch.Generator | None = 0,
) -> Tensor:
    """Sliced W1: the mean over random unit directions of the 1-D W1 of the projections.

    Args:
        x: ``Tensor[*b, n, d]`` samples (``*b`` batch dims are kept).
        y: ``Tensor[*b, n', d]`` samples.
        num_projections: number of directions, drawn uniformly on the sphere (shared by the batch).
        seed: fixes the directions, so two calls compare like with like.

    Returns:
        ``Tensor[*b]``.
    """
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"dimensions differ: {x.shape[-1]} vs {y.shape[-1]}")
    x = x.reshape(*x.shape[:-1], -1)
    y = y.reshape(*y.shape[:-1], -1)
    gen = as_generator(seed, "cpu")
    dirs = torch.randn(x.shape[-1], num_projections, generator=gen, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(device=x.device, dtype=x.dtype)
    px = (x @ dirs).transpose(-1, -2)  # [*b, P, n]
    py = (y.to(x.dtype) @ dirs).transpose(-1, -2)
    return wasserstein_1d(px, py).mean(-1)
