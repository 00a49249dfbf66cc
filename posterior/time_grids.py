"""The time grids samplers walk along: which ``num_steps`` of a schedule's ``T`` training times.

``"auto"`` (the default, :data:`AUTO_TIME_GRID`), ``"leading"`` (DDIM's), ``"trailing"``,
``"linspace"``, the grids by noise level ``"logsnr"`` (uniform in ``log(abar / (1 - abar))``),
``"sqrt_abar"`` and ``"karras"`` (Karras et al.'s ``rho = 7`` levels), or a given decreasing
sequence of training times. Each named grid gives exactly ``num_steps`` strictly decreasing times
for every ``num_steps`` in ``1 .. T``. :meth:`posterior.schedule.NoiseSchedule.timesteps` calls
:func:`grid_times` with its VP ``abar_t``.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AUTO_TIME_GRID",
    "DEFAULT_TIME_GRID",
    "TIME_GRIDS",
    "TimeGrid",
    "check_time_grid",
    "grid_times",
]

#: The named time grids of :meth:`NoiseSchedule.timesteps`.
TIME_GRIDS = ("auto", "leading", "trailing", "linspace", "logsnr", "sqrt_abar", "karras")

#: What ``"auto"`` walks on every schedule: a grid by noise level (the VP ``abar_t``), not by
#: integer time, so that equivalent schedules get the same noise levels (see
#: :meth:`NoiseSchedule.timesteps`; chosen by ``benchmarks/time_grids.py``).
AUTO_TIME_GRID = "karras"

#: The grid of ``ps.sample`` and of the chain oracles unless told otherwise.
DEFAULT_TIME_GRID = "auto"

#: A named grid in :data:`TIME_GRIDS` or a strictly decreasing sequence of training times.
TimeGrid = str | Sequence[int]

#: The grids by noise level: a function of the VP ``abar: Tensor[T]`` (float64) that increases
#: with ``t``; the grid is uniform in it.
_LEVEL_GRIDS = {
    "logsnr": lambda abar: (1 - abar).clamp_min(1e-300).log() - abar.log(),
    "sqrt_abar": lambda abar: -abar.sqrt(),
    "karras": lambda abar: ((1 - abar) / abar).pow(0.5 / 7.0),
}


def check_time_grid(grid: Any, name: str = "time_grid") -> TimeGrid:
    """``grid`` if it is a named grid or a strictly decreasing sequence of times ``>= 0``; else a
    one-line ``ValueError`` naming ``name``. (The upper bound ``T - 1`` is checked by the schedule.)"""
    if isinstance(grid, str):
        if grid not in TIME_GRIDS:
            raise ValueError(
                f"{name} must be one of {', '.join(TIME_GRIDS)} or a sequence of times, got {grid!r}"
            )
        return grid
    if isinstance(grid, Tensor):
        grid = grid.flatten().tolist()
    if not isinstance(grid, Sequence) or len(grid) == 0:
        raise ValueError(f"{name} must be a grid name or a non-empty sequence of integer times, got {grid!r}")
    ts = list(grid)
    if any(isinstance(t, bool) or not isinstance(t, numbers.Integral) for t in ts):
        raise ValueError(f"{name} must hold integer training times, got {ts!r}")
    ts = [int(t) for t in ts]
    if ts[-1] < 0 or any(a <= b for a, b in itertools.pairwise(ts)):
        raise ValueError(f"{name} must be strictly decreasing times >= 0 (largest first), got {ts!r}")
    return tuple(ts)


def grid_times(abar: Tensor, num_steps: int, spacing: TimeGrid = DEFAULT_TIME_GRID) -> Tensor:
    """A strictly decreasing sub-sequence of ``num_steps`` of the ``T`` training times of a schedule
    whose VP ``abar: Tensor[T]`` decreases with ``t``.

    ``"leading"`` (DDIM/diffusers): ``0, k, 2k, ...`` with ``k = T // num_steps`` (tops out at
    ``(num_steps - 1) k``, below ``T - 1``); above ``T / 2`` steps, where ``k`` would be 1,
    ``floor(i T / num_steps)`` instead (tops out at ``T - 2``); ``"trailing"``:
    ``round(T - i T / num_steps) - 1`` for ``i < num_steps``, from ``T - 1`` down (diffusers'
    values); ``"linspace"``: evenly
    rounded from ``T - 1`` to ``0``. The grids by noise level, from ``T - 1`` to ``0``, take the
    tabulated times nearest to a uniform grid in a function of the VP ``abar_t`` (made
    strictly decreasing where rounding would repeat a time): ``"logsnr"``: uniform in
    ``log(abar / (1 - abar))``; ``"sqrt_abar"``: uniform in ``sqrt(abar)`` (the signal
    coefficient); ``"karras"``: uniform in ``sigma^(1/7)`` with ``sigma = sqrt((1 - abar) /
    abar)``, the noise levels of Karras et al. (2022) with ``rho = 7``. A sequence: those
    times, which must be ``num_steps`` strictly decreasing times in ``0 .. T-1``.
    ``"auto"``: :data:`AUTO_TIME_GRID`. Returns ``LongTensor[num_steps]``, largest first.
    Append ``CLEAN`` for the final step.
    """
    T = abar.numel()
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in 1..{T}, got {num_steps}")
    if not isinstance(spacing, str):
        ts = check_time_grid(spacing, "spacing")
        if len(ts) != num_steps:
            raise ValueError(f"the given time grid has {len(ts)} times but num_steps is {num_steps}")
        if ts[0] >= T:
            raise ValueError(f"the given time grid starts at {ts[0]}, beyond the schedule's T - 1 = {T - 1}")
        return torch.tensor(ts, dtype=torch.long)
    i = torch.arange(num_steps, dtype=torch.long)
    if spacing == "auto":
        spacing = AUTO_TIME_GRID
    if spacing == "leading":
        k = T // num_steps
        ts = i * k if k >= 2 else (i * T) // num_steps
    elif spacing == "trailing":  # diffusers' values, exactly num_steps of them
        step = (T - T / num_steps) - T
        ts = torch.round(T + i.double() * step).long().flip(0) - 1
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, num_steps).round().long()
        ts = ts if num_steps > 1 else torch.tensor([T - 1])
    elif spacing in _LEVEL_GRIDS:
        ts = _uniform_times(_LEVEL_GRIDS[spacing](abar.double()), num_steps)
    else:
        raise ValueError(f"unknown spacing {spacing!r}: use one of {', '.join(TIME_GRIDS)} or a sequence")
    return ts.long().flip(0)


def _uniform_times(level: Tensor, num_steps: int) -> Tensor:
    """Increasing times from ``0`` to ``T - 1`` whose ``level: Tensor[T]`` (increasing in ``t``)
    are nearest to a uniform grid between ``level[0]`` and ``level[T - 1]``, made strictly
    increasing where rounding would repeat a time."""
    T = level.numel()
    if num_steps == 1:
        return torch.tensor([T - 1])
    targets = torch.linspace(float(level[0]), float(level[-1]), num_steps, dtype=torch.float64)
    idx = torch.searchsorted(level.contiguous(), targets).clamp(1, T - 1)
    left, right = idx - 1, idx
    nearer_left = (level[left] - targets).abs() <= (level[right] - targets).abs()
    ts = torch.where(nearer_left, left, right)
    ts[0], ts[-1] = 0, T - 1
    # strictly increasing (ts[j] >= ts[j-1] + 1, pushing up), then back inside 0..T-1
    # (ts[j] <= ts[j+1] - 1, pulling down): running max / min of ts[j] - j
    j = torch.arange(num_steps)
    ts = (ts - j).cummax(0).values + j
    ts[-1] = min(int(ts[-1]), T - 1)
    return (ts - j).flip(0).cummin(0).values.flip(0) + j
