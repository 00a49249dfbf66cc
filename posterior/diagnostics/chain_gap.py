"""How far the ``K``-step chain a sampler simulates is from the prior the user trained.

The exact particle samplers converge, as particles grow, to the posterior of the ``K``-step reverse
chain they walk, not to the posterior of the continuous-time prior. :func:`chain_gap` measures the
difference a user can act on: it reruns the same method, options and time grid with ``2K`` steps
and compares the two runs' draws (sliced W1) and log-evidences. The chain converges to the
continuous prior as ``K`` grows, so a ``K``-vs-``2K`` gap at the Monte Carlo floor (the same
distance between two ``K``-step runs of different seeds, ``floor=True``) says that ``K`` steps are
enough at this particle budget; a gap well above it says more steps will change the answer.

It costs two more runs' worth of network calls (a ``2K``-step run), three with ``floor=True``, so
it is never run by default: call it on a result, or pass ``chain_gap=True`` to
:func:`~posterior.diagnostics.report.compare`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from posterior.diagnostics.distances import sliced_wasserstein
from posterior.problem import InverseProblem
from posterior.samplers.result import Result

__all__ = ["ChainGap", "chain_gap"]


class ChainGap(NamedTuple):
    """The ``K``-step result against a ``2K``-step rerun (per problem, ``B`` of them).

    Attributes:
        num_steps: ``K``.
        sw: ``Tensor[B]``, sliced W1 between the ``K``-step and the ``2K``-step draws.
        sw_floor: ``Tensor[B]``, the same distance between two ``K``-step runs of different seeds
            (the Monte Carlo floor of ``sw``), or ``None`` without ``floor=True``.
        log_evidence_shift: ``Tensor[B]``, ``log Z_hat(2K) - log Z_hat(K)``, or ``None`` for a
            method without an evidence estimate.
    """

    num_steps: int
    sw: Tensor
    sw_floor: Tensor | None
    log_evidence_shift: Tensor | None

    def summary(self, index: int = 0) -> str:
        """One line, in words, for problem ``index``."""
        K = self.num_steps
        text = f"{K} vs {2 * K} steps: sliced W1 {float(self.sw[index]):.3g} between the draws"
        if self.sw_floor is not None:
            ratio = float(self.sw[index] / self.sw_floor[index].clamp_min(1e-12))
            text += f" ({ratio:.1f}x the {float(self.sw_floor[index]):.3g} between two {K}-step runs)"
        if self.log_evidence_shift is not None:
            text += f", log-evidence shift {float(self.log_evidence_shift[index]):+.3g}"
        return text


def chain_gap(
    problem: InverseProblem,
    result: Result,
    *,
    seed: int = 1,
    floor: bool = False,
    attach: bool = True,
    num_projections: int = 100,
) -> ChainGap:
    """Rerun ``result``'s method with twice its steps (same options, particles and named time grid)
    and compare the two.

    Args:
        problem: the problem ``result`` was drawn for (``B`` problems if batched).
        result: a :class:`~posterior.Result` of ``ps.sample`` on ``problem`` with ``K`` steps.
        seed: the seed of the reruns (different from ``result``'s, so the floor is honest).
        floor: also rerun ``K`` steps with ``seed`` and report the distance between the two
            ``K``-step runs (the Monte Carlo floor of the comparison; one more ``K``-step run).
        attach: store ``stats["chain_gap_sw"]`` (and ``"chain_gap_sw_floor"``,
            ``"chain_gap_log_evidence"``) in ``result``, which reports then print.
        num_projections: directions of the sliced W1.

    Returns:
        a :class:`ChainGap`. Raises ``ValueError`` when the result's grid is a given sequence of
        times (it has no ``2K``-step version) or ``2K`` exceeds the schedule's training steps.
    """
    from posterior._utils import check_bool
    from posterior.samplers.base import get_method, sample

    if not isinstance(result, Result):
        raise ValueError(f"result must be a posterior Result, got {type(result).__name__}")
    check_bool(floor, "floor")
    check_bool(attach, "attach")
    opts = dict(result.options)
    K, grid = opts.get("num_steps"), opts.get("time_grid")
    if not isinstance(K, int) or not isinstance(grid, str):
        raise ValueError(
            "result: chain_gap needs a result of ps.sample on a named time_grid "
            f"(got num_steps={K!r}, time_grid={grid!r})"
        )
    T = problem.prior.schedule.num_train_steps
    if 2 * K > T:
        raise ValueError(f"result: num_steps {K} has no 2x rerun on a schedule of {T} training steps")
    cls = get_method(result.method)
    method_opts = {k: v for k, v in opts.items() if k in cls.option_names()}
    N = int(opts.get("num_particles", result.as_batched().samples.shape[1]))

    def rerun(steps: int) -> Result:
        return sample(problem, cls, N, steps, seed=seed, progress=False, time_grid=grid, **method_opts)

    mine = result.as_batched()
    fine = rerun(2 * K).as_batched()
    flat = lambda r: r.samples.flatten(2)  # noqa: E731  [B, N, d]
    sw = sliced_wasserstein(flat(mine), flat(fine), num_projections, seed=0)
    sw_floor = None
    if floor:
        sw_floor = sliced_wasserstein(flat(mine), flat(rerun(K).as_batched()), num_projections, seed=0)
    shift = None
    if mine.log_evidence is not None and fine.log_evidence is not None:
        shift = (fine.log_evidence.double() - mine.log_evidence.double()).to(mine.samples.dtype)
    gap = ChainGap(K, sw, sw_floor, shift)
    if attach:
        _attach(result, gap)
    return gap


def _attach(result: Result, gap: ChainGap) -> None:
    """``result.stats`` entries ``[B]`` (scalars for an unbatched result)."""
    entries: dict[str, Any] = {"chain_gap_sw": gap.sw}
    if gap.sw_floor is not None:
        entries["chain_gap_sw_floor"] = gap.sw_floor
    if gap.log_evidence_shift is not None:
        entries["chain_gap_log_evidence"] = gap.log_evidence_shift
    for name, value in entries.items():
        value = torch.as_tensor(value).detach()
        result.stats[name] = value if result.batched else value[0]
