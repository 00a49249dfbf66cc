"""Variance-preserving noise schedules and the time grids samplers walk along.

Forward process (Ho et al., 2020): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for the
integer training times ``t = 0 .. T-1``. Time ``-1`` stands for the clean data (``abar = 1``), so
the last step of every reverse sampler goes from ``t_1`` to ``-1``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["CLEAN", "VPSchedule"]

#: The time index of clean data, ``abar_{-1} = 1``.
CLEAN = -1


class VPSchedule:
    """A variance-preserving schedule given by its cumulative products ``abar_t``.

    Args:
        alphas_cumprod: ``Tensor[T]``, strictly decreasing values in ``(0, 1]``.
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if abar.numel() < 2:
            raise ValueError("a schedule needs at least two time steps")
        if not torch.isfinite(abar).all() or (abar <= 0).any() or (abar > 1).any():
            raise ValueError("alphas_cumprod must lie in (0, 1]")
        if (abar[1:] >= abar[:-1]).any():
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = abar.to(torch.float32)
        # float64 copy with abar_{-1} = 1 prepended: index with t + 1.
        self._abar_ext = torch.cat([abar.new_ones(1), abar])

    # ----------------------------------------------------------------- constructors
    @classmethod
    def linear(
        cls, num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> VPSchedule:
        """DDPM's linear betas (Ho et al., 2020)."""
        if num_train_steps < 2 or not 0 < beta_start <= beta_end < 1:
            raise ValueError("need num_train_steps >= 2 and 0 < beta_start <= beta_end < 1")
        betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, 0))

    @classmethod
    def cosine(cls, num_train_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> VPSchedule:
        """The cosine schedule of Nichol & Dhariwal (2021), betas clipped at ``max_beta``."""
        if num_train_steps < 2:
            raise ValueError("need num_train_steps >= 2")
        grid = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        return cls(torch.cumprod(1 - betas, 0))

    @classmethod
    def from_diffusers(cls, scheduler: Any) -> VPSchedule:
        """The schedule of any diffusers scheduler exposing ``alphas_cumprod``."""
        abar = getattr(scheduler, "alphas_cumprod", None)
        if abar is None:
            raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod")
        return cls(torch.as_tensor(abar))

    # ----------------------------------------------------------------- queries
    @property
    def num_train_steps(self) -> int:
        return self.alphas_cumprod.numel()

    def alpha_bar(self, t: int | Tensor, like: Tensor | None = None) -> Tensor:
        """``abar_t`` for integer times ``t`` in ``-1 .. T-1`` (``-1`` gives 1).

        Returns a tensor of ``t``'s shape, on ``like``'s device and dtype when given.
        """
        t = torch.as_tensor(t, dtype=torch.long)
        if (t < CLEAN).any() or (t >= self.num_train_steps).any():
            raise ValueError(f"time out of range -1..{self.num_train_steps - 1}: {t.tolist()}")
        out = self._abar_ext[t + 1]
        if like is not None:
            out = out.to(device=like.device, dtype=like.dtype)
        return out

    def timesteps(self, num_steps: int, spacing: str = "leading") -> Tensor:
        """A decreasing sub-sequence of ``num_steps`` training times, as used by DDIM.

        ``"leading"`` (DDIM/diffusers): ``0, k, 2k, ...`` with ``k = T // num_steps``;
        ``"trailing"``: ends exactly at ``T - 1``; ``"linspace"``: evenly rounded.
        Returns ``LongTensor[num_steps]``, largest first. Append ``CLEAN`` for the final step.
        """
        T = self.num_train_steps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be in 1..{T}, got {num_steps}")
        if spacing == "leading":
            ts = torch.arange(num_steps) * (T // num_steps)
        elif spacing == "trailing":
            ts = torch.round(torch.arange(T, 0, -T / num_steps)).long().flip(0) - 1
        elif spacing == "linspace":
            ts = torch.linspace(0, T - 1, num_steps).round().long()
        else:
            raise ValueError(f"unknown spacing {spacing!r}: use 'leading', 'trailing' or 'linspace'")
        return ts.long().flip(0)

    def time_pairs(self, num_steps: int, spacing: str = "leading") -> list[tuple[int, int]]:
        """``[(t, s), ...]``: consecutive reverse transitions ``t -> s`` ending at ``s = CLEAN``."""
        ts = self.timesteps(num_steps, spacing).tolist()
        return list(zip(ts, [*ts[1:], CLEAN], strict=True))

    def __repr__(self) -> str:
        a = self.alphas_cumprod
        return f"VPSchedule(T={self.num_train_steps}, abar[0]={a[0]:.5f}, abar[-1]={a[-1]:.3e})"
