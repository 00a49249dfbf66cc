"""Property tests for the resampling schemes and the ESS."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posterior.particles import resampling as rs
from posterior.particles.resampling import RESAMPLERS, ess, offspring_counts

SCHEMES = sorted(RESAMPLERS)


@st.composite
def log_weights(draw: st.DrawFn, max_n: int = 40) -> torch.Tensor:
    """``[B, N]`` log-weights with zero weights (``-inf``) mixed in; one finite entry per row."""
    B = draw(st.integers(1, 3))
    N = draw(st.integers(1, max_n))
    vals = draw(st.lists(st.floats(-30, 30), min_size=B * N, max_size=B * N))
    zero = draw(st.lists(st.booleans(), min_size=B * N, max_size=B * N))
    lw = torch.tensor(vals, dtype=torch.float64).reshape(B, N)
    lw[torch.tensor(zero).reshape(B, N)] = -math.inf
    keep = draw(st.integers(0, N - 1))
    lw[:, keep] = torch.where(torch.isinf(lw[:, keep]), torch.zeros(B, dtype=lw.dtype), lw[:, keep])
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return lw.to(dtype)


def _counts(scheme: str, lw: torch.Tensor, seed: int = 0) -> torch.Tensor:
    anc = RESAMPLERS[scheme](lw, torch.Generator().manual_seed(seed))
    assert anc.dtype == torch.long and anc.shape == lw.shape
    assert (anc >= 0).all() and (anc < lw.shape[1]).all()
    return offspring_counts(anc)


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(lw=log_weights(), seed=st.integers(0, 2**31))
def test_indices_in_range_and_zero_weights_never_chosen(scheme: str, lw: torch.Tensor, seed: int) -> None:
    counts = _counts(scheme, lw, seed)
    assert (counts.sum(-1) == lw.shape[1]).all()
    assert (counts[torch.isinf(lw)] == 0).all()


@pytest.mark.parametrize(
    ("scheme", "low", "high"),
    [("systematic", 0, 1), ("stratified", -1, 2), ("residual", 0, None)],
)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(lw=log_weights(), seed=st.integers(0, 2**31))
def test_offspring_bounds(scheme: str, low: int, high: int | None, lw: torch.Tensor, seed: int) -> None:
    """Counts stay within ``floor(N w) + low .. floor(N w) + high`` (residual: at least the floor)."""
    counts = _counts(scheme, lw, seed)
    N = lw.shape[1]
    nw = N * torch.softmax(lw.double(), -1)
    tol = 1e-4 * N  # float32 weights may sit a hair away from an integer
    assert (counts >= torch.floor(nw - tol) + low).all()
    if high is not None:
        assert (counts <= torch.floor(nw + tol) + high).all()


@pytest.mark.parametrize("scheme", SCHEMES)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(lw=log_weights(max_n=12).filter(lambda x: x.shape[0] == 1))
def test_offspring_expectation_is_n_w(scheme: str, lw: torch.Tensor) -> None:
    """Mean offspring count over ``M`` independent rows is ``N w`` within 5 standard errors.

    The multinomial variance ``N w (1 - w)`` bounds that of every scheme here.
    """
    M, N = 4000, lw.shape[1]
    counts = _counts(scheme, lw.expand(M, N).contiguous(), seed=1).double()
    w = torch.softmax(lw[0].double(), -1)
    se = (N * w * (1 - w) / M).sqrt()
    assert ((counts.mean(0) - N * w).abs() <= 5 * se + 1e-3).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_expectation_catches_a_biased_scheme(scheme: str) -> None:
    """The expectation check above has power: a scheme that skips the last particle fails it."""
    lw = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).expand(4000, 4).contiguous()
    anc = RESAMPLERS[scheme](lw, torch.Generator().manual_seed(1))
    biased = anc.clamp(max=2)  # never picks particle 3
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    se = (4 * w * (1 - w) / 4000).sqrt()
    good = (offspring_counts(anc).double().mean(0) - 4 * w).abs() <= 5 * se + 1e-3
    bad = (offspring_counts(biased).double().mean(0) - 4 * w).abs() <= 5 * se + 1e-3
    assert good.all() and not bad.all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_float32_cumsum_ending_below_one(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Float32 weights whose cumulative sum ends below 1 and a uniform at its largest value:
    the last positive-weight particle is chosen, never an index out of range or a zero weight."""
    N = 10_000
    for seed in range(100):  # the first seed whose float32 cumulative sum ends below one
        lw = torch.randn(1, N, generator=torch.Generator().manual_seed(seed))
        lw[0, -3:] = -math.inf  # trailing zero weights
        if torch.cumsum(torch.softmax(lw, -1), -1)[0, -1] < 1:
            break
    assert torch.cumsum(torch.softmax(lw, -1), -1)[0, -1] < 1

    def top(shape, like, generator):  # every uniform at its largest value below one
        return torch.full(shape, 1 - torch.finfo(like.dtype).eps / 2, dtype=like.dtype)

    monkeypatch.setattr(rs, "_uniform", top)
    monkeypatch.setattr(
        rs, "_sorted_uniform", lambda shape, like, generator, count=None: top(shape, like, generator)
    )
    anc = RESAMPLERS[scheme](lw, None)
    assert (anc < N - 3).all()
    if scheme in ("multinomial", "systematic"):
        assert anc.max() == N - 4


