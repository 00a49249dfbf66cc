"""The shared reverse-loop helpers of the approximate baselines."""

import pytest
import torch

import posterior as ps
from posterior.samplers.approximate import _loop
from tests.samplers.approximate._baselines import gaussian_problem


def test_time_pairs() -> None:
    sched = ps.VPSchedule.linear()
    assert _loop.time_pairs(sched, 10) == sched.time_pairs(10)
    pairs = _loop.time_pairs(sched, 50, 9)  # fewer times than steps available below t_start
    assert [t for t, _ in pairs] == list(range(9, -1, -1)) and pairs[-1] == (0, -1)
    for bad in ((0, None), (5, 1000), (5, -1)):
        with pytest.raises(ValueError):
            _loop.time_pairs(sched, *bad)


def test_problem_rows_and_shapes() -> None:
    assert _loop.problem_rows(slice(3, 8), 3).tolist() == [1, 1, 1, 2, 2]
    x = torch.randn(2, 3, 4)
    assert torch.equal(_loop.unflat(_loop.flat(x), 2, 3), x)
    assert _loop.per_problem(torch.tensor([1.0, 2.0]), x).shape == (2, 1, 1)


def test_residual_gradient_matches_autograd_per_problem() -> None:
    problem = gaussian_problem(noise_std=(0.3, 0.7))
    prior = problem.prior
    prior.max_batch_size = 4  # chunks straddle the two problems
    x = torch.randn(2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    den, vals, grad = _loop.denoise_with_grad(prior, x, 300, _loop.residual_sq_fn(problem))
    xr = x.clone().requires_grad_(True)
    x0 = (
        xr
        - (1 - prior.schedule.alpha_bar(300)) ** 0.5
        * prior.model_output(xr.reshape(10, 4), torch.full((10,), 300)).reshape(2, 5, 4)
    ) / prior.schedule.alpha_bar(300) ** 0.5
    sq = problem.residual(x0).pow(2).sum(-1)
    (expected,) = torch.autograd.grad(sq.sum(), xr)
    torch.testing.assert_close(vals, sq.detach())
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(den.x0, x0.detach())


def test_ddim_sample_is_noiseless_at_clean() -> None:
    problem = gaussian_problem()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    out, den = _loop.ddim_sample(problem.prior, x, 0, -1, 1.0, gen)
    torch.testing.assert_close(out, den.x0)


def test_reverse_loop_names_step() -> None:
    def step(x: torch.Tensor, t: int, s: int, i: int) -> torch.Tensor:
        return x / 0 if i == 2 else x

    pairs = ps.VPSchedule.linear().time_pairs(5)
    with pytest.raises(FloatingPointError, match=rf"demo: step 2 \(t={pairs[2][0]}\)"):
        _loop.reverse_loop("demo", pairs, torch.zeros(1, 1, 2), step)


def test_runaway_draws_warn_and_data_far_from_unit_scale_does_not() -> None:
    """The MCGdiff mixture's data sit at a root-mean-square scale of about 20 (far above a VP
    chain's unit start): PiGDM's draws there do not warn; with a guidance 30 times too strong
    they grow to 1e6 and warn (a removed check fails the second half)."""
    import warnings

    import posterior as ps

    problem = ps.problems.gmm_benchmark(8, 2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ps.DivergenceWarning)
        fine = ps.sample(problem, "pigdm", 64, 25, seed=0, progress=False)
    assert fine.samples.flatten(1).pow(2).mean(-1).sqrt().max() > 10  # far from unit scale, no warning
    with pytest.warns(ps.DivergenceWarning, match=r"pigdm: \d+ draw\(s\) in 1 of 1 problem\(s\) ran away"):
        ps.sample(problem, "pigdm", 64, 25, seed=0, progress=False, guidance_scale=30.0)


def test_divergence_limit_is_the_largest_data_scale_the_start_allows() -> None:
    from posterior.samplers.approximate.divergence import DIVERGED_FACTOR, divergence_limit

    start = torch.full((1, 4, 9), 3.0)  # rms 3
    assert divergence_limit(start, 0.25) == pytest.approx(DIVERGED_FACTOR * 3.0 / 0.5)
    assert divergence_limit(0.1 * start, 0.25) == pytest.approx(DIVERGED_FACTOR * 1.0 / 0.5)  # at least 1
