"""Coverage and simulation-based calibration: estimators, tests, and real samplers on the oracle."""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from posterior.diagnostics.calibration import (
    coverage,
    coverage_curve_levels,
    credible_interval,
    default_num_bins,
    sbc_ranks,
    sbc_test,
    simulation_based_calibration,
)
from tests.diagnostics._samplers import oracle_samplers_registered


@pytest.fixture(autouse=True, scope="module")
def _test_samplers():
    with oracle_samplers_registered():
        yield


# --------------------------------------------------------------------------- intervals and coverage
def test_credible_interval_matches_normal_quantiles() -> None:
    x = torch.randn(3, 100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lo, hi = credible_interval(x, 0.9, dim=1)
    z = 1.6448536269514722
    # quantile error ~ sqrt(q (1 - q) / n) / pdf(z) ~ 0.0067; 5 sigma
    torch.testing.assert_close(lo, torch.full((3,), -z, dtype=torch.float64), atol=0.035, rtol=0)
    torch.testing.assert_close(hi, torch.full((3,), z, dtype=torch.float64), atol=0.035, rtol=0)
    lo2, hi2 = credible_interval(x, torch.tensor([0.5, 0.9], dtype=torch.float64), dim=1)
    assert lo2.shape == (2, 3)
    torch.testing.assert_close(lo2[1], lo)
    torch.testing.assert_close(hi2[1], hi)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        credible_interval(x, 1.0)


def test_interval_from_few_draws_has_nominal_coverage() -> None:
    """Weibull positions: an interval from N iid draws holds a new draw with probability a."""
    gen = torch.Generator().manual_seed(1)
    B, N = 40_000, 19
    draws = torch.randn(B, N, 1, generator=gen)
    truth = torch.randn(B, 1, generator=gen)
    cov = coverage(draws, truth, [0.5, 0.8, 0.9])
    se = cov.stderr()
    assert ((cov.overall - cov.levels).abs() < 4 * se).all(), cov.overall


def test_coverage_detects_overconfidence_and_reports_its_error() -> None:
    gen = torch.Generator().manual_seed(2)
    B, N, d = 3000, 64, 3
    truth = torch.randn(B, d, generator=gen)
    good = torch.randn(B, N, d, generator=gen)
    narrow = 0.6 * torch.randn(B, N, d, generator=gen)
    cg, cn = coverage(good, truth), coverage(narrow, truth)
    assert cg.per_coordinate.shape == (4, d) and cg.per_problem.shape == (4, B)
    assert ((cg.overall - cg.levels).abs() < 4 * cg.overall_stderr()).all(), cg.overall
    assert (cn.overall < cn.levels - 10 * cn.overall_stderr()).all(), cn.overall
    assert cg.at(0.9) == pytest.approx(float(cg.overall[2]))
    with pytest.raises(ValueError, match="not computed"):
        cg.at(0.7)
    with pytest.raises(ValueError, match="expected samples"):
        coverage(good, truth[:, :2])


# --------------------------------------------------------------------------- ranks and the test
def test_sbc_ranks_count_draws_below_truth() -> None:
    samples = torch.tensor([[[0.0, 5.0], [1.0, 4.0], [2.0, 3.0]]])  # [B=1, L=3, d=2]
    truth = torch.tensor([[1.5, 3.5]])
    assert sbc_ranks(samples, truth).tolist() == [[2, 1]]


def test_sbc_ranks_break_ties_uniformly() -> None:
    """A clipped coordinate equal in truth and all draws gets a uniform rank, not always 0."""
    B, L = 4000, 9
    samples = torch.full((B, L, 1), -1.0)
    truth = torch.full((B, 1), -1.0)
    ranks = sbc_ranks(samples, truth, torch.Generator().manual_seed(0))
    assert ranks.min() == 0 and ranks.max() == L
    assert not sbc_test(ranks, L).rejected(0.01)
    half = samples.clone()
    half[:, :4] = -2.0  # 4 draws below, 5 tied: ranks uniform on 4..9
    r2 = sbc_ranks(half, truth, torch.Generator().manual_seed(1))
    assert r2.min() == 4 and r2.max() == 9


def test_default_bins() -> None:
    assert default_num_bins(19, 400) == 20
    assert default_num_bins(19, 200) == 20
    assert default_num_bins(19, 50) == 10
    assert default_num_bins(255, 1000) == 16
    assert default_num_bins(9, 3) == 1


def test_sbc_test_accepts_uniform_and_rejects_skewed_ranks() -> None:
    gen = torch.Generator().manual_seed(3)
    L, B = 19, 400
    uniform = torch.randint(0, L + 1, (B, 4), generator=gen)
    t = sbc_test(uniform, L)
    assert t.num_bins == 20 and t.counts.shape == (20, 4)
    assert t.counts.sum(0).tolist() == [B] * 4
    assert not t.rejected(0.01), t.p_value
    # ranks piled at the ends: an over-confident posterior
    u = torch.rand(B, 4, generator=gen)
    skewed = torch.where(u < 0.2, 0, torch.where(u > 0.8, L, torch.randint(0, L + 1, (B, 4), generator=gen)))
    assert sbc_test(skewed, L).p_value < 1e-6
    # unequal bins (21 rank values in 4 bins): expected counts still sum to B
    t2 = sbc_test(torch.randint(0, 21, (100, 1), generator=gen), 20, num_bins=4)
    assert t2.expected.sum().item() == pytest.approx(100)
    with pytest.raises(ValueError, match="ranks must lie"):
        sbc_test(torch.full((10, 1), 5), 4, num_bins=2)
    with pytest.raises(ValueError, match="at least 2"):
        sbc_test(torch.zeros(3, 1, dtype=torch.long), 9)


def test_sbc_test_false_rejection_rate_is_alpha() -> None:
    """Under uniform ranks the p-value is (close to) uniform: about 5% of tests reject at 5%."""
    gen = torch.Generator().manual_seed(4)
    ranks = torch.randint(0, 20, (200, 2000), generator=gen)  # 2000 independent coordinates
    p = sbc_test(ranks, 19).p_values
    rate = float((p < 0.05).double().mean())
    assert abs(rate - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 2000), rate


# --------------------------------------------------------------------------- the full check, oracle sampler
@pytest.mark.parametrize("mode", ["runs", "draws"])
def test_sbc_of_exact_draws_passes_and_of_shrunk_draws_fails(mode: str) -> None:
    p = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)
    kw = dict(num_problems=300, num_draws=19, num_particles=32, num_steps=1, mode=mode, seed=0)
    good = simulation_based_calibration(p.prior, p.operator, p.noise_std, "test_oracle", **kw)
    assert good.mode == mode and good.draws.shape == (300, 19, 2) and good.samples.shape == (300, 32, 2)
    assert not good.sbc.rejected(0.01), good.sbc.p_value
    se = good.coverage.overall_stderr()
    assert ((good.coverage.overall - good.coverage.levels).abs() < 4 * se).all(), good.coverage.overall
    bad = simulation_based_calibration(p.prior, p.operator, p.noise_std, "test_oracle", shrink=0.5, **kw)
    assert bad.sbc.rejected(0.01), bad.sbc.p_value
    assert bad.coverage.at(0.9) < 0.9 - 4 * float(bad.coverage.overall_stderr()[2])
    d = good.to_dict()
    assert d["sbc"]["num_problems"] == 300 and d["mode"] == mode


