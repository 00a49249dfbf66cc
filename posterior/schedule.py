"""Noise schedules ``x_t = alpha_t x_0 + sigma_t eps`` and the time grids samplers walk along.

Every schedule is tabulated at ``T`` integer training times ``t = 0 .. T-1`` (noise increasing
with ``t``); time ``-1`` (:data:`CLEAN`) stands for the clean data, so the last step of every
reverse sampler goes from ``t_1`` to ``-1``.

The samplers work in the variance-preserving (VP) parametrisation of any schedule. With
``s_t = sqrt(alpha_t^2 + sigma_t^2)``, the rescaled ``x_t / s_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps`` with ``abar_t = alpha_t^2 / s_t^2``: a variance-exploding (EDM) or a
flow-matching schedule is a VP schedule after rescaling ``x``, with the same ``x_0`` and ``eps``.
So a sampler walks ``abar`` at the grid's times whatever the schedule, and a prior maps the VP
variable to its native one (``schedule.to_native``) before it calls its network. Continuous-time
schedules appear through their ``T`` tabulated noise levels (``EDMSchedule.sigmas``,
``FlowSchedule.times``); the chain a sampler simulates is the DDPM/DDIM chain on those levels.

* :class:`VPSchedule`: ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)`` (DDPM).
* :class:`EDMSchedule`: ``alpha_t = 1``, ``sigma_t`` on Karras et al.'s (2022) ``rho``-spaced levels.
* :class:`FlowSchedule`: ``x_t = (1 - t) x_0 + t eps`` (rectified flow / flow matching).

Time grids (:meth:`NoiseSchedule.timesteps`, ``spacing=``): ``"auto"`` (the default,
:data:`AUTO_TIME_GRID`), ``"leading"`` (DDIM's), ``"trailing"``, ``"linspace"``, the grids by noise
level ``"logsnr"`` (uniform in ``log(abar / (1 - abar))``), ``"sqrt_abar"`` and ``"karras"``
(Karras et al.'s ``rho = 7`` levels), or a given decreasing sequence of training times. Each named
grid gives exactly ``num_steps`` strictly decreasing times for every ``num_steps`` in ``1 .. T``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from posterior._utils import check_int, check_number, check_positive
from posterior.time_grids import (
    AUTO_TIME_GRID,
    DEFAULT_TIME_GRID,
    TIME_GRIDS,
    TimeGrid,
    check_time_grid,
    grid_times,
)

__all__ = [
    "AUTO_TIME_GRID",
    "CLEAN",
    "DEFAULT_TIME_GRID",
    "TIME_GRIDS",
    "EDMSchedule",
    "FlowSchedule",
    "NoiseSchedule",
    "TimeGrid",
    "VPSchedule",
    "check_time_grid",
]

#: The time index of clean data, ``abar_{-1} = 1``.
CLEAN = -1

#: The largest EDM noise level: the VP-equivalent ``1 / (1 + sigma^2)`` stays a normal float32.
_SIGMA_LIMIT = 1e18


def _arg(where: str, check: Any, *args: Any, **kwargs: Any) -> Any:
    """``check(*args, **kwargs)`` (a ``posterior._utils`` validator) with ``where`` before its error."""
    try:
        return check(*args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _first_tie(abar: Tensor) -> int | None:
    """The first time ``t`` whose ``abar_t`` is not strictly below ``abar_{t-1}`` (``abar_{-1} = 1``)
    or not positive, in float64; ``None`` for a valid table."""
    ext = torch.cat([abar.new_ones(1), abar])
    bad = ((ext[1:] >= ext[:-1]) | (ext[1:] <= 0)).nonzero()
    return int(bad[0]) if len(bad) else None


class NoiseSchedule:
    """A noise schedule ``x_t = alpha_t x_0 + sigma_t eps`` tabulated at ``T`` training times.

    Args:
        alphas_cumprod: ``Tensor[T]``, the VP-equivalent ``abar_t = alpha_t^2 / (alpha_t^2 +
            sigma_t^2)``, strictly decreasing in ``(0, 1]``.
        alpha, sigma: ``Tensor[T]``, the native coefficients (default: the VP ones,
            ``sqrt(abar)`` and ``sqrt(1 - abar)``).

    Attributes:
        alphas_cumprod: ``Tensor[T]`` float32; ``alpha_bar(t)`` gives float64 values.
        kind: ``"vp"``, ``"edm"`` or ``"flow"``.
    """

    kind: ClassVar[str] = "vp"

    def __init__(
        self, alphas_cumprod: Tensor, alpha: Tensor | None = None, sigma: Tensor | None = None
    ) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if abar.numel() < 2:
            raise ValueError("a schedule needs at least two time steps")
        if not torch.isfinite(abar).all() or (abar <= 0).any() or (abar > 1).any():
            raise ValueError("alphas_cumprod must lie in (0, 1]")
        if (abar[1:] >= abar[:-1]).any():
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = abar.to(torch.float32)
        # float64 copies with the clean time prepended: index with t + 1.
        self._abar_ext = torch.cat([abar.new_ones(1), abar])
        alpha = abar.sqrt() if alpha is None else torch.as_tensor(alpha, dtype=torch.float64).flatten()
        sigma = (1 - abar).sqrt() if sigma is None else torch.as_tensor(sigma, dtype=torch.float64).flatten()
        if alpha.shape != abar.shape or sigma.shape != abar.shape:
            raise ValueError("alpha and sigma must have one entry per training time")
        self._alpha_ext = torch.cat([abar.new_ones(1), alpha])
        self._sigma_ext = torch.cat([abar.new_zeros(1), sigma])

    # ----------------------------------------------------------------- queries
    @property
    def num_train_steps(self) -> int:
        return self.alphas_cumprod.numel()

    def _lookup(self, table: Tensor, t: int | Tensor, like: Tensor | None) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.long)
        if (t < CLEAN).any() or (t >= self.num_train_steps).any():
            raise ValueError(f"time out of range -1..{self.num_train_steps - 1}: {t.tolist()}")
        out = table[t.cpu() + 1]
        if like is not None:
            out = out.to(device=like.device, dtype=like.dtype)
        return out

    def alpha_bar(self, t: int | Tensor, like: Tensor | None = None) -> Tensor:
        """VP-equivalent ``abar_t`` for integer times ``t`` in ``-1 .. T-1`` (``-1`` gives 1).

        Returns a tensor of ``t``'s shape (float64, or ``like``'s device and dtype when given).
        """
        return self._lookup(self._abar_ext, t, like)

    def alpha(self, t: int | Tensor, like: Tensor | None = None) -> Tensor:
        """Native ``alpha_t`` (``1`` at ``CLEAN``), of ``t``'s shape."""
        return self._lookup(self._alpha_ext, t, like)

    def sigma(self, t: int | Tensor, like: Tensor | None = None) -> Tensor:
        """Native ``sigma_t`` (``0`` at ``CLEAN``), of ``t``'s shape."""
        return self._lookup(self._sigma_ext, t, like)

    def scale(self, t: int | Tensor, like: Tensor | None = None) -> Tensor:
        """``s_t = sqrt(alpha_t^2 + sigma_t^2)``: native ``x_t = s_t *`` VP ``x_t`` (1 for VP)."""
        return (
            (self._lookup(self._alpha_ext, t, None) ** 2 + self._lookup(self._sigma_ext, t, None) ** 2)
            .sqrt()
            .to(**({} if like is None else {"device": like.device, "dtype": like.dtype}))
        )

    def to_native(self, x: Tensor, t: int | Tensor) -> Tensor:
        """Native ``x_t = s_t x`` for the VP variable ``x: Tensor[n, *event_shape]`` at times
        ``t`` (an int or ``LongTensor[n]``)."""
        s = self.scale(t, like=x)
        return x * (s.reshape(-1, *([1] * (x.dim() - 1))) if s.dim() else s)

    def from_native(self, x: Tensor, t: int | Tensor) -> Tensor:
        """The VP variable ``x / s_t`` of a native ``x_t: Tensor[n, *event_shape]``."""
        s = self.scale(t, like=x)
        return x / (s.reshape(-1, *([1] * (x.dim() - 1))) if s.dim() else s)

    # ----------------------------------------------------------------- time grids
    def timesteps(self, num_steps: int, spacing: TimeGrid = DEFAULT_TIME_GRID) -> Tensor:
        """A strictly decreasing sub-sequence of ``num_steps`` training times, largest first
        (``LongTensor[num_steps]``): :func:`posterior.time_grids.grid_times` on this schedule's
        VP ``abar_t``. Append ``CLEAN`` for the final step."""
        return grid_times(self._abar_ext[1:], num_steps, spacing)

    def time_pairs(self, num_steps: int, spacing: TimeGrid = DEFAULT_TIME_GRID) -> list[tuple[int, int]]:
        """``[(t, s), ...]``: consecutive reverse transitions ``t -> s`` ending at ``s = CLEAN``."""
        ts = self.timesteps(num_steps, spacing).tolist()
        return list(zip(ts, [*ts[1:], CLEAN], strict=True))

    def __repr__(self) -> str:
        a = self.alphas_cumprod
        return f"{type(self).__name__}(T={self.num_train_steps}, abar[0]={a[0]:.5f}, abar[-1]={a[-1]:.3e})"


