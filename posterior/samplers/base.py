"""The sampler interface and the registry behind ``ps.METHODS`` and ``ps.sample``."""

from __future__ import annotations

import inspect
import sys
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from posterior._utils import as_generator, check_finite, check_positive_int
from posterior.parameters import Parameters
from posterior.priors.latent import LatentPrior
from posterior.problem import InverseProblem
from posterior.samplers.latent import decode_result, latent_problem
from posterior.samplers.result import Result
from posterior.schedule import DEFAULT_TIME_GRID, TimeGrid, check_time_grid

__all__ = ["DEFAULT_TIME_GRID", "METHODS", "Sampler", "register", "sample"]

#: ``{name: sampler class}`` of every registered method.
METHODS: dict[str, type[Sampler]] = {}


class Sampler(ABC):
    """A posterior sampling method. Options are keyword arguments of ``__init__``.

    Subclasses set ``name``, ``exact`` (asymptotically exact or not), a one-line ``summary``,
    and implement :meth:`run`, which works on the batched problem (``problem.y_batch``:
    ``[B, *obs_shape]``) and returns a batched :class:`Result` (``samples: [B, N, *event_shape]``).
    """

    name: ClassVar[str]
    exact: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    #: samples the problem's unknown parameters (:class:`~posterior.Unknown`) with ``x``; every
    #: other method refuses a problem that has some
    joint: ClassVar[bool] = False
    #: the particles interact (resampling): :meth:`run` hands them to the particle engine, which
    #: splits them across ranks itself in a distributed run. Otherwise the ``num_particles`` draws
    #: are independent and a distributed run splits them (:mod:`posterior.samplers.distributed`).
    interacting: ClassVar[bool] = False
    #: ``Result.stats`` entries with one entry per draw on dim 1 (concatenated across ranks)
    particle_stats: ClassVar[tuple[str, ...]] = ()
    #: the grid of training times the reverse diffusion walks: a name in
    #: :data:`posterior.schedule.TIME_GRIDS` or a decreasing sequence of times. Set by
    #: ``ps.sample(..., time_grid=)`` for every method; read it through :meth:`time_pairs`.
    time_grid: TimeGrid = DEFAULT_TIME_GRID

    def time_pairs(self, problem: InverseProblem, num_steps: int) -> list[tuple[int, int]]:
        """The reverse transitions ``[(t, s), ...]`` (ending at ``s = CLEAN``) of ``num_steps``
        diffusion steps on the prior's schedule along :attr:`time_grid`. Every sampler that walks
        the diffusion takes its grid from here."""
        return problem.prior.schedule.time_pairs(num_steps, self.time_grid)

    @abstractmethod
    def run(
        self,
        problem: InverseProblem,
        num_particles: int,
        num_steps: int,
        generator: torch.Generator,
        progress: bool,
    ) -> Result:
        """Draw ``num_particles`` posterior samples for each of the ``B`` problems."""

    def shard(self, problem: InverseProblem, start: int, count: int) -> Sampler:
        """This sampler for draws ``start .. start + count - 1`` of a run whose independent draws
        are split across ranks: itself, unless an option holds one entry per draw (then sliced)."""
        return self

    @classmethod
    def option_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.option_names() if hasattr(self, k)}


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator adding a sampler to :data:`METHODS` under ``cls.name``."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(method: str | type[Sampler]) -> type[Sampler]:
    """The sampler class for a name, with the known names in the error."""
    if isinstance(method, type) and issubclass(method, Sampler):
        return method
    if method not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise ValueError(f"unknown method {method!r}; known methods: {known}")
    return METHODS[method]