def test_ess() -> None:
    lw = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [0.0, -math.inf, -math.inf, -math.inf], [1.0, 1.0, -math.inf, 1.0]]
    )
    torch.testing.assert_close(ess(lw), torch.tensor([4.0, 1.0, 3.0]))
    torch.testing.assert_close(ess(lw + 100.0), ess(lw), rtol=1e-4, atol=0)  # invariant to a constant


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="Tensor\\[B, N\\]"):
        rs.systematic(torch.zeros(5))
    with pytest.raises(ValueError, match="zero particles"):
        rs.multinomial(torch.zeros(2, 0))


def _reference(scheme: str, lw: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Searchsorted reference for the grid schemes on a float64 CDF: ``u`` are the uniforms
    ``[B, N]`` (stratified: one per stratum) or ``[B, 1]`` (systematic)."""
    c = torch.cumsum(torch.softmax(lw.double(), -1), -1)
    c = c / c[:, -1:]
    N = lw.shape[1]
    grid = (torch.arange(N, dtype=torch.float64) + u) / N
    return torch.searchsorted(c, grid, right=True).clamp_(max=N - 1)


@pytest.mark.parametrize("scheme", ["stratified", "systematic"])
@pytest.mark.parametrize("N", [1, 7, 1000, 100_000])
def test_count_formula_matches_search(scheme: str, N: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The O(N) count formulas (``ceil(N c - U_{floor(N c)})``, ``ceil(N c - U)``) give the same
    ancestors as searching the grid ``(j + U_j) / N`` in the CDF, with the same uniforms."""
    g = torch.Generator().manual_seed(N)
    lw = 2 * torch.randn(3, N, generator=g, dtype=torch.float64)
    lw[:, ::5] = -math.inf  # zero weights
    lw[:, 0] = 0.0
    drawn: list[torch.Tensor] = []

    def record(shape, like, generator):
        drawn.append(torch.rand(shape, generator=generator, dtype=like.dtype))
        return drawn[-1].clone()

    monkeypatch.setattr(rs, "_uniform", record)
    anc = RESAMPLERS[scheme](lw, torch.Generator().manual_seed(0))
    u = drawn[0][:, :N] if scheme == "stratified" else drawn[0]
    torch.testing.assert_close(anc, _reference(scheme, lw, u), rtol=0, atol=0)


@pytest.mark.parametrize("B", [1, 3])
def test_ancestors_from_below_is_repeat_interleave(B: int) -> None:
    g = torch.Generator().manual_seed(B)
    N = 50
    counts = torch.zeros(B, N, dtype=torch.long)
    for b in range(B):  # N offspring spread over a few particles, zeros included
        counts[b] = torch.bincount(torch.randint(0, N // 3, (N,), generator=g) * 3, minlength=N)
    anc = rs._ancestors_from_below(counts.cumsum(-1))
    expected = torch.stack([torch.repeat_interleave(torch.arange(N), counts[b]) for b in range(B)])
    assert anc.is_contiguous()
    torch.testing.assert_close(anc, expected, rtol=0, atol=0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_ancestors(scheme: str) -> None:
    lw = torch.randn(2, 1000, generator=torch.Generator().manual_seed(0))
    a = RESAMPLERS[scheme](lw, torch.Generator().manual_seed(3))
    b = RESAMPLERS[scheme](lw, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("scheme", ["stratified", "systematic", "residual"])
def test_offspring_bounds_at_ten_million(scheme: str) -> None:
    """Float32 log-weights, N = 10^7: the float64 grid still resolves the strata."""
    N = 10_000_000
    lw = 2 * torch.randn(1, N, generator=torch.Generator().manual_seed(0))
    counts = offspring_counts(RESAMPLERS[scheme](lw, torch.Generator().manual_seed(1)))
    nw = N * torch.softmax(lw.double(), -1)
    low, high = {"stratified": (-1, 2), "systematic": (0, 1), "residual": (0, N)}[scheme]
    assert counts.sum() == N
    assert (counts >= torch.floor(nw - 1e-6) + low).all()
    assert (counts <= torch.floor(nw + 1e-6) + high).all()


def test_ess_matches_float64() -> None:
    lw = 3 * torch.randn(2, 100_000, generator=torch.Generator().manual_seed(0))
    w = torch.softmax(lw.double(), -1)
    torch.testing.assert_close(ess(lw).double(), 1 / (w * w).sum(-1), rtol=1e-5, atol=0)
