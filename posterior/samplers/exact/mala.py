"""``"mala"``: parallel Metropolis-adjusted Langevin chains on the posterior.

MALA (Roberts & Tweedie, Bernoulli 1996) on ``log p_t(x) + log p(y | x)``, ``t = -1`` (clean) by
default, with the step size of each problem adapted by dual averaging (Hoffman & Gelman, 2014)
during burn-in towards an acceptance rate of 0.574 (Roberts & Rosenthal, 1998). ``N`` chains per
problem run as one tensor; the returned samples are the chains' final states (equally weighted).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from posterior._utils import check_bool, check_fraction, check_int, check_positive
from posterior.kernels.adaptive import AdaptiveMALA, AdaptiveMALAState
from posterior.kernels.langevin import PosteriorTarget
from posterior.problem import InverseProblem
from posterior.samplers.base import register
from posterior.samplers.exact._chains import ChainSampler
from posterior.schedule import CLEAN

__all__ = ["MALASampler"]


@register
class MALASampler(ChainSampler):
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
    summary = "parallel Metropolis-adjusted Langevin chains on the posterior, step size adapted in warm-up"

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
        self.step_size = check_positive(step_size, "step_size")
        self.adapt, self.metropolis = check_bool(adapt, "adapt"), check_bool(metropolis, "metropolis")
        self.target_accept = check_fraction(target_accept, "target_accept", open_interval=True)
        self.noise_level = check_int(noise_level, "noise_level", CLEAN)
        self._chain_options(burn_in, thin, init, init_pool, keep_chain)

    def kernel(self, problem: InverseProblem) -> AdaptiveMALA:
        target = PosteriorTarget(problem, self.noise_level, method=self.name)
        return AdaptiveMALA(target, self.step_size, self.metropolis, self.adapt, self.target_accept)

    def traces(self, kernel: AdaptiveMALA) -> dict[str, Callable[[AdaptiveMALAState], Tensor]]:
        return {"step_size": lambda state: state.step_size}  # the step each transition uses
