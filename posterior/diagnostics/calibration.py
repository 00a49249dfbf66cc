"""Calibration: coverage of credible intervals and simulation-based calibration (SBC).

SBC (Talts, Betancourt, Simpson, Vehtari, Gelman, 2018, "Validating Bayesian inference algorithms
with simulation-based calibration"): draw ``x ~ prior``, ``y ~ p(y | x)``, draw ``L`` samples
``x^(1..L)`` from the sampler's posterior for ``y``; the rank ``#{l : x^(l) < x}`` (per coordinate)
is uniform on ``{0, ..., L}`` for every coordinate iff the sampler is calibrated (for the ranks to be
uniform the ``L`` draws must be independent given ``y``). Many problems run at once through the
problem batch dimension ``B``.

Particle methods return correlated draws (resampling duplicates particles), so by default their
``L`` draws come from ``L`` independent runs (``mode="runs"``: each problem is replicated ``L``
times in the batch and one particle is picked from each run). Methods whose draws are independent
(approximate baselines, parallel MCMC chains) can use ``L`` draws of one run (``mode="draws"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from posterior._utils import as_generator, check_positive_int
from posterior.noise.base import NoiseModel
from posterior.operators.base import Operator
from posterior.priors.base import DiffusionPrior
from posterior.samplers.result import Result

__all__ = [
    "LEVELS",
    "Calibration",
    "Coverage",
    "SBCTest",
    "coverage",
    "coverage_curve_levels",
    "credible_interval",
    "default_num_bins",
    "sbc_ranks",
    "sbc_test",
    "simulation_based_calibration",
]

#: Default nominal levels of the central credible intervals.
LEVELS = (0.5, 0.8, 0.9, 0.95)


# --------------------------------------------------------------------------- coverage
def credible_interval(samples: Tensor, level: float | Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Central credible interval ``[q_{(1-a)/2}, q_{(1+a)/2}]`` from samples along ``dim``.

    Quantiles use the Weibull plotting positions: the ``q``-quantile of ``N`` sorted draws sits at
    (1-based, interpolated) rank ``q (N + 1)``. For ``N`` independent draws the interval between
    ranks ``r_lo < r_hi`` holds a further draw with probability ``(r_hi - r_lo) / (N + 1)``, so these
    intervals have the nominal coverage at any ``N`` (the usual ``q (N - 1)`` positions under-cover:
    ``a (N - 1) / (N + 1)``, i.e. 87% for a 90% interval from 64 draws). One sort, any tensor size.

    Args:
        samples: draws along ``dim`` (e.g. ``[B, N, *event]`` with ``dim=1``).
        level: a float in ``(0, 1)`` or ``Tensor[L]`` of levels (adds a leading ``L`` dim).

    Returns:
        ``(low, high)``, each ``samples`` with ``dim`` removed (and a leading ``[L]`` for a tensor
        of levels).
    """
    levels = torch.as_tensor(level, dtype=torch.float64)
    if ((levels <= 0) | (levels >= 1)).any():
        raise ValueError(f"credible levels must lie in (0, 1), got {levels.tolist()}")
    x = samples.movedim(dim, -1).sort(-1).values  # [..., N]
    n = x.shape[-1]

    def quantile(q: Tensor) -> Tensor:
        pos = (q * (n + 1) - 1).clamp(0, n - 1).to(x.device)  # 0-based rank, [L]
        lo = pos.floor().long().clamp(0, n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        frac = (pos - lo).to(x.dtype)
        xl, xh = x[..., lo], x[..., hi]  # [..., L]
        return (xl + frac * (xh - xl)).movedim(-1, 0)  # [L, ...]

    low, high = quantile((1 - levels.reshape(-1)) / 2), quantile((1 + levels.reshape(-1)) / 2)
    if levels.dim() == 0:
        return low[0], high[0]
    return low, high


@dataclass
class Coverage:
    """How often the truth falls in the central credible intervals, over ``B`` problems.

    Attributes:
        levels: ``Tensor[L]`` nominal levels.
        per_coordinate: ``Tensor[L, *event]``, share of the ``B`` problems covered, per coordinate.
        overall: ``Tensor[L]``, share over problems and coordinates.
        num_problems: ``B``.
        per_problem: ``Tensor[L, B]``, share of each problem's coordinates covered.
    """

    levels: Tensor
    per_coordinate: Tensor
    overall: Tensor
    num_problems: int
    per_problem: Tensor | None = None

    def stderr(self) -> Tensor:
        """Binomial standard error ``sqrt(a (1 - a) / B)`` of one coordinate's coverage: ``[L]``."""
        return (self.levels * (1 - self.levels) / self.num_problems).sqrt()

    def overall_stderr(self) -> Tensor:
        """Monte Carlo standard error of :attr:`overall`: ``[L]``.

        Problems are independent but the coordinates of one problem are not, so the error comes from
        the spread of the per-problem shares: ``std_b(per_problem) / sqrt(B)`` (for ``d = 1`` this is
        the binomial error).
        """
        if self.per_problem is None or self.num_problems < 2:
            return self.stderr()
        return self.per_problem.std(1) / self.num_problems**0.5

    def at(self, level: float) -> float:
        """Overall coverage at a nominal level that is in :attr:`levels`."""
        hit = (self.levels - level).abs() < 1e-9
        if not hit.any():
            raise ValueError(f"level {level} not computed; levels are {self.levels.tolist()}")
        return float(self.overall[hit][0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels.tolist(),
            "coverage": self.overall.tolist(),
            "stderr": self.overall_stderr().tolist(),
            "num_problems": self.num_problems,
        }


def coverage(samples: Tensor, truth: Tensor, levels: Sequence[float] | Tensor = LEVELS) -> Coverage:
    """Coverage of ``truth`` by the per-coordinate central credible intervals of ``samples``.

    Args:
        samples: ``Tensor[B, N, *event]`` posterior draws for ``B`` problems.
        truth: ``Tensor[B, *event]``, the ``x`` behind each ``y``.
        levels: nominal levels in ``(0, 1)``.

    Returns:
        a :class:`Coverage`; a calibrated sampler has ``overall ~= levels``.
    """
    if samples.dim() < 3 or tuple(truth.shape) != (samples.shape[0], *samples.shape[2:]):
        raise ValueError(
            f"expected samples [B, N, *event] and truth [B, *event], "
            f"got {list(samples.shape)} and {list(truth.shape)}"
        )
    lv = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
    low, high = credible_interval(samples, lv, dim=1)  # [L, B, *event]
    t = truth.to(samples.dtype).unsqueeze(0)
    inside = ((low <= t) & (t <= high)).double()
    per = inside.mean(1)  # [L, *event]
    per_problem = inside.reshape(len(lv), samples.shape[0], -1).mean(-1)  # [L, B]
    return Coverage(
        lv, per.cpu(), per.reshape(len(lv), -1).mean(-1).cpu(), samples.shape[0], per_problem.cpu()
    )


# --------------------------------------------------------------------------- SBC
def sbc_ranks(samples: Tensor, truth: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rank of the truth among ``L`` posterior draws, per coordinate.

    Ties (e.g. pixels clipped to the image range in both the truth and the draws) are broken
    uniformly at random, which keeps the ranks of a calibrated sampler uniform.

    Args:
        samples: ``Tensor[B, L, *event]``.
        truth: ``Tensor[B, *event]``.
        generator: for the tie-breaking draws (on ``samples``' device).

    Returns:
        ``LongTensor[B, *event]`` with values in ``0..L``: the number of draws below the truth
        (plus a uniform share of the draws equal to it).
    """
    if samples.dim() < 3 or tuple(truth.shape) != (samples.shape[0], *samples.shape[2:]):
        raise ValueError(
            f"expected samples [B, L, *event] and truth [B, *event], "
            f"got {list(samples.shape)} and {list(truth.shape)}"
        )
    t = truth.to(samples.dtype).unsqueeze(1)
    ranks = (samples < t).sum(1)
    ties = (samples == t).sum(1)
    if bool((ties > 0).any()):
        u = torch.rand(ties.shape, generator=generator, device=samples.device, dtype=torch.float64)
        ranks = ranks + (u * (ties + 1)).floor().long().clamp(max=ties)
    return ranks


def default_num_bins(num_draws: int, num_problems: int, max_bins: int = 20) -> int:
    """Histogram bins for ranks in ``0..num_draws``: at most ``max_bins``, at least five problems
    expected per bin, preferring a bin count that divides ``num_draws + 1`` (equal bins)."""
    cap = max(1, min(max_bins, num_draws + 1, num_problems // 5))
    divisors = [k for k in range(cap, 0, -1) if (num_draws + 1) % k == 0]
    return divisors[0] if divisors and divisors[0] >= max(2, cap // 2) else cap


@dataclass
class SBCTest:
    """Chi-square test of uniform SBC ranks, per coordinate.

    Attributes:
        ranks: ``LongTensor[B, *event]`` in ``0..num_draws``.
        num_draws: ``L``.
        counts: ``Tensor[K, *event]`` rank histogram over ``K`` bins.
        expected: ``Tensor[K]`` expected counts under uniform ranks.
        statistic: ``Tensor[*event]`` chi-square statistic, ``K - 1`` degrees of freedom.
        p_values: ``Tensor[*event]``.
        p_value: Bonferroni-combined p-value over coordinates: ``min(1, D * min p)``.
    """

    ranks: Tensor
    num_draws: int
    counts: Tensor
    expected: Tensor
    statistic: Tensor
    p_values: Tensor
    p_value: float

    @property
    def num_bins(self) -> int:
        return self.counts.shape[0]

    def rejected(self, alpha: float = 0.01) -> bool:
        """Whether uniformity is rejected at level ``alpha`` (over all coordinates)."""
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_problems": self.ranks.shape[0],
            "num_draws": self.num_draws,
            "num_bins": self.num_bins,
            "max_chi2": float(self.statistic.max()),
            "dof": self.num_bins - 1,
            "p_value": self.p_value,
        }


def sbc_test(ranks: Tensor, num_draws: int, num_bins: int | None = None) -> SBCTest:
    """Chi-square goodness of fit of the rank histogram to the uniform law on ``0..num_draws``.

    Bins group consecutive rank values (``bin = floor(rank * K / (L + 1))``); the expected count of a
    bin is ``B`` times its share of rank values, so unequal bins are handled exactly. Coordinates are
    tested one by one and combined with a Bonferroni correction, since they are dependent.

    Args:
        ranks: ``LongTensor[B, *event]`` from :func:`sbc_ranks`.
        num_draws: ``L``, the number of draws the ranks were taken among.
        num_bins: ``K`` (default :func:`default_num_bins`).
    """
    from scipy import stats

    B = ranks.shape[0]
    K = num_bins or default_num_bins(num_draws, B)
    if K < 2:
        raise ValueError(f"need at least 2 rank bins; got {K} (num_problems={B}, num_draws={num_draws})")
    if K > num_draws + 1:
        raise ValueError(f"num_bins={K} exceeds the {num_draws + 1} possible rank values")
    if ranks.min() < 0 or ranks.max() > num_draws:
        raise ValueError(f"ranks must lie in 0..{num_draws}")
    flat = ranks.reshape(B, -1).cpu()
    bins = flat * K // (num_draws + 1)  # [B, D]
    counts = torch.zeros(K, flat.shape[1], dtype=torch.float64)
    counts.scatter_add_(0, bins, torch.ones_like(bins, dtype=torch.float64))
    values_per_bin = torch.bincount(torch.arange(num_draws + 1) * K // (num_draws + 1), minlength=K).double()
    expected = B * values_per_bin / (num_draws + 1)  # [K]
    chi2 = ((counts - expected[:, None]) ** 2 / expected[:, None]).sum(0)  # [D]
    p = torch.as_tensor(stats.chi2.sf(chi2.numpy(), K - 1), dtype=torch.float64)
    shape = ranks.shape[1:]
    return SBCTest(
        ranks=ranks,
        num_draws=num_draws,
        counts=counts.reshape(K, *shape),
        expected=expected,
        statistic=chi2.reshape(shape),
        p_values=p.reshape(shape),
        p_value=min(1.0, float(p.min()) * p.numel()),
    )


# --------------------------------------------------------------------------- the full check
@dataclass
class Calibration:
    """SBC and coverage of one method over ``B`` simulated problems.

    Attributes:
        method: the method name.
        sbc: the :class:`SBCTest` of ranks among ``num_draws`` independent-given-``y`` draws.
        coverage: :class:`Coverage` of the truth by the intervals of the ``L`` independent draws.
        samples: ``Tensor[B, N, *event]`` draws of one run per problem (for figures).
        draws: ``Tensor[B, L, *event]`` the independent draws behind ranks and coverage.
        truth: ``Tensor[B, *event]``.
        wall_time: seconds spent sampling.
        mode: ``"runs"`` or ``"draws"``.
    """

    method: str
    sbc: SBCTest
    coverage: Coverage
    samples: Tensor
    draws: Tensor
    truth: Tensor
    wall_time: float
    mode: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mode": self.mode,
            "sbc": self.sbc.to_dict(),
            "coverage": self.coverage.to_dict(),
            "wall_time": self.wall_time,
            "options": {
                k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in self.options.items()
            },
        }


def _pick(samples: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """``k`` distinct draws per problem, uniformly at random: ``[B, N, ...] -> [B, k, ...]``."""
    B, N = samples.shape[:2]
    keys = torch.rand(B, N, generator=gen, device=gen.device).to(samples.device)
    idx = keys.argsort(1)[:, :k]
    return torch.gather(
        samples, 1, idx.reshape(B, k, *([1] * (samples.dim() - 2))).expand(B, k, *samples.shape[2:])
    )


def simulation_based_calibration(
    prior: DiffusionPrior,
    operator: Operator | Tensor,
    noise_std: float | NoiseModel,
    method: str,
    num_problems: int = 200,
    num_draws: int = 19,
    num_particles: int = 64,
    num_steps: int = 50,
    mode: str | None = None,
    levels: Sequence[float] | Tensor = (0.5, 0.8, 0.9),
    seed: int = 0,
    progress: bool = False,
    num_bins: int | None = None,
    truth_steps: int | None = None,
    distributed: bool | str = False,
    **options: Any,
) -> Calibration:
    """SBC and coverage of ``method`` over ``num_problems`` problems simulated from the prior.

    ``x_b ~ prior``, ``y_b = A(x_b) + noise_std * eps``; then the method runs on all problems at
    once. For the Gaussian-mixture prior ``x_b`` is an exact draw. For a diffusion network it is an
    ancestral (DDPM) draw of the model itself over ``truth_steps`` steps (default ``num_steps``): a
    sampler run with ``num_steps`` steps uses that same chain as its prior, so the check is
    self-consistent without paying for all training steps.

    Args:
        prior, operator, noise_std: the model (``noise_std``: a Gaussian std or a noise model
            from :mod:`posterior.noise`); see :func:`posterior.problems.simulate`.
        method: a name in ``ps.METHODS``.
        num_problems: ``B``.
        num_draws: ``L``, draws per problem to rank the truth among (ranks in ``0..L``).
        num_particles, num_steps, **options: passed to :func:`posterior.sample`.
        mode: ``"runs"`` (each draw from its own run: ``B * L`` runs in one batch; valid for any
            method) or ``"draws"`` (``L`` distinct draws of one run: needs independent draws and
            ``num_particles >= L``). Default: ``"runs"`` for exact methods, ``"draws"`` otherwise.
        levels: coverage levels. Coverage uses the same ``L`` independent draws as the ranks, so
            it is exact in expectation for a calibrated sampler (see :func:`credible_interval`)
            for levels up to ``(L - 1) / (L + 1)`` (0.9 for ``L = 19``); the ``N`` samples of one
            resampled particle run are correlated and their intervals too narrow at small ``N``.
        seed: fixes the problems and the sampler's randomness.
        truth_steps: ancestral steps for ``x_b`` when the prior has no exact sampler.
        distributed: passed to :func:`posterior.sample` (inside an initialised process group:
            the ``B`` or ``B * L`` problems are split by problem when the ranks divide them).
    """
    from posterior.problems import simulate
    from posterior.samplers.base import get_method, sample

    cls = get_method(method)
    mode = mode or ("runs" if cls.exact else "draws")
    if mode not in ("runs", "draws"):
        raise ValueError(f"mode must be 'runs' or 'draws', got {mode!r}")
    for name, value in (("num_problems", num_problems), ("num_draws", num_draws)):
        check_positive_int(value, name)
    if mode == "draws" and num_particles < num_draws:
        raise ValueError(f"mode='draws' needs num_particles >= num_draws, got {num_particles} < {num_draws}")

    gen = as_generator(seed, prior.device)
    truth0 = None
    if not prior.has_closed_form_sample:  # else simulate draws exact truths itself
        truth0 = prior.sample(num_problems, gen, num_steps=truth_steps or num_steps, progress=progress)
    base = simulate(prior, operator, noise_std, num_problems, seed=gen, truth=truth0)
    truth = base.truth
    assert truth is not None
    reps = num_draws if mode == "runs" else 1
    problem = base.repeat(reps) if reps > 1 else base  # problem b occupies rows b*L .. b*L + L - 1
    result: Result = sample(
        problem,
        cls,
        num_particles=num_particles,
        num_steps=num_steps,
        seed=gen,
        progress=progress,
        distributed=distributed,
        **options,
    )
    s = result.samples  # [B * reps, N, *event]
    event = s.shape[2:]
    if mode == "runs":
        draws = _pick(s, 1, gen).reshape(num_problems, reps, *event)
        one_run = s.reshape(num_problems, reps, *s.shape[1:])[:, 0]
    else:
        draws = _pick(s, num_draws, gen)
        one_run = s
    ranks = sbc_ranks(draws, truth, gen)
    return Calibration(
        method=cls.name,
        sbc=sbc_test(ranks, num_draws, num_bins),
        coverage=coverage(draws, truth, levels),
        samples=one_run,
        draws=draws,
        truth=truth,
        wall_time=result.wall_time,
        mode=mode,
        options=dict(result.options),
    )


def coverage_curve_levels(num: int = 19) -> Tensor:
    """Evenly spaced nominal levels ``0.05, 0.10, ..., 0.95`` for coverage curves."""
    return torch.linspace(1 / (num + 1), num / (num + 1), num, dtype=torch.float64)
