"""The unweighted reverse loop shared by the approximate baselines, and its small helpers.

Approximate guidance methods (DPS, PiGDM, DDRM, SDEdit, DiffPIR, MMPS, ...) all walk a list of
reverse transitions ``(t, s)`` and update one particle tensor ``x: [B, N, *event_shape]`` (``B``
problems, ``N`` independent samples each) without weights. This module holds what they share:

* :func:`time_pairs` the grid, optionally started below ``T`` (SDEdit's ``t0``);
* :func:`initial_noise` / :func:`randn_like` seeded Gaussian draws;
* :func:`denoise`, :func:`denoise_with_grad` the prior's chunked, counted network calls on
  particle tensors (the only way a baseline should reach the network);
* :func:`ddim_sample` one DDIM(eta) / DDPM step through ``prior.reverse_kernel``;
* :func:`reverse_loop` the loop itself, with the ``FloatingPointError`` naming method and step
  (:func:`iterate`, its general form on a state tuple: PnP-ADMM's ``(x, z, u)``);
* :func:`optimise` the gradient loop of the optimisation baselines (RED-diff, CSGM);
* :func:`flat`, :func:`unflat`, :func:`per_problem`, :func:`problem_rows` shape helpers;
* :func:`make_result` the batched :class:`Result` (samples only: no evidence, no ESS).

The API is kept stable for every baseline in this folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from posterior._utils import check_finite, check_positive_int, progress_bar
from posterior.priors.base import Denoised, DiffusionPrior
from posterior.problem import InverseProblem
from posterior.samplers.approximate._optim import Adam
from posterior.samplers.approximate.divergence import divergence_limit, warn_if_diverged
from posterior.samplers.result import Result
from posterior.schedule import CLEAN, NoiseSchedule

__all__ = [
    "GradFn",
    "StepFn",
    "ddim_sample",
    "denoise",
    "denoise_with_grad",
    "flat",
    "initial_noise",
    "iterate",
    "make_result",
    "optimise",
    "per_problem",
    "problem_rows",
    "randn_like",
    "residual_sq_fn",
    "reverse_loop",
    "time_pairs",
    "unflat",
]

S = TypeVar("S")
T = TypeVar("T")

#: ``step(x [B, N, *event], t, s, i) -> x_s [B, N, *event]``: one reverse transition ``t -> s``.
StepFn = Callable[[Tensor, int, int, int], Tensor]
#: ``fn(denoised_chunk, x_chunk, problem_index [n_chunk]) -> Tensor[n_chunk]``; see :func:`denoise_with_grad`.
GradFn = Callable[[Denoised, Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- grids and noise
def time_pairs(schedule: NoiseSchedule, num_steps: int, t_start: int | None = None) -> list[tuple[int, int]]:
    """Reverse transitions ``[(t, s), ...]`` ending at ``s = CLEAN``.

    Without ``t_start``: ``schedule.time_pairs(num_steps)`` (DDIM "leading" spacing, from pure
    noise). With ``t_start`` (an integer time in ``0..T-1``): ``num_steps`` times evenly spaced
    from ``t_start`` down to ``0`` (fewer if ``t_start + 1 < num_steps``), as SDEdit needs.
    """
    check_positive_int(num_steps, "num_steps")
    if t_start is None:
        return schedule.time_pairs(num_steps)
    T = schedule.num_train_steps
    if not 0 <= t_start < T:
        raise ValueError(f"t_start must lie in 0..{T - 1}, got {t_start}")
    ts = torch.linspace(t_start, 0, min(num_steps, t_start + 1)).round().long().unique_consecutive().tolist()
    return list(zip(ts, [*ts[1:], CLEAN], strict=True))


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws of ``x``'s shape, device and dtype, from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def initial_noise(problem: InverseProblem, num_particles: int, generator: torch.Generator) -> Tensor:
    """``x_T ~ N(0, I)``: ``Tensor[B, N, *event_shape]`` on the prior's device and dtype."""
    prior = problem.prior
    shape = (problem.batch_size, num_particles, *problem.event_shape)
    return torch.randn(shape, generator=generator, device=prior.device, dtype=prior.dtype)