class VPSchedule(NoiseSchedule):
    """A variance-preserving schedule given by its cumulative products ``abar_t``.

    Args:
        alphas_cumprod: ``Tensor[T]``, strictly decreasing values in ``(0, 1]``.
    """

    kind: ClassVar[str] = "vp"

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__(alphas_cumprod)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def linear(
        cls, num_train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> VPSchedule:
        """DDPM's linear betas (Ho et al., 2020): ``num_train_steps >= 2``, ``0 < beta_start <=
        beta_end < 1``."""
        where = "VPSchedule.linear"
        T = _arg(where, check_int, num_train_steps, "num_train_steps", 2)
        lo = _arg(where, check_number, beta_start, "beta_start", 0, 1, low_open=True, high_open=True)
        hi = _arg(where, check_number, beta_end, "beta_end", 0, 1, low_open=True, high_open=True)
        if lo > hi:
            raise ValueError(f"{where}: need beta_start <= beta_end, got {lo:g} and {hi:g}")
        abar = torch.cumprod(1 - torch.linspace(lo, hi, T, dtype=torch.float64), 0)
        t = _first_tie(abar)
        if t == 0:
            raise ValueError(f"{where}: beta_start={lo:g} is too small (1 - beta_start rounds to 1)")
        if t is not None:
            raise ValueError(
                f"{where}: num_train_steps={T} is too many for beta_end={hi:g}: abar underflows to 0 "
                f"in float64 at t={t}; use fewer steps or smaller betas"
            )
        return cls(abar)

    @classmethod
    def cosine(cls, num_train_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> VPSchedule:
        """The cosine schedule of Nichol & Dhariwal (2021), betas clipped at ``max_beta`` in
        ``(0, 1)``; the offset ``s >= 0``."""
        where = "VPSchedule.cosine"
        T = _arg(where, check_int, num_train_steps, "num_train_steps", 2)
        s = _arg(where, check_number, s, "s", 0)
        cap = _arg(where, check_number, max_beta, "max_beta", 0, 1, low_open=True, high_open=True)
        grid = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        abar = torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=cap), 0)
        t = _first_tie(abar)
        if t is not None:
            why = "1 - max_beta rounds to 1" if 1 - cap == 1 else f"abar_t does not decrease at t={t}"
            raise ValueError(
                f"{where}: max_beta={cap:g} with num_train_steps={T}, s={s:g} gives no valid "
                f"schedule in float64 ({why})"
            )
        return cls(abar)

    @classmethod
    def from_diffusers(cls, scheduler: Any) -> VPSchedule:
        """The schedule of any diffusers scheduler exposing ``alphas_cumprod``."""
        abar = getattr(scheduler, "alphas_cumprod", None)
        if abar is None:
            raise TypeError(f"{type(scheduler).__name__} has no alphas_cumprod")
        return cls(torch.as_tensor(abar))


