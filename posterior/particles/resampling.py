"""Resampling schemes and the effective sample size, batched over independent problems.

Every scheme is a pure function ``(log_weights: Tensor[B, N], generator) -> LongTensor[B, N]`` of
ancestor indices (Douc, Cappé & Moulines, 2005, "Comparison of resampling schemes for particle
filtering"; Chopin & Papaspiliopoulos, 2020, ch. 9). The weights need not be normalised; each row
is normalised in log space first. Rows are resampled independently, with no Python loop over
particles or problems.

Numerics: the weights ``exp(log_w - max)`` are computed in the dtype of the log-weights, their
cumulative sums in float64 and divided by their own last entry, so the last cumulative weight is
exactly ``1`` and uniforms are kept strictly below ``1``. A particle of weight zero is never chosen:
its cumulative weight equals its predecessor's, so the search (multinomial, residual) never returns
it and the count formulas (stratified, systematic) give it no offspring.

Speed (CPU): systematic and stratified resampling are ``O(N)`` count formulas, no search; every
scheme builds its ancestors from cumulative offspring counts with one ``bincount`` and one cumulative
sum, and works in place in as few ``[B, N]`` buffers as it can (a fresh buffer costs page faults).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "RESAMPLERS",
    "ess",
    "multinomial",
    "normalize",
    "offspring_counts",
    "residual",
    "stratified",
    "systematic",
]

Resampler = Callable[[Tensor, torch.Generator | None], Tensor]


def normalize(log_weights: Tensor) -> Tensor:
    """Normalised weights ``softmax(log_weights)`` over the last dim, ``Tensor[B, N]``."""
    return torch.softmax(log_weights, dim=-1)


def ess(log_weights: Tensor) -> Tensor:
    """Effective sample size ``(sum w)^2 / sum w^2`` of each row of ``log_weights: [B, N]``: ``[B]``.

    Unnormalised weights are fine: ``w = exp(log_weights - max)`` lies in ``[0, 1]`` with a ``1`` in
    every row, so neither sum overflows (one temporary ``[B, N]``, squared in place).
    """
    w = torch.exp(log_weights - log_weights.amax(-1, keepdim=True))
    total = w.sum(-1)
    return total * total / w.square_().sum(-1)


def _cdf(log_weights: Tensor) -> Tensor:
    """Cumulative normalised weights, float64 ``[B, N]``, the last entry exactly ``1``.

    The weights ``exp(log_weights - max)`` are computed in the dtype of ``log_weights``; the
    cumulative sum and its normalisation in float64, in one buffer that callers may overwrite.
    """
    _check(log_weights)
    w = log_weights - log_weights.amax(-1, keepdim=True)
    c = w.exp_().to(torch.float64)  # a no-op for float64 input
    c.cumsum_(-1)
    return c.div_(c[:, -1:].clone())  # x / x == 1 exactly; trailing zero-weight entries become 1 too


def _uniform(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return u.clamp_(max=1 - torch.finfo(like.dtype).eps / 2)  # strictly below one


def _sorted_uniform(
    shape: tuple[int, int], like: Tensor, generator: torch.Generator | None, count: Tensor | None = None
) -> Tensor:
    """Sorted i.i.d. uniforms ``[B, n]`` in ``O(n)``: cumulative sums of exponentials divided by
    the sum of ``count_b + 1`` of them (Devroye, 1986, V.3), so the first ``count_b`` entries of
    row ``b`` (default: all ``n``) are ``count_b`` sorted uniforms. Sorted queries make the search
    cache-friendly. The exponentials are ``-log(1 - U)`` of float64 uniforms, negated (the ratio of
    two sums is unchanged), in place: several times faster than ``exponential_`` on CPU."""
    B, n = shape
    e = torch.rand(B, n + 1, device=like.device, dtype=torch.float64, generator=generator)
    e.neg_().log1p_().cumsum_(-1)  # minus the arrival times of a unit-rate Poisson process
    total = (e[:, n:] if count is None else torch.gather(e, 1, count.reshape(B, 1))).clone()
    u = e[:, :n].div_(total).to(like.dtype)
    return u.clamp_(max=1 - torch.finfo(like.dtype).eps / 2).contiguous()


def _search(cdf: Tensor, u: Tensor) -> Tensor:
    """First index ``i`` with ``cdf[i] > u``, clamped into range: ``LongTensor[B, n]``."""
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)


def _check(log_weights: Tensor) -> None:
    if log_weights.dim() != 2:
        raise ValueError(f"log_weights must be a Tensor[B, N], got shape {list(log_weights.shape)}")
    if log_weights.shape[-1] == 0:
        raise ValueError("cannot resample zero particles")


def multinomial(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Multinomial resampling: ``N`` independent draws from the weights. ``LongTensor[B, N]``,
    sorted within rows (the draws are exchangeable)."""
    cdf = _cdf(log_weights)
    return _search(cdf, _sorted_uniform(tuple(cdf.shape), cdf, generator))