def sample(
    problem: InverseProblem,
    method: str | type[Sampler],
    num_particles: int = 256,
    num_steps: int | None = None,
    seed: int | torch.Generator | None = 0,
    progress: bool | None = None,
    distributed: bool | str = False,
    time_grid: TimeGrid | None = None,
    **options: Any,
) -> Result:
    """Sample the posterior of ``problem`` with a registered method.

    Args:
        problem: the :class:`InverseProblem` (``B`` problems if ``y`` is batched).
        method: a name in :data:`METHODS` (or a :class:`Sampler` subclass).
        num_particles: particles (SMC, TDS, MCGdiff), chains (MALA, Gibbs) or independent
            samples (approximate methods): the number ``N`` of returned draws per problem.
        num_steps: diffusion steps (or MCMC iterations for the kernels); default 100, or the
            length of a ``time_grid`` given as a sequence.
        seed: an int or a ``torch.Generator``; the same seed gives the same samples.
        progress: show a progress bar (default: when stderr is a terminal).
        distributed: inside an initialised ``torch.distributed`` process group, split the run
            over its ranks: ``"particles"`` (each rank holds a block of every problem's particles;
            particle samplers resample globally), ``"problems"`` (each rank runs a block of the
            ``B`` problems; needs ``B >=`` the number of ranks) or ``True`` / ``"auto"``
            (``"problems"`` when the ranks divide ``B``, else ``"particles"``). Every rank returns
            the same full result, the same for a seed and a number of ranks. See
            :mod:`posterior.samplers.distributed`.
        time_grid: the training times the reverse diffusion walks, for every method (stored as
            ``Sampler.time_grid``): ``"auto"`` (the default, :data:`DEFAULT_TIME_GRID`: chosen from
            the prior's noise levels, :data:`posterior.schedule.AUTO_TIME_GRID`), ``"leading"``,
            ``"trailing"``, ``"linspace"``, ``"logsnr"`` (uniform in log signal-to-noise ratio),
            ``"sqrt_abar"``, ``"karras"`` (Karras et al.'s rho = 7 noise levels), or a strictly
            decreasing sequence of ``num_steps`` training times. See
            :meth:`posterior.schedule.NoiseSchedule.timesteps`. The MCMC methods (``mala``,
            ``gibbs``), whose ``num_steps`` are iterations, record it and do not use it; ``sdedit``
            walks its own grid below its start ``t0`` and ``csgm`` its inner ``ddim_steps`` grid.
        **options: the method's own options, documented on its class.

    Returns:
        a :class:`Result` with ``samples: Tensor[N, *event_shape]`` (``[B, N, ...]`` if batched).
    """
    cls = get_method(method)
    if not isinstance(problem, InverseProblem):
        raise TypeError(f"problem must be an InverseProblem, got {type(problem).__name__}")
    if isinstance(problem.prior, LatentPrior):  # the latent problem (operator A o D), decoded
        decoder_evals = problem.prior.num_evals
        inner = latent_problem(problem)
        args = (num_particles, num_steps, seed, progress, distributed, time_grid)
        result = sample(inner, method, *args, **options)
        return decode_result(result, problem, decoder_evals)
    grid = check_time_grid(DEFAULT_TIME_GRID if time_grid is None else time_grid)
    if num_steps is None:
        num_steps = 100 if isinstance(grid, str) else len(grid)
    elif not isinstance(grid, str) and num_steps != len(grid):
        raise ValueError(f"num_steps ({num_steps}) must equal the length of time_grid ({len(grid)})")
    for name, value in (("num_particles", num_particles), ("num_steps", num_steps)):
        check_positive_int(value, name)
    unknown = set(options) - set(cls.option_names())
    if unknown:
        raise TypeError(
            f"{cls.name!r} has no option {', '.join(sorted(unknown))}; "
            f"its options are: {', '.join(cls.option_names()) or 'none'}"
        )
    if not cls.joint:
        unknowns = Parameters(problem)
        if unknowns:
            joint = ", ".join(sorted(n for n, c in METHODS.items() if c.joint))
            raise ValueError(
                f"{cls.name!r} needs every parameter known; this problem has unknown "
                f"{', '.join(unknowns.names)}: use a joint sampler ({joint})"
            )
    sampler = cls(**options)
    sampler.time_grid = grid
    if progress is None:
        progress = sys.stderr.isatty()
    prior = problem.prior
    evals0, vjps0 = prior.num_evals, prior.num_vjps
    gen = as_generator(seed, prior.device)
    start = time.perf_counter()
    if distributed is False:
        result = sampler.run(problem, num_particles, num_steps, gen, progress)
        result.wall_time = time.perf_counter() - start
        result.num_evals = prior.num_evals - evals0
        result.num_vjps = prior.num_vjps - vjps0
    else:  # the same on every rank: the slowest rank's time, every rank's network calls
        from posterior.samplers.distributed import run_distributed

        result = run_distributed(sampler, problem, num_particles, num_steps, gen, progress, distributed)
    result.options = {
        "num_particles": num_particles,
        "num_steps": num_steps,
        "time_grid": grid if isinstance(grid, str) else list(grid),
        **sampler.options(),
        **result.options,  # what the run resolved (e.g. a particle sampler's runs="auto")
    }
    result.truth = (
        None if problem.truth is None else (problem.truth if problem.batched else problem.truth[None])
    )
    failed = result.stats.get("failed")  # problems a particle sampler could not weigh: NaN draws, warned
    check_finite(result.samples if failed is None else result.samples[~failed], f"{cls.name}: final samples")
    return result if problem.batched else result.unbatched()
