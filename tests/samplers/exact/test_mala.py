"""The registered ``"mala"`` sampler: options, result layout, and the Gaussian-mixture oracle."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from tests.kernels._oracle import near_exact, rhat


def _connected_problem() -> ps.InverseProblem:
    """A 2-D bimodal posterior whose modes touch, so single MALA chains mix between them."""
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), torch.ones(2, 2)
    )
    return ps.InverseProblem(prior, torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), 1.0)


def test_result_layout_and_reproducibility() -> None:
    problem = ps.problems.gmm_benchmark(2, 1, seed=0)
    r = ps.sample(problem, "mala", 64, 20, seed=3, keep_chain=True, thin=2, burn_in=10)
    assert r.samples.shape == (64, 2) and r.acceptance.shape == (20,)
    assert r.stats["chain"].shape == (64, 5, 2)  # chains x draws x event
    assert torch.equal(r.stats["chain"][:, -1], r.samples)
    assert r.stats["step_size"].shape == (20,) and r.stats["divergences"].shape == (20,)
    assert (r.stats["step_size"][11:] == r.stats["step_size"][-1]).all()  # frozen after burn-in
    again = ps.sample(problem, "mala", 64, 20, seed=3, keep_chain=True, thin=2, burn_in=10)
    assert torch.equal(r.samples, again.samples)
    # batched problems: one step size per problem
    batched = ps.problems.simulate(problem.prior, problem.operator, 0.3, num_problems=3, seed=0)
    rb = ps.sample(batched, "mala", 32, 10, seed=0)
    assert rb.samples.shape == (3, 32, 2) and rb.stats["step_size"].shape == (3, 10)


def test_burn_in_noise_and_divergence() -> None:
    problem = ps.problems.gmm_benchmark(2, 1, seed=0)
    with pytest.raises(ValueError, match="burn_in"):
        ps.sample(problem, "mala", 8, 4, burn_in=4)
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y, 0.0)
    with pytest.raises(ValueError, match=r"^'mala' needs noise_std > 0$"):
        ps.sample(noiseless, "mala", 8, 4)
    # ULA with an absurd step diverges: reported, not returned
    with pytest.raises(FloatingPointError, match="diverged"):
        ps.sample(problem, "mala", 8, 30, metropolis=False, step_size=50.0, adapt=False)
    # MALA at the same step rejects instead
    r = ps.sample(problem, "mala", 8, 30, step_size=50.0, adapt=False)
    assert torch.isfinite(r.samples).all() and r.acceptance.mean() < 0.2


@pytest.mark.slow
@pytest.mark.parametrize(("dim", "obs_dim", "seed"), [(2, 1, 0), (8, 2, 0)])
def test_oracle_well_separated_modes(dim: int, obs_dim: int, seed: int) -> None:
    # 25 modes 8 apart: chains start by importance resampling and MALA refines within modes.
    # Four batched copies of the problem = four independent runs: R-hat across runs, and each
    # run's draws near the exact-vs-exact floor at n_eff = N / 2 (importance resampling duplicates).
    problem = ps.problems.gmm_benchmark(dim, obs_dim, seed)
    post = problem.exact_posterior()
    y4 = problem.y_batch.expand(4, -1).clone()
    four = ps.InverseProblem(problem.prior, problem.operator, y4, problem.noise_std)
    N = 1000
    r = ps.sample(four, "mala", N, 60, seed=1)
    assert rhat(r.samples) < 1.01
    d, q = near_exact(r.samples[0], post, n_eff=N // 2)
    assert d < q, (d, q)
    acc = r.acceptance[:, 30:].mean()
    assert 0.45 < acc < 0.7


@pytest.mark.slow
def test_ula_bias_shows_at_large_step() -> None:
    # Started from exact posterior draws, MALA stays exact; ULA at the same (large) step drifts
    # away: its stationary law is off by O(step_size). (Single-chain mixing and R-hat over 4
    # trajectories of this kernel: tests/kernels/test_pyro.py.)
    sharp = ps.problems.gmm_benchmark(2, 1, seed=1)
    post = sharp.exact_posterior()
    exact = post.sample(500, torch.Generator().manual_seed(0))
    ula = ps.sample(sharp, "mala", 500, 20, seed=0, init=exact, metropolis=False, step_size=0.3, adapt=False)
    mala = ps.sample(sharp, "mala", 500, 20, seed=0, init=exact, step_size=0.3, adapt=False)
    d_ula, q = near_exact(ula.samples, post)
    d_mala, _ = near_exact(mala.samples, post)
    assert d_mala < q < d_ula, (d_mala, q, d_ula)