def stratified(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Stratified resampling: one uniform ``U_j`` in each stratum ``[j/N, (j+1)/N)``, i.e. the grid
    ``(j + U_j) / N``. ``LongTensor[B, N]``, sorted within rows.

    Offspring counts lie in ``[floor(N w) - 1, floor(N w) + 2]``. Computed in ``O(N)`` without a
    search: with ``s = N c`` for a cumulative weight ``c`` and ``k = floor(s)``, the grid points
    below ``c`` are the ``k`` whole strata before ``k`` plus stratum ``k`` when ``U_k < s - k``, i.e.
    ``ceil(s - U_k)`` of them (a gather); the count of particle ``i`` is the difference of that at
    ``c_{i-1}`` and ``c_i``. ``s`` is float64 (it must resolve strata at ``N ~ 1e7``); ``U_j`` has
    the dtype of ``log_weights`` (float32 unless float64), a resolution of ``2^-24`` within a
    stratum: it moves a stratum's selection probabilities by less than ``2^-24``, below what
    float32 weights resolve.
    """
    s = _cdf(log_weights)
    B, N = s.shape
    s.mul_(N)  # in [0, N], the last entry exactly N
    like = s.new_empty((), dtype=torch.float64 if log_weights.dtype == torch.float64 else torch.float32)
    u = _uniform((B, N + 1), like, generator)
    if u.dtype == torch.float64:  # s - U_k must not round down onto k - 1 below N ~ 1e8
        u.clamp_(max=1 - 2**-26)  # (float32 uniforms are at most 1 - 2^-24 already)
    u[:, N] = 0  # s = N (k = N): all N points lie below
    k = s.to(torch.int32 if B * (N + 1) < 2**31 else torch.long)  # floor(s), a flat index into u
    if B > 1:
        k += torch.arange(0, B * (N + 1), N + 1, device=k.device, dtype=k.dtype)[:, None]
    s.sub_(u.view(-1).index_select(0, k.view(-1)).view(B, N)).ceil_()  # in (-1, N]: ceil in [0, N]
    return _ancestors_from_below(s.view(torch.long).copy_(s))  # float64 -> int64 in place


def systematic(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Systematic resampling: the grid ``(j + U) / N`` with one uniform ``U`` per row.
    ``LongTensor[B, N]``, sorted within rows.

    Offspring counts lie in ``{floor(N w), floor(N w) + 1}``. Computed in ``O(N)``: the number of
    grid points below the cumulative weight ``c_i`` is ``ceil(N c_i - U)`` (in float64: in float32,
    ``N - U`` rounds to ``N - 1`` for ``N ~ 1e4``); the count of particle ``i`` is its difference at
    consecutive cumulative weights.
    """
    c = _cdf(log_weights)
    B, N = c.shape
    U = _uniform((B, 1), c, generator).clamp_(max=1 - 2**-26)  # N - U > N - 1 below N ~ 1e8
    below = torch.add(-U, c, alpha=N, out=c).ceil_()  # #{j : (j + U)/N < c_i}, in [0, N]
    below = below.view(torch.long).copy_(below)  # float64 -> int64 in place, same bytes
    below[:, -1] = N  # the last cumulative weight is one: every grid point lies below it
    return _ancestors_from_below(below)


def residual(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Residual resampling: ``floor(N w)`` deterministic copies, the rest multinomial on residuals.
    ``LongTensor[B, N]``, sorted within rows.

    Offspring counts lie in ``[floor(N w), floor(N w) + N - sum floor(N w)]``. The weights are
    normalised in float64, so ``sum floor(N w) <= N``: rounding does not overshoot.
    """
    _check(log_weights)
    B, N = log_weights.shape
    w = log_weights - log_weights.amax(-1, keepdim=True)
    nw = w.exp_().to(torch.float64)  # a no-op for float64 input
    nw.mul_(N / nw.sum(-1, keepdim=True))  # N w
    counts = nw.long()  # floor(N w), [B, N]
    R = (N - counts.sum(-1, keepdim=True)).clamp_(min=0)  # [B, 1] residual draws per row
    n = int(R.max())  # one host sync: draw only as many sorted uniforms as the largest row needs
    if n > 0:
        c = nw.frac_().cumsum_(-1)  # cumulative residuals N w - floor(N w) >= 0 (exact)
        c.div_(c[:, -1:].clamp_min(torch.finfo(c.dtype).tiny))  # rows with no residual: never used
        extra = _search(c, _sorted_uniform((B, n), c, generator, count=R))  # first R_b entries used
        one = torch.ones((), dtype=counts.dtype, device=counts.device)
        used = one.expand(B, n) if B == 1 else (torch.arange(n, device=counts.device) < R).to(counts.dtype)
        counts.scatter_add_(1, extra, used)
    return _ancestors_from_below(counts.cumsum_(-1))


def _ancestors_from_below(below: Tensor) -> Tensor:
    """Ancestor indices from ``below: LongTensor[B, N]``, non-decreasing rows ending in ``N``, where
    ``below[b, i]`` is the number of offspring of particles ``0..i`` (cumulative offspring counts).

    Slot ``j`` descends from the number of particles ``i`` with ``below[b, i] <= j``: a histogram of
    ``below`` (``bincount``) and its cumulative sum, ``O(N)`` with two passes. Returns
    ``LongTensor[B, N]`` sorted within rows (``repeat_interleave`` of the offspring counts).
    """
    B, N = below.shape
    flat = below.reshape(-1)
    if B > 1:  # row b's values go to bins b (N + 1) .. b (N + 1) + N
        flat = (below + torch.arange(B, device=below.device)[:, None] * (N + 1)).reshape(-1)
    hist = torch.bincount(flat, minlength=B * (N + 1)).view(B, N + 1).cumsum_(-1)
    return hist[:, :N] if B == 1 else hist[:, :N].contiguous()


def offspring_counts(ancestors: Tensor, num_particles: int | None = None) -> Tensor:
    """How many times each particle was chosen: ``ancestors [B, M] -> LongTensor[B, N]``."""
    B = ancestors.shape[0]
    N = num_particles if num_particles is not None else ancestors.shape[-1]
    out = torch.zeros(B, N, dtype=torch.long, device=ancestors.device)
    return out.scatter_add_(1, ancestors, torch.ones_like(ancestors))


#: ``{name: scheme}`` of the resampling schemes.
RESAMPLERS: dict[str, Resampler] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}
