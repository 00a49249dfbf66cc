"""The kernels of this package as :class:`pyro.infer.mcmc.MCMCKernel`, to run under ``pyro.infer.MCMC``.

    >>> import pyro
    >>> from posterior.kernels.pyro import PyroKernel
    >>> kernel = PyroKernel(problem, "mala", num_parallel=4, seed=0)
    >>> mcmc = pyro.infer.MCMC(kernel, num_samples=500, warmup_steps=200)
    >>> mcmc.run()
    >>> draws = mcmc.get_samples(group_by_chain=True)["x"]   # [1, 500, 4, d]
    >>> chains = kernel.chains(draws)                          # [4, 500, d]: chains x draws

One pyro "chain" carries ``num_parallel`` vectorised chains of our kernel (one tensor, no Python
loop), so the sample site ``"x"`` has shape ``[num_parallel, *event_shape]`` (``[B, num_parallel,
*event_shape]`` for a batched problem), or ``[*event_shape]`` with ``num_parallel=None``. The
parameters are already unconstrained, so ``transforms`` is empty and there is no pyro ``model``.
Warm-up steps adapt MALA's step size (dual averaging) or anneal Gibbs' ``rho``.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch import Tensor

from posterior._utils import check_positive_int
from posterior.kernels.adaptive import AdaptiveMALA
from posterior.kernels.chains import ChainKernel, restart
from posterior.kernels.gibbs import SplitGibbs
from posterior.kernels.init import initial_chains
from posterior.kernels.langevin import PosteriorTarget
from posterior.problem import InverseProblem
from posterior.schedule import CLEAN

__all__ = ["PyroKernel"]

KERNELS = ("mala", "ula", "gibbs")


class PyroKernel(MCMCKernel):
    """A ``pyro.infer.mcmc.MCMCKernel`` running MALA, ULA or split Gibbs on ``problem``'s posterior.

    Args:
        problem: the inverse problem.
        kernel: ``"mala"``, ``"ula"`` (biased) or ``"gibbs"``.
        num_parallel: vectorised chains per pyro chain (``None``: one, site shape ``[*event]``).
        init: start of each pyro chain: ``"sir"``, ``"prior"`` (see
            :func:`~posterior.kernels.initial_chains`), unless ``initial_params`` are given.
        init_pool: prior draws per chain for ``"sir"`` (``None``: sized by the pool's ESS).
        seed: seeds the kernel's generator (pyro's own RNG is not used).
        site: name of the sample site.
        **options: kernel options: for MALA/ULA ``step_size``, ``adapt``, ``target_accept``,
            ``noise_level``; for Gibbs those of :class:`~posterior.kernels.SplitGibbs`.
    """

    def __init__(
        self,
        problem: InverseProblem,
        kernel: str = "mala",
        num_parallel: int | None = None,
        init: str = "sir",
        init_pool: int | None = None,
        seed: int = 0,
        site: str = "x",
        **options: Any,
    ) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        check_positive_int(num_parallel, "num_parallel", allow_none=True)
        if num_parallel is None and problem.batched:
            raise ValueError("a batched problem needs num_parallel (the site is [B, num_parallel, *event])")
        self.problem, self.name, self.num_parallel = problem, kernel, num_parallel
        self.init, self.init_pool, self.seed, self.site = init, init_pool, seed, site
        if kernel == "gibbs":
            self.kernel: ChainKernel = SplitGibbs(problem, **options)
        else:
            noise_level = options.pop("noise_level", CLEAN)
            self.kernel = AdaptiveMALA(
                PosteriorTarget(problem, noise_level, method=kernel), metropolis=kernel == "mala", **options
            )
        # pyro's MCMC reads these: no model to trace, parameters already unconstrained.
        self.model = None
        self.transforms: dict[str, Any] = {}
        self._generator: torch.Generator | None = None
        self._warmup_steps = 0
        self._num_setups = 0
        self._user_params: dict[str, Tensor] | None = None
        self._params: dict[str, Tensor] | None = None
        self._state: Any = None
        self._acceptance: list[float] = []
        self._divergences: list[int] = []

    # ----------------------------------------------------------------- shapes
    def _to_batch(self, x: Tensor) -> Tensor:
        """Site value -> ``[B, N, *event]``."""
        n = 1 if self.num_parallel is None else self.num_parallel
        return x.reshape(self.problem.batch_size, n, *self.problem.event_shape)

    def _to_site(self, x: Tensor) -> Tensor:
        if self.num_parallel is None:
            return x.reshape(self.problem.event_shape)
        return x if self.problem.batched else x[0]

    def chains(self, draws: Tensor) -> Tensor:
        """``get_samples(group_by_chain=True)[site]`` ``[C, S, (B,) n, *event]`` as chains x draws:
        ``[(B,) C * n, S, *event]``."""
        C, S = draws.shape[:2]
        event = self.problem.event_shape
        if self.num_parallel is None:
            return draws
        x = draws.reshape(C, S, self.problem.batch_size, self.num_parallel, *event)
        x = x.permute(2, 0, 3, 1, *range(4, 4 + len(event))).reshape(
            self.problem.batch_size, C * self.num_parallel, S, *event
        )
        return x if self.problem.batched else x[0]

    # ----------------------------------------------------------------- MCMCKernel interface
    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        """Start a pyro chain: reset adaptation/annealing and draw the initial state."""
        self._generator = torch.Generator(device=self.problem.prior.device)
        self._generator.manual_seed(self.seed + 7919 * self._num_setups)
        self._num_setups += 1
        self._warmup_steps = warmup_steps
        self._acceptance, self._divergences, self._state = [], [], None
        if self._user_params is not None:
            self._params, self._user_params = self._user_params, None
        else:
            n = 1 if self.num_parallel is None else self.num_parallel
            x = initial_chains(self.problem, n, self._generator, self.init, self.init_pool, self.name).x
            self._params = {self.site: self._to_site(x)}

    @property
    def initial_params(self) -> dict[str, Tensor]:
        if self._params is None:
            raise RuntimeError("call setup() first (pyro's MCMC does)")
        return self._params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        if self.site not in params:
            raise ValueError(f"initial_params must contain the site {self.site!r}")
        self._user_params = {self.site: torch.as_tensor(params[self.site])}

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """One transition of every vectorised chain."""
        assert self._generator is not None, "setup() was not called"
        x = self._to_batch(params[self.site]).to(
            device=self.problem.prior.device, dtype=self.problem.prior.dtype
        )
        if self._state is None:
            self._state = self.kernel.init(x, self._warmup_steps)
        elif not torch.equal(self._state.x, x):  # moved by the caller: restart there, adaptation kept
            self._state = restart(self.kernel, self._state, x)
        self._state, info = self.kernel.step(self._generator, self._state)
        new = self._state.x
        if not torch.isfinite(new).all():
            bad = int((~torch.isfinite(new.reshape(*new.shape[:2], -1)).all(-1)).sum())
            raise FloatingPointError(
                f"{self.name}: {bad} chains diverged (NaN or inf) at iteration {len(self._acceptance)}; "
                "reduce the step size"
            )
        self._acceptance.append(float(info.acceptance.mean()))
        if info.divergent.any():
            self._divergences.append(len(self._acceptance) - 1)
        return {self.site: self._to_site(new)}

    def logging(self) -> dict[str, str]:
        out = {"acc. prob": f"{sum(self._acceptance) / max(len(self._acceptance), 1):.3f}"}
        if self._state is not None and isinstance(self.kernel, AdaptiveMALA):
            out["step size"] = f"{float(self._state.step_size.mean()):.3g}"
        elif self._state is not None and isinstance(self.kernel, SplitGibbs):
            out["rho"] = f"{self.kernel.rho(self._state):.3g}"
        return out

    def diagnostics(self) -> dict[str, Any]:
        """Mean acceptance and the iterations with rejected non-finite proposals."""
        acc = sum(self._acceptance) / max(len(self._acceptance), 1)
        return {"acceptance rate": acc, "divergences": list(self._divergences)}

    def cleanup(self) -> None:
        self._state = None