# --------------------------------------------------------------------------- shapes
def flat(x: Tensor) -> Tensor:
    """``[B, N, *rest] -> [B * N, *rest]`` (for prior and operator calls)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unflat(x: Tensor, B: int, N: int) -> Tensor:
    """``[B * N, *rest] -> [B, N, *rest]``."""
    return x.reshape(B, N, *x.shape[1:])


def per_problem(v: Tensor, like: Tensor) -> Tensor:
    """A per-problem ``Tensor[B]`` shaped ``[B, 1, 1, ...]`` to broadcast against ``like: [B, N, ...]``."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def problem_rows(rows: slice, num_particles: int, device: torch.device | None = None) -> Tensor:
    """Problem index ``b`` of each flat row ``b * N + n`` in ``rows``: ``LongTensor[n_chunk]``."""
    return torch.arange(rows.start, rows.stop, device=device) // num_particles


# --------------------------------------------------------------------------- network calls
def denoise(prior: DiffusionPrior, x: Tensor, t: int) -> Denoised:
    """``prior.denoise`` on particles ``x: [B, N, *event]``; fields come back ``[B, N, *event]``."""
    B, N = x.shape[:2]
    d = prior.denoise(flat(x), t)
    return Denoised(unflat(d.eps, B, N), unflat(d.x0, B, N))


def denoise_with_grad(
    prior: DiffusionPrior, x: Tensor, t: int, fn: GradFn
) -> tuple[Denoised, Tensor, Tensor]:
    """``prior.denoise_with_grad`` on particles ``x: [B, N, *event]``.

    ``fn(denoised, x_chunk, b)`` gets one chunk of flat samples (``denoised`` fields and ``x_chunk``
    are ``[n_chunk, *event]``) and ``b: LongTensor[n_chunk]``, the problem index of each sample
    (to pick ``problem.y_batch[b]``, ``problem.sigma[b]``); it returns ``Tensor[n_chunk]``.

    Returns ``(Denoised [B, N, *event], values [B, N], grad_x [B, N, *event])``, all detached.
    """
    B, N = x.shape[:2]

    def wrapped(d: Denoised, xc: Tensor, rows: slice) -> Tensor:
        return fn(d, xc, problem_rows(rows, N, xc.device))

    d, vals, grad = prior.denoise_with_grad(flat(x), t, wrapped)
    return Denoised(unflat(d.eps, B, N), unflat(d.x0, B, N)), vals.reshape(B, N), unflat(grad, B, N)


def residual_sq_fn(problem: InverseProblem) -> GradFn:
    """A :data:`GradFn` giving ``||y_b - A(x0_hat)||^2`` per sample (DPS-style guidance); for
    non-Gaussian noise the noise model's misfit (:meth:`~posterior.noise.NoiseModel.misfit`), its
    variance-weighted deviance."""
    y = problem.y_batch
    if not problem.gaussian:

        def misfit(d: Denoised, _x: Tensor, b: Tensor) -> Tensor:
            return problem.noise.select(b).misfit(y[b], problem.operator.A(d.x0))

        return misfit

    def fn(d: Denoised, _x: Tensor, b: Tensor) -> Tensor:
        r = y[b] - problem.operator.A(d.x0)
        return r.reshape(r.shape[0], -1).pow(2).sum(-1)

    return fn


