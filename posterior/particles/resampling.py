"""Resampling schemes and the effective sample size, batched over independent problems.

Every scheme is a pure function ``(log_weights: Tensor[B, N], generator) -> LongTensor[B, N]`` of
ancestor indices (Douc, Cappé & Moulines, 2005, "Comparison of resampling schemes for particle
filtering"; Chopin & Papaspiliopoulos, 2020, ch. 9). The weights need not be normalised; each row
is normalised in log space first. Rows are resampled independently, with no Python loop over
particles or problems.

Numerics: cumulative sums are divided by their own last entry, so the last cumulative weight is
exactly ``1`` even when a float32 sum ends below one, and uniforms are kept strictly below ``1``.
A particle of weight zero is never chosen (its cumulative weight equals its predecessor's and the
search returns the first index whose cumulative weight exceeds the uniform).
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

    Computed in log space; unnormalised weights are fine.
    """
    normalised = log_weights - torch.logsumexp(log_weights, -1, keepdim=True)
    return torch.exp(-torch.logsumexp(2 * normalised, -1))


def _cdf(log_weights: Tensor) -> Tensor:
    """Cumulative normalised weights ``[B, N]`` with the last entry exactly ``1``."""
    _check(log_weights)
    c = torch.cumsum(normalize(log_weights), dim=-1)
    return c / c[..., -1:]  # x / x == 1 exactly; trailing zero-weight entries become 1 too


def _uniform(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return u.clamp_(max=1 - torch.finfo(like.dtype).eps / 2)  # strictly below one


def _sorted_uniform(
    shape: tuple[int, int], like: Tensor, generator: torch.Generator | None, count: Tensor | None = None
) -> Tensor:
    """Sorted i.i.d. uniforms ``[B, n]`` in ``O(n)``: cumulative sums of exponentials divided by
    the sum of ``count_b + 1`` of them (Devroye, 1986, V.3), so the first ``count_b`` entries of
    row ``b`` (default: all ``n``) are ``count_b`` sorted uniforms. Sorted queries make the search
    cache-friendly."""
    B, n = shape
    e = torch.empty(B, n + 1, device=like.device, dtype=torch.float64).exponential_(generator=generator)
    c = torch.cumsum(e, -1)
    total = c[:, n:] if count is None else torch.gather(c, 1, count.reshape(B, 1))
    u = (c[:, :n] / total).to(like.dtype)
    return u.clamp_(max=1 - torch.finfo(like.dtype).eps / 2)


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
    """Stratified resampling: one uniform in each stratum ``[i/N, (i+1)/N)``. ``LongTensor[B, N]``.

    Offspring counts lie in ``[floor(N w) - 1, floor(N w) + 2]``.
    """
    cdf = _cdf(log_weights).double()  # float64 grid: (i + U) / N must resolve strata at N ~ 1e7
    B, N = cdf.shape
    u = (torch.arange(N, device=cdf.device, dtype=cdf.dtype) + _uniform((B, N), cdf, generator)) / N
    return _search(cdf, u.clamp_(max=1 - torch.finfo(cdf.dtype).eps / 2))


def systematic(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Systematic resampling: the grid ``(i + U) / N`` with one uniform ``U`` per row.

    Offspring counts lie in ``{floor(N w), floor(N w) + 1}``. Computed in ``O(N)``: the count of
    particle ``i`` is the number of grid points in ``[c_{i-1}, c_i)``, i.e. the difference of
    ``ceil(N c - U)`` at consecutive cumulative weights, then indices by ``repeat_interleave``.
    """
    cdf = _cdf(log_weights)
    B, N = cdf.shape
    U = _uniform((B, 1), cdf.double(), generator).clamp_(max=1 - 2**-26)  # N - U > N - 1 below N ~ 1e8
    # #{j : (j + U)/N < c_i}, in float64: in float32, N - U rounds to N - 1 for N ~ 1e4
    below = torch.ceil(N * cdf.double() - U).clamp_(0, N).long()
    below[:, -1] = N  # the last cumulative weight is one: every grid point lies below it
    counts = torch.diff(below, dim=-1, prepend=below.new_zeros(B, 1)).clamp_(min=0)
    return _indices_from_counts(counts)


def residual(log_weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Residual resampling: ``floor(N w)`` deterministic copies, the rest multinomial on residuals.

    Offspring counts lie in ``[floor(N w), floor(N w) + N - sum floor(N w)]``. The deterministic
    part is computed in float64 so that ``floor(N w)`` does not overshoot through rounding.
    """
    _check(log_weights)
    B, N = log_weights.shape
    w = normalize(log_weights.double())
    nw = N * w
    counts = torch.floor(nw).long()  # [B, N]
    det = _indices_from_counts(counts, total=N)  # [B, N], valid for columns < D_b
    D = counts.sum(-1, keepdim=True)  # [B, 1]
    resid = (nw - counts).clamp_(min=0)
    c = torch.cumsum(resid, -1)
    c = c / c[..., -1:].clamp_min(torch.finfo(c.dtype).tiny)  # rows with no residual: never used
    R = (N - D).clamp_(min=0)  # [B, 1] residual draws per row
    extra = _search(c, _sorted_uniform((B, N), c, generator, count=R))  # first R_b entries used
    cols = torch.arange(N, device=log_weights.device)
    shifted = torch.gather(extra, 1, (cols - D).clamp_(0, N - 1))  # column j >= D_b takes extra[j - D_b]
    return torch.where(cols < D, det, shifted)


def _indices_from_counts(counts: Tensor, total: int | None = None) -> Tensor:
    """Ancestor indices from offspring counts ``[B, N]`` (``repeat_interleave`` per row).

    With ``total`` given, rows may sum to less than ``total``; the missing tail of each row is
    filled with ``0`` (callers overwrite it). Returns ``LongTensor[B, N]`` sorted within rows.
    """
    B, N = counts.shape
    idx = torch.arange(N, device=counts.device).repeat(B)
    if total is None:  # every row sums to N
        return torch.repeat_interleave(idx, counts.reshape(-1)).view(B, N)
    flat = torch.repeat_interleave(idx, counts.reshape(-1))
    sums = counts.sum(-1)
    start = torch.cumsum(sums, 0) - sums  # [B] offsets of each row in ``flat``
    cols = torch.arange(N, device=counts.device)
    pos = start[:, None] + torch.minimum(cols[None, :], (sums[:, None] - 1).clamp_min(0))
    flat = torch.cat([flat, flat.new_zeros(1)])  # padding for rows with no deterministic copy
    out = flat[pos.clamp_(max=flat.numel() - 1)]
    return torch.where(cols[None, :] < sums[:, None], out, torch.zeros_like(out))


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
