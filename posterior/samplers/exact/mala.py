"""``"mala"``: parallel Metropolis-adjusted Langevin chains on the posterior.

MALA (Roberts & Tweedie, Bernoulli 1996) on ``log p_t(x) + log p(y | x)``, ``t = -1`` (clean) by
default, with the step size of each problem adapted by dual averaging (Hoffman & Gelman, 2014)
during burn-in towards an acceptance rate of 0.574 (Roberts & Rosenthal, 1998). ``N`` chains per
problem run as one tensor; the returned samples are the chains' final states (equally weighted).
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch
from torch import Tensor

from posterior._utils import progress_bar
from posterior.distributed.context import particle_mean, particle_sum
from posterior.kernels.init import INITS, initial_chains
from posterior.kernels.langevin import AdaptiveMALA, KernelInfo, PosteriorTarget
from posterior.problem import InverseProblem
from posterior.samplers.base import Sampler, register
from posterior.samplers.result import Result
from posterior.schedule import CLEAN

__all__ = ["MALASampler", "run_chains", "shard_init"]


class ChainKernel(Protocol):
    """What :func:`run_chains` needs: ``AdaptiveMALA`` and ``SplitGibbs`` both provide it."""

    def setup(self, warmup_steps: int) -> None: ...
    def init(self, x: Tensor) -> Any: ...
    def sample(self, state: Any, generator: torch.Generator) -> tuple[Any, KernelInfo]: ...
    def position(self, state: Any) -> Tensor: ...


def run_chains(
    name: str,
    kernel: ChainKernel,
    x0: Tensor,
    num_steps: int,
    burn_in: int,
    thin: int,
    keep_chain: bool,
    generator: torch.Generator,
    progress: bool,
    trace: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Run ``num_steps`` iterations of ``kernel`` from ``x0: [B, N, *event]``.

    The first ``burn_in`` iterations are the kernel's warm-up (adaptation / annealing). A chain
    whose state becomes NaN or inf raises ``FloatingPointError`` naming the iteration: divergent
    chains are reported, never returned.

    Returns the final states ``[B, N, *event]``, the mean acceptance ``[B, num_steps]`` and stats:
    ``"divergences"`` ``[B, num_steps]`` (rejected non-finite proposals), ``"chain"``
    ``[B, N, draws, *event]`` if ``keep_chain`` (iterations ``burn_in + thin - 1, ...`` every
    ``thin``), plus ``trace[k]()`` evaluated after every iteration, stacked to ``[B, num_steps]``.
    """
    B, N = x0.shape[:2]
    kernel.setup(burn_in)
    state = kernel.init(x0)
    acceptance = x0.new_zeros(B, num_steps)
    divergences = x0.new_zeros(B, num_steps)
    traces: dict[str, list[Tensor]] = {k: [] for k in (trace or {})}
    draws: list[Tensor] = []
    for i in progress_bar(range(num_steps), enabled=progress, desc=name):
        state, info = kernel.sample(state, generator)
        x = kernel.position(state)
        bad = ~torch.isfinite(x.reshape(B, N, -1)).all(-1)
        if bad.any():
            raise FloatingPointError(
                f"{name}: {int(bad.sum())} of {B * N} chains diverged (NaN or inf) at iteration {i}; "
                "reduce the step size"
            )
        acceptance[:, i] = particle_mean(info.acceptance)  # over the chains of every rank
        divergences[:, i] = particle_sum(info.divergent.to(x0.dtype))
        for k, fn in (trace or {}).items():
            traces[k].append(torch.as_tensor(fn(), dtype=x0.dtype, device=x0.device).expand(B))
        if keep_chain and i >= burn_in and (i - burn_in + 1) % thin == 0:
            draws.append(x.clone())
    stats: dict[str, Tensor] = {"divergences": divergences}
    stats.update({k: torch.stack(v, 1) for k, v in traces.items()})
    if keep_chain:
        stats["chain"] = torch.stack(draws, 2) if draws else x0.new_zeros(B, N, 0, *x0.shape[2:])
    return kernel.position(state), acceptance, stats


def check_chain_options(burn_in: int | None, thin: int, init: str | Tensor, init_pool: int | None) -> None:
    """Shared validation of the chain options of ``"mala"`` and ``"gibbs"``."""
    if burn_in is not None and (isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0):
        raise ValueError(f"burn_in must be a non-negative integer or None, got {burn_in!r}")
    if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
        raise ValueError(f"thin must be a positive integer, got {thin!r}")
    if not isinstance(init, Tensor) and init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a tensor, got {init!r}")
    if init_pool is not None and (
        isinstance(init_pool, bool) or not isinstance(init_pool, int) or init_pool < 1
    ):
        raise ValueError(f"init_pool must be a positive integer or None, got {init_pool!r}")


def shard_init(sampler: Sampler, problem: InverseProblem, start: int, count: int) -> Sampler:
    """``sampler`` with a tensor ``init`` (``[N, *event]`` or ``[B, N, *event]``) cut to chains
    ``start .. start + count - 1``, for a run whose chains are split across ranks."""
    init = getattr(sampler, "init", None)
    dim = init.dim() - len(problem.event_shape) - 1 if isinstance(init, Tensor) else -1
    if dim not in (0, 1):
        return sampler  # a named init, or a shape that initial_chains will reject
    out = copy.copy(sampler)
    out.init = init.narrow(dim, start, count)
    return out


