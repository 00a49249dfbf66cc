"""MALA moves for resample-move SMC: standalone invariance, and wired into the particle engine."""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from posterior.kernels import mala_move, rejuvenate
from tests.kernels._oracle import near_exact


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
    problem = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)
    post = problem.exact_posterior()
    N = 1000
    plain = ps.sample(problem, "smc", N, 30, seed=0)
    moved = ps.sample(problem, "smc", N, 30, seed=0, move=mala_move(2))
    assert moved.acceptance is not None and (moved.acceptance[moved.resampled[:-1].nonzero()] > 0.2).all()
    u_plain = torch.unique(plain.samples, dim=0).shape[0]
    u_moved = torch.unique(moved.samples, dim=0).shape[0]
    assert u_moved > u_plain, (u_plain, u_moved)
    # TDS with moves stays exact; the final move (the engine stops at its final resampling)
    # removes the remaining duplicates and keeps the draws exact
    tds = ps.sample(problem, "tds", N, 30, seed=0, move=mala_move(2))
    final, _ = rejuvenate(tds.samples, problem, mala_move(3, step_size=0.3), torch.Generator().manual_seed(1))
    assert torch.unique(final, dim=0).shape[0] > 0.95 * N > torch.unique(tds.samples, dim=0).shape[0]
    for samples in (tds.samples, final):
        d, q = near_exact(samples, post, n_eff=N // 2)
        assert d < q, (d, q)
