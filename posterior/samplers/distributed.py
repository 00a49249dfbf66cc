"""``ps.sample(..., distributed=...)``: one run split over the ranks of a process group.

Launch ``W`` processes (``torchrun --nproc_per_node=W script.py``), call
``torch.distributed.init_process_group`` in each, build the same problem in each, and call
``ps.sample(problem, method, num_particles=N, ..., distributed=True)``. Two ways to split:

``"particles"``
    Each rank holds the block :func:`~posterior.distributed.comm.split` ``(N, W)`` of every
    problem's particles (uneven splits: the first ``N % W`` ranks hold one more) and runs the
    network on them on its own device.

    * Particle samplers (``Sampler.interacting``: smc, tds, mcgdiff) run one particle system: the
      engine normalises weights and computes the ESS and the log-evidence over all ranks,
      resamples globally (ancestors drawn from the all-gathered weights with a generator shared
      by all ranks) and exchanges only the particles that change rank, with the model's
      per-particle cache (:mod:`posterior.distributed.exchange`).
    * Chain samplers (mala, gibbs) run their chains split across ranks; the step-size adaptation
      and the acceptance and divergence traces use every rank's chains.
    * Approximate baselines draw their independent samples split across ranks.

``"problems"``
    Each rank runs a block of the ``B`` problems of a batched problem with all ``N`` particles;
    nothing is communicated until the results are gathered. Needs ``B >= W``.

``True`` or ``"auto"`` chooses ``"problems"`` when ``W`` divides ``B`` (a balanced split with no
communication) and ``"particles"`` otherwise (a single problem, or an uneven batch).

Randomness: a seed drawn from the caller's generator on rank 0 is broadcast; from it derive a
generator shared by all ranks (resampling ancestors) and one per rank (its particles' noise), so a
run is reproducible for a seed and a number of ranks (a different ``W`` draws different noise).
Every rank returns the same full :class:`~posterior.samplers.result.Result` (all ``N`` draws of all
``B`` problems); ``num_evals`` / ``num_vjps`` count every rank's work.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from posterior.distributed.comm import Communicator, TorchCommunicator
from posterior.distributed.context import use_communicator
from posterior.problem import InverseProblem
from posterior.samplers.result import Result

if TYPE_CHECKING:
    from posterior.samplers.base import Sampler

__all__ = ["MODES", "resolve_mode", "run_distributed"]

#: the values of ``distributed`` besides ``False``
MODES = (True, "auto", "particles", "problems")


def resolve_mode(distributed: bool | str, batch_size: int, world_size: int) -> str:
    """``"particles"`` or ``"problems"`` for a ``distributed`` option (see the module docstring)."""
    if isinstance(distributed, str) and distributed in ("particles", "problems"):
        return distributed
    if distributed is True or distributed == "auto":
        return "problems" if batch_size % world_size == 0 else "particles"
    raise ValueError(
        f"distributed must be False, True, 'auto', 'particles' or 'problems', got {distributed!r}"
    )


def run_distributed(
    sampler: Sampler,
    problem: InverseProblem,
    num_particles: int,
    num_steps: int,
    generator: torch.Generator,
    progress: bool,
    distributed: bool | str,
    comm: Communicator | None = None,
) -> Result:
    """Run ``sampler`` split over the ranks of ``comm`` (default: the initialised world group);
    returns the full batched :class:`Result` on every rank, with the slowest rank's ``wall_time``
    and the network evaluations and VJPs of all ranks."""
    start_time = time.perf_counter()
    resolve_mode(distributed, 1, 1)  # a bad value fails before anything else
    comm = TorchCommunicator() if comm is None else comm
    B, W = problem.batch_size, comm.world_size
    mode = resolve_mode(distributed, B, W)
    if mode == "problems" and B < W:
        raise ValueError(f"distributed='problems' needs a problem per rank: {B} problems, {W} ranks")
    if mode == "particles" and num_particles < W:
        raise ValueError(f"num_particles ({num_particles}) must be at least the number of ranks ({W})")
    prior = problem.prior
    evals0, vjps0 = prior.num_evals, prior.num_vjps

    if mode == "problems":
        start, count = comm.split(B)
        _, local = comm.generators(generator)
        result = sampler.run(problem.select(start, start + count), num_particles, num_steps, local, progress)
        result = _gather(result, comm, B, dim=0)
    elif sampler.interacting:
        with use_communicator(comm):  # the engine splits the particles and returns the full system
            result = sampler.run(problem, num_particles, num_steps, generator, progress)
    else:
        start, count = comm.split(num_particles)
        _, local = comm.generators(generator)
        with use_communicator(comm):  # chains average their acceptance over every rank
            result = sampler.shard(problem, start, count).run(problem, count, num_steps, local, progress)
        result = _gather(result, comm, num_particles, dim=1, stats=sampler.particle_stats)

    elapsed = time.perf_counter() - start_time
    counts = torch.tensor([prior.num_evals - evals0, prior.num_vjps - vjps0, elapsed], dtype=torch.float64)
    every = comm.stack(counts)  # [W, 3]
    result.num_evals, result.num_vjps = int(every[:, 0].sum()), int(every[:, 1].sum())
    result.wall_time = float(every[:, 2].max())
    return result


def _gather(result: Result, comm: Communicator, total: int, dim: int, stats: tuple[str, ...] = ()) -> Result:
    """The result of every rank's block joined in rank order.

    ``dim = 0`` (blocks of problems): every batched field and every stat is concatenated.
    ``dim = 1`` (blocks of independent draws): ``samples``, ``log_weights`` and the stats named in
    ``stats`` are concatenated; every other field (``acceptance``, traces: means over draws or
    per-problem values) is averaged over ranks weighted by their number of draws.
    """
    count = comm.split(total)[1]

    def join(v: Tensor | None) -> Tensor | None:
        return None if v is None else comm.all_gather(v, total, dim)

    def average(v: Tensor | None) -> Tensor | None:
        if v is None:
            return None
        if not v.is_floating_point():
            return v  # flags and counts the sampler computed for all its draws
        return comm.stack(v * count).sum(0) / total

    if dim == 0:
        for name in result._BATCHED_FIELDS:
            if name != "truth":
                setattr(result, name, join(getattr(result, name)))
        result.stats = {k: join(v) for k, v in result.stats.items()}
        return result
    result.samples = join(result.samples)
    result.log_weights = join(result.log_weights)
    result.acceptance = average(result.acceptance)
    result.stats = {k: join(v) if k in stats else average(v) for k, v in result.stats.items()}
    return result