def resolve_burn_in(burn_in: int | None, num_steps: int) -> int:
    b = num_steps // 2 if burn_in is None else burn_in
    if b >= num_steps:
        raise ValueError(f"burn_in ({b}) must be smaller than num_steps ({num_steps})")
    return b


@register
class MALASampler(Sampler):
    """Parallel MALA chains on ``p_t(x) p(y | x)`` with step-size adaptation during burn-in.

    ``num_particles`` chains per problem, ``num_steps`` iterations in all (burn-in included). Each
    iteration costs one prior score and (with MH) one prior density per chain.

    Converges to: with ``metropolis`` (and the default ``noise_level = -1``), the posterior of the
    *continuous* prior ``p(x) p(y | x) / Z`` as iterations grow (no diffusion chain is simulated);
    its mode proportions come from the start (chains do not cross between well-separated modes).

    Options:
        step_size: initial step size ``> 0`` (default 0.1; adapted if ``adapt``).
        adapt: dual-averaging adaptation of each problem's step size during burn-in (default True).
        target_accept: acceptance rate the adaptation aims at (default 0.574).
        metropolis: Metropolis-Hastings correction (default True: exact; needs a prior with
            ``log_prob``). ``False`` runs ULA, which is **biased** by ``O(step_size)``.
        noise_level: prior time ``t`` of the target ``p_t`` (default -1, the clean prior; a network
            prior needs ``t >= 0``, then the target is a smoothed posterior).
        burn_in: warm-up iterations (default ``num_steps // 2``); the step size is frozen after.
        thin: keep every ``thin``-th post-burn-in state in the stored chain (default 1).
        init: ``"sir"`` (default: importance resampling of prior draws by the likelihood, so chains
            start near the posterior across modes a local kernel cannot cross), ``"prior"``, or a
            tensor ``[N, *event]`` / ``[B, N, *event]``.
        init_pool: prior draws per chain for ``"sir"``. Default ``None``: sized by the pool's
            importance ESS, rounds of 16 per chain until it reaches the number of chains (at most
            1024 per chain) for a prior with closed-form draws, 16 per chain otherwise; the
            start's mode proportions, which a local kernel cannot change across separated modes,
            then carry the error of at most that many independent draws (see
            :func:`~posterior.kernels.initial_chains`). ``stats["init_ess"]`` ``[B]`` reports it.
        keep_chain: store the post-burn-in draws in ``result.stats["chain"]``:
            ``Tensor[B, N, draws, *event]`` (``[N, draws, ...]`` unbatched), chains x draws.

    Result: ``samples`` = the ``N`` final states; ``acceptance`` ``[B, num_steps]`` (mean over
    chains); ``stats["step_size"]`` and ``stats["divergences"]`` (rejected non-finite proposals),
    each ``[B, num_steps]``.
    """

    name = "mala"
    exact = True
    summary = "parallel Metropolis-adjusted Langevin chains on the posterior, step size adapted in warm-up"
    particle_stats = ("chain",)

    def __init__(
        self,
        step_size: float = 0.1,
        adapt: bool = True,
        target_accept: float = 0.574,
        metropolis: bool = True,
        noise_level: int = CLEAN,
        burn_in: int | None = None,
        thin: int = 1,
        init: str | Tensor = "sir",
        init_pool: int | None = None,
        keep_chain: bool = False,
    ) -> None:
        if (
            isinstance(step_size, bool)
            or not isinstance(step_size, (int, float))
            or not 0 < step_size < float("inf")
        ):
            raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
        if isinstance(noise_level, bool) or not isinstance(noise_level, int) or noise_level < CLEAN:
            raise ValueError(f"noise_level must be an integer time >= -1, got {noise_level!r}")
        check_chain_options(burn_in, thin, init, init_pool)
        self.step_size, self.adapt, self.target_accept = float(step_size), adapt, target_accept
        self.metropolis, self.noise_level = metropolis, noise_level
        self.burn_in, self.thin, self.init, self.init_pool = burn_in, thin, init, init_pool
        self.keep_chain = keep_chain

    def shard(self, problem: InverseProblem, start: int, count: int) -> Sampler:
        return shard_init(self, problem, start, count)

    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        burn_in = resolve_burn_in(self.burn_in, num_steps)
        target = PosteriorTarget(problem, self.noise_level, method=self.name)
        kernel = AdaptiveMALA(target, self.step_size, self.metropolis, self.adapt, self.target_accept)
        x0, init_ess = initial_chains(problem, num_particles, generator, self.init, self.init_pool, self.name)
        trace = {"step_size": lambda: kernel.current_step_size}
        samples, acceptance, stats = run_chains(
            self.name, kernel, x0, num_steps, burn_in, self.thin, self.keep_chain, generator, progress, trace
        )
        # the step size used at iteration i is the one set after iteration i - 1
        step = stats["step_size"]
        first = torch.full_like(step[:, :1], self.step_size)
        stats["step_size"] = torch.cat([first, step[:, :-1]], 1)
        if init_ess is not None:
            stats["init_ess"] = init_ess
        return Result(samples=samples, method=self.name, acceptance=acceptance, stats=stats)