def ddim_sample(
    prior: DiffusionPrior,
    x: Tensor,
    t: int,
    s: int,
    eta: float,
    generator: torch.Generator,
    denoised: Denoised | None = None,
) -> tuple[Tensor, Denoised]:
    """One DDIM(eta) transition ``t -> s`` (``eta = 1``: DDPM ancestral) for ``x: [B, N, *event]``.

    Uses ``prior.reverse_kernel``; ``denoised`` (``[B, N, *event]`` fields) skips the network call
    when the caller already has the predictions at ``(x, t)``. No noise is added at ``s = CLEAN``.

    Returns ``(x_s [B, N, *event], denoised [B, N, *event])``.
    """
    B, N = x.shape[:2]
    flat_d = None if denoised is None else Denoised(flat(denoised.eps), flat(denoised.x0))
    mean, std, d = prior.reverse_kernel(flat(x), t, s, eta, denoised=flat_d)
    x_s = unflat(mean, B, N)
    if s != CLEAN and float(std) > 0:
        x_s = x_s + std * randn_like(x_s, generator)
    return x_s, Denoised(unflat(d.eps, B, N), unflat(d.x0, B, N))


# --------------------------------------------------------------------------- the loop
def iterate(
    method: str,
    items: Sequence[T],
    state: S,
    step: Callable[[S, T, int], S],
    where: Callable[[int, T], str],
    progress: bool = False,
) -> S:
    """Run ``state <- step(state, item, i)`` over ``items``; returns the final state.

    ``state`` is a tensor or a tuple (e.g. a NamedTuple) holding tensors. After each step a NaN
    or inf in one of them raises ``FloatingPointError("<method>: <where(i, item)>")``.
    """
    for i, item in enumerate(progress_bar(items, enabled=progress, desc=method, total=len(items))):
        state = step(state, item, i)
        for v in state if isinstance(state, tuple) else (state,):
            if isinstance(v, Tensor):
                check_finite(v, f"{method}: {where(i, item)}")
    return state


def reverse_loop(
    method: str,
    pairs: list[tuple[int, int]],
    x: Tensor,
    step: StepFn,
    progress: bool = False,
    schedule: NoiseSchedule | None = None,
) -> Tensor:
    """Run ``x <- step(x, t, s, i)`` over ``pairs``; returns the final ``x: [B, N, *event]``.

    After each step a NaN or inf raises ``FloatingPointError("<method>: step i (t=...)")``. With
    the prior's ``schedule``, draws that ran away (finite, but beyond any scale the schedule
    allows the data, :func:`~posterior.samplers.approximate.divergence.divergence_limit`) give a
    :class:`~posterior.samplers.approximate.divergence.DivergenceWarning`.
    """
    limit = None if schedule is None else divergence_limit(x, float(schedule.alpha_bar(pairs[0][0])))
    out = iterate(
        method, pairs, x, lambda x, ts, i: step(x, *ts, i), lambda i, ts: f"step {i} (t={ts[0]})", progress
    )
    if limit is not None:
        warn_if_diverged(method, out, limit)
    return out


def optimise(
    method: str,
    items: Sequence[T],
    x: Tensor,
    loss_and_grad: Callable[[Tensor, T], tuple[Tensor, Tensor]],
    optimizer: Adam,
    where: Callable[[int, T], str],
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gradient steps ``x <- optimizer.step(x, grad)`` with ``(loss [B, N], grad) =
    loss_and_grad(x, item)`` for each of ``items`` (RED-diff's times, CSGM's iterations).

    A NaN or inf loss or gradient raises ``FloatingPointError("<method>: <where(i, item)>: loss
    is NaN or inf")``. Returns the final ``x`` and the mean loss per problem ``[B, len(items)]``.
    """
    losses = []
    for i, item in enumerate(progress_bar(items, enabled=progress, desc=method, total=len(items))):
        loss, grad = loss_and_grad(x, item)
        if not torch.isfinite(loss).all() or not torch.isfinite(grad).all():
            raise FloatingPointError(f"{method}: {where(i, item)}: loss is NaN or inf")
        x = optimizer.step(x, grad)
        losses.append(loss.mean(1))
    return x, torch.stack(losses, -1)


def make_result(method: str, samples: Tensor, stats: dict[str, Tensor] | None = None) -> Result:
    """The batched :class:`Result` of an approximate method: ``samples [B, N, *event]`` only."""
    return Result(samples=samples.detach(), method=method, stats=stats or {})
