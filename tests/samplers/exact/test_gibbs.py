"""The registered ``"gibbs"`` sampler (PnP-DM split Gibbs) on the Gaussian-mixture oracle."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from tests.kernels._oracle import near_exact, rhat


def test_result_layout() -> None:
    problem = ps.problems.gmm_benchmark(2, 1, seed=0)
    r = ps.sample(problem, "gibbs", 32, 6, seed=0, keep_chain=True, burn_in=2, prior_steps=10, rho_start=5.0)
    assert r.samples.shape == (32, 2) and r.acceptance.shape == (6,)
    assert r.stats["chain"].shape == (32, 4, 2) and r.stats["rho"].shape == (6,)
    rho = r.stats["rho"]
    assert rho[0] > rho[2] and (rho[2:] == rho[-1]).all()  # annealed in burn-in, then the floor
    again = ps.sample(
        problem, "gibbs", 32, 6, seed=0, keep_chain=True, burn_in=2, prior_steps=10, rho_start=5.0
    )
    assert torch.equal(r.samples, again.samples)
    assert r.num_evals == 0  # the mixture draws p(x | z) in closed form: no network call
    chain = ps.sample(problem, "gibbs", 32, 6, seed=0, burn_in=2, prior_steps=10, exact_prior_step=False)
    assert chain.num_evals == 32 * 6 * 10  # the reverse chain: prior_steps evaluations per sweep


@pytest.mark.slow
@pytest.mark.parametrize(("dim", "obs_dim", "seed"), [(2, 1, 0), (8, 2, 0)])
def test_oracle_well_separated_modes(dim: int, obs_dim: int, seed: int) -> None:
    # four batched copies = four independent runs: R-hat across runs, draws near the floor
    problem = ps.problems.gmm_benchmark(dim, obs_dim, seed)
    post = problem.exact_posterior()
    y4 = problem.y_batch.expand(4, -1).clone()
    four = ps.InverseProblem(problem.prior, problem.operator, y4, problem.noise_std)
    N = 500
    r = ps.sample(four, "gibbs", N, 8, seed=1, burn_in=2)
    assert rhat(r.samples) < 1.01
    d, q = near_exact(r.samples.reshape(-1, dim)[: 2 * N], post, n_eff=N)
    assert d < q, (d, q)


@pytest.mark.slow
def test_pnpdm_split_is_biased_and_exact_split_is_not() -> None:
    # Started from exact draws, the exact split keeps the posterior; PnP-DM's original split at a
    # large rho targets a wider posterior, and the bias shows.
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), torch.ones(2, 2)
    )
    problem = ps.InverseProblem(prior, torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), 2.0)
    post = problem.exact_posterior()
    exact = post.sample(1000, torch.Generator().manual_seed(5))
    good = ps.sample(problem, "gibbs", 1000, 3, seed=0, init=exact, burn_in=0)
    biased = ps.sample(problem, "gibbs", 1000, 3, seed=0, init=exact, correct_likelihood=False, rho_floor=3.0)
    d_good, q = near_exact(good.samples, post)
    d_biased, _ = near_exact(biased.samples, post)
    assert d_good < q < d_biased, (d_good, q, d_biased)


def test_spread_of_a_narrow_posterior_is_exact() -> None:
    # A = [1, 0], y = 8.3, noise 0.05: x1's posterior is N(8.2993, 0.0499^2) in closed form. The
    # prior step draws p(x | z) exactly; a reverse chain ending with a deterministic step would
    # give sd 0.044. Tolerance: 4 Monte Carlo standard errors from the chains' effective sample
    # sizes (arviz, for the mean and for the sd).
    import arviz as az

    prior = ps.problems.gmm_benchmark(2, 1, seed=0).prior
    problem = ps.InverseProblem(prior, torch.tensor([[1.0, 0.0]]), torch.tensor([8.3]), 0.05)
    post = problem.exact_posterior()
    mean, sd = float(post.mean[0]), float(post.covariance[0, 0].sqrt())
    r = ps.sample(problem, "gibbs", 1000, 30, seed=0, burn_in=10, keep_chain=True)
    x1 = r.stats["chain"][..., 0].double()  # [chains, draws]
    draws = x1.numpy()
    ess_mean, ess_sd = float(az.ess(draws, method="mean")), float(az.ess(draws, method="sd"))
    sq = (x1 - x1.mean()).pow(2)
    se_mean = float(x1.std()) / ess_mean**0.5
    se_sd = float(sq.std()) / ess_sd**0.5 / (2 * sd)  # delta method: sd = sqrt(E (x - m)^2)
    assert abs(float(x1.mean()) - mean) < 4 * se_mean, (float(x1.mean()), mean, se_mean)
    assert abs(float(x1.std()) - sd) < 4 * se_sd, (float(x1.std()), sd, se_sd)
