"""MALA moves for resample-move SMC: standalone invariance, and wired into the particle engine."""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.kernels import mala_move, rejuvenate
from tests.kernels._oracle import near_exact
from tests.samplers.exact.test_exact import two_modes


def test_move_keeps_gaussian_and_adapts() -> None:
    move = mala_move(num_steps=3, step_size=5.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4000, 3, generator=gen)
    log_target = lambda z: -0.5 * z.pow(2).sum(-1)  # noqa: E731
    for _ in range(10):
        x, acc = move(x, log_target, gen)
    assert acc.shape == (2,)
    assert move.step_size is not None and (move.step_size < 5.0).all()  # too-large step shrunk
    se = math.sqrt(2 / x.numel())
    assert abs(x.var().item() - 1) < 6 * se
    # gradient-free (random-walk) variant works with a non-differentiable log target
    rw = mala_move(2, step_size=0.5, gradient=False)
    x2, acc2 = rw(x, lambda z: log_target(z).detach(), gen)
    assert torch.isfinite(x2).all() and (acc2 > 0).all()
    with pytest.raises(ValueError, match="differentiabl"):
        mala_move(1)(x, lambda z: log_target(z).detach(), gen)


def test_bad_move_options() -> None:
    for kw in ({"num_steps": 0}, {"step_size": 0.0}, {"step_size": -1.0}, {"target_accept": 1.0}):
        with pytest.raises(ValueError):
            mala_move(**kw)


@pytest.mark.slow
def test_resample_move_in_smc_raises_unique_particles_and_stays_exact() -> None:
    # The engine's own oracle (tests/samplers/exact/test_exact.py): B = 4 two-mode problems in
    # d = 3, 50 steps, distance within 3x the exact-vs-exact floor.
    problem = two_modes(4)
    post = problem.exact_posterior()
    N = 2048
    ref = post.sample(N, torch.Generator().manual_seed(0))  # [4, N, 3]
    floor = float(sliced_wasserstein(post.sample(N, torch.Generator().manual_seed(1)), ref).mean())

    def unique(x: torch.Tensor) -> float:
        return sum(torch.unique(xb, dim=0).shape[0] for xb in x) / x.shape[0]

    moved = ps.sample(problem, "smc", N, 50, seed=0, move=mala_move(2))
    tds = ps.sample(problem, "tds", N, 50, seed=0, move=mala_move(2))
    # acceptance recorded at every resampling step (NaN elsewhere), in a sane range
    for r in (moved, tds):
        acc = r.acceptance[:, :-1][r.resampled[:, :-1]]
        assert acc.numel() > 0 and (acc > 0.2).all() and (acc < 1).all()
        assert torch.isnan(r.acceptance[:, :-1][~r.resampled[:, :-1]]).all()
    for r in (moved, tds):
        d = sliced_wasserstein(r.samples, ref).mean().item()
        assert d < 3 * floor, (r.method, d, floor)
    # Moves after intermediate resamplings change the final duplicates only indirectly (the last
    # resampling comes after the last move). The final move removes them: unique particles rise
    # to ~N, and the draws sit at the floor (near_exact's quantile test at n_eff = N / 2).
    final, _ = rejuvenate(tds.samples, problem, mala_move(3, step_size=0.3), torch.Generator().manual_seed(1))
    assert unique(final) > 0.97 * N > unique(tds.samples)
    covs = post.covs if post.covs.dim() == 3 else post.covs[0]  # shared by the problems, or per problem
    post0 = ps.GaussianMixture(post.weights[0], post.means[0], covs)
    d, q = near_exact(final[0], post0, n_eff=N // 2)
    assert d < q, (d, q)


def test_a_reused_move_starts_each_run_afresh() -> None:
    # the adapted step size belongs to a run: a second run with the same move object gives the
    # draws of a fresh move (it used to start from the first run's adapted step size)
    problem = ps.problems.gmm_benchmark(4, 2, seed=0)
    move = mala_move(2, step_size=1.0)
    first = ps.sample(problem, "smc", num_particles=32, num_steps=6, seed=1, move=move).samples
    adapted = move.step_size.clone()
    again = ps.sample(problem, "smc", num_particles=32, num_steps=6, seed=1, move=move).samples
    fresh = ps.sample(problem, "smc", num_particles=32, num_steps=6, seed=1, move=mala_move(2, step_size=1.0))
    assert not torch.equal(adapted, torch.ones_like(adapted))  # the first run did adapt
    assert torch.equal(first, again) and torch.equal(again, fresh.samples)


def test_functional_move_api_carries_the_adaptation_in_its_state() -> None:
    move = mala_move(1, step_size=4.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 500, 3, generator=gen)
    state = move.init(x)
    assert state.calls == 0 and torch.equal(state.step_size, torch.full((2,), 4.0))
    x, acc, state = move.step(gen, state, x, lambda z: -0.5 * z.pow(2).sum(-1))
    assert state.calls == 1 and (state.step_size < 4.0).all() and acc.shape == (2,)
    assert move.step_size is None  # the functional API leaves the object untouched