class EDMSchedule(NoiseSchedule):
    """Variance exploding: ``x_t = x_0 + sigma_t eps`` on Karras et al.'s (2022) noise levels.

    ``sigma_t = (sigma_min^(1/rho) + t / (T - 1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``
    for ``t = 0 .. T-1`` (the levels of diffusers' ``EDMEulerScheduler``, increasing with ``t``);
    VP-equivalent ``abar_t = 1 / (1 + sigma_t^2)``.

    Args:
        sigma_min, sigma_max: the smallest and largest noise levels, ``0 < sigma_min < sigma_max``.
        rho: the spacing exponent (``rho > 0``; 7 in the paper).
        num_train_steps: how many levels ``T`` tabulate the continuum.

    Attributes:
        sigmas: ``Tensor[T]`` float64, the noise levels.
    """

    kind: ClassVar[str] = "edm"

    def __init__(
        self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, num_train_steps: int = 1000
    ) -> None:
        where = "EDMSchedule"
        sigma_min = _arg(where, check_positive, sigma_min, "sigma_min")
        sigma_max = _arg(where, check_positive, sigma_max, "sigma_max")
        rho = _arg(where, check_positive, rho, "rho")
        T = _arg(where, check_int, num_train_steps, "num_train_steps", 2)
        if not sigma_min < sigma_max:
            raise ValueError(f"{where}: need sigma_min < sigma_max, got {sigma_min:g} and {sigma_max:g}")
        if sigma_max > _SIGMA_LIMIT:
            raise ValueError(
                f"{where}: sigma_max={sigma_max:g} is too large (at most {_SIGMA_LIMIT:g}, where the "
                "VP-equivalent 1 / (1 + sigma_max^2) is still a normal float32)"
            )
        try:
            lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        except OverflowError:
            lo = hi = math.inf
        if not math.isfinite(hi):
            raise ValueError(f"{where}: rho={rho:g} is too small: sigma_max**(1/rho) overflows")
        sigmas = (torch.linspace(0, 1, T, dtype=torch.float64) * (hi - lo) + lo) ** rho
        t = _first_tie(1 / (1 + sigmas**2))
        if t == 0:
            raise ValueError(
                f"{where}: sigma_min={sigma_min:g} is too small: 1 / (1 + sigma_min^2) rounds to 1 in "
                "float64, so the lowest level would be clean data"
            )
        if t is not None or not (sigmas[1:] > sigmas[:-1]).all():
            raise ValueError(f"{where}: rho={rho:g} merges adjacent noise levels in float64 (7 in the paper)")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self._init_sigmas(sigmas)

    def _init_sigmas(self, sigmas: Tensor) -> None:
        self.sigmas = sigmas
        super().__init__(1 / (1 + sigmas**2), torch.ones_like(sigmas), sigmas)

    @classmethod
    def from_sigmas(cls, sigmas: Tensor) -> EDMSchedule:
        """A variance-exploding schedule on given increasing noise levels ``sigmas: Tensor[T] > 0``."""
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        if sigmas.numel() < 2 or not torch.isfinite(sigmas).all() or (sigmas <= 0).any():
            raise ValueError("sigmas must be at least two finite positive noise levels")
        if (sigmas[1:] <= sigmas[:-1]).any():
            raise ValueError("sigmas must be strictly increasing")
        out = cls.__new__(cls)
        out.sigma_min, out.sigma_max, out.rho = float(sigmas[0]), float(sigmas[-1]), math.nan
        out._init_sigmas(sigmas)
        return out

    def __repr__(self) -> str:
        return (
            f"EDMSchedule(T={self.num_train_steps}, sigma_min={self.sigma_min:g}, "
            f"sigma_max={self.sigma_max:g}, rho={self.rho:g})"
        )