def test_simulation_based_calibration_bad_input() -> None:
    p = ps.problems.gmm_demo()
    with pytest.raises(ValueError, match="mode"):
        simulation_based_calibration(p.prior, p.operator, 0.1, "test_oracle", mode="both")
    with pytest.raises(ValueError, match="num_particles >= num_draws"):
        simulation_based_calibration(p.prior, p.operator, 0.1, "test_oracle", mode="draws", num_particles=5)
    with pytest.raises(ValueError, match="num_problems"):
        simulation_based_calibration(p.prior, p.operator, 0.1, "test_oracle", num_problems=0)
    with pytest.raises(ValueError, match="unknown method"):
        simulation_based_calibration(p.prior, p.operator, 0.1, "nope")


def test_coverage_curve_levels() -> None:
    lv = coverage_curve_levels(9)
    torch.testing.assert_close(lv, torch.arange(1, 10, dtype=torch.float64) / 10)


def test_simulation_based_calibration_with_a_noise_model() -> None:
    """Poisson counts, mode "runs": each problem's rows share its counts and its noise model."""
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    op = ps.operators.Nonlinear(lambda x: torch.nn.functional.softplus(x / 4))
    cal = simulation_based_calibration(
        prior,
        op,
        ps.noise.Poisson(2.0),
        "mala",
        num_problems=16,
        num_draws=4,
        num_particles=4,
        num_steps=6,
        mode="runs",
        seed=0,
    )
    assert cal.draws.shape == (16, 4, 2) and cal.truth.shape == (16, 2)
    assert torch.isfinite(cal.draws).all()