class FlowSchedule(NoiseSchedule):
    """Flow matching / rectified flow: ``x_t = (1 - tau) x_0 + tau eps``.

    The continuous time ``tau`` is tabulated at ``tau_t = (t + 1) / T`` for ``t = 0 .. T-1`` (the
    levels of diffusers' ``FlowMatchEulerDiscreteScheduler``), optionally shifted to
    ``shift tau / (1 + (shift - 1) tau)``, and capped at ``tau_max < 1`` so that the last level
    keeps a little signal (VP-equivalent ``abar = (1 - tau)^2 / ((1 - tau)^2 + tau^2) > 0``).

    Args:
        num_train_steps: how many levels ``T`` tabulate the continuum.
        shift: the timestep shift of SD3-style flows (``1``: none).
        tau_max: the largest time (default ``1 - 1e-4``, ``abar ~ 1e-8``).

    Attributes:
        times: ``Tensor[T]`` float64, the levels ``tau_t``.
    """

    kind: ClassVar[str] = "flow"

    def __init__(self, num_train_steps: int = 1000, shift: float = 1.0, tau_max: float = 1 - 1e-4) -> None:
        where = "FlowSchedule"
        T = _arg(where, check_int, num_train_steps, "num_train_steps", 2)
        shift = _arg(where, check_positive, shift, "shift")
        tau_max = _arg(where, check_number, tau_max, "tau_max", 0, 1, low_open=True, high_open=True)
        tau = torch.arange(1, T + 1, dtype=torch.float64) / T
        tau = (shift * tau / (1 + (shift - 1) * tau)).clamp(max=tau_max)
        alpha, sigma = 1 - tau, tau
        t = _first_tie(alpha**2 / (alpha**2 + sigma**2))
        if t is not None or not (tau[1:] > tau[:-1]).all():
            if shift != 1:
                raise ValueError(
                    f"{where}: shift={shift:g} merges adjacent levels in float64 (with tau_max={tau_max:g} "
                    f"and num_train_steps={T}): use a shift closer to 1"
                )
            raise ValueError(f"{where}: tau_max={tau_max:g} merges the last levels: use a larger tau_max")
        self.times, self.shift, self.tau_max = tau, shift, tau_max
        super().__init__(alpha**2 / (alpha**2 + sigma**2), alpha, sigma)

    def __repr__(self) -> str:
        return f"FlowSchedule(T={self.num_train_steps}, shift={self.shift:g}, tau_max={self.tau_max:g})"
