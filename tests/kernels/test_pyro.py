"""The kernels under ``pyro.infer.MCMC``."""

from __future__ import annotations

import warnings

import pyro
import pytest
import torch

import posterior as ps
from posterior.kernels.pyro import PyroKernel
from tests.kernels._oracle import near_exact, rhat


def _connected_problem(noise: float = 1.0) -> ps.InverseProblem:
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), torch.ones(2, 2)
    )
    return ps.InverseProblem(prior, torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), noise)


@pytest.mark.parametrize("kind", ["mala", "ula", "gibbs"])
def test_runs_under_pyro_mcmc(kind: str) -> None:
    problem = ps.problems.gmm_benchmark(2, 1, seed=0)
    opts = {"prior_steps": 5} if kind == "gibbs" else {}
    kernel = PyroKernel(problem, kind, num_parallel=3, seed=0, **opts)
    mcmc = pyro.infer.MCMC(kernel, num_samples=6, warmup_steps=4, disable_progbar=True)
    mcmc.run()
    draws = mcmc.get_samples(group_by_chain=True)["x"]
    assert draws.shape == (1, 6, 3, 2)
    assert kernel.chains(draws).shape == (3, 6, 2)
    assert "acceptance rate" in mcmc.diagnostics()
    # one chain per pyro chain, pyro's own chain dimension (drawn sequentially on few CPUs)
    single = PyroKernel(problem, kind, seed=0, **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc = pyro.infer.MCMC(single, num_samples=5, warmup_steps=2, num_chains=2, disable_progbar=True)
        mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.shape == (2, 5, 2) and not torch.equal(x[0], x[1])


def test_initial_params_and_bad_input() -> None:
    problem = ps.problems.gmm_benchmark(2, 1, seed=0)
    kernel = PyroKernel(problem, "mala", num_parallel=2, seed=0)
    init = {"x": torch.zeros(2, 2)}
    mcmc = pyro.infer.MCMC(kernel, num_samples=1, warmup_steps=0, initial_params=init, disable_progbar=True)
    mcmc.run()
    assert mcmc.get_samples()["x"].shape == (1, 2, 2)
    with pytest.raises(ValueError, match="kernel"):
        PyroKernel(problem, "hmc")
    with pytest.raises(ValueError, match="step_size"):
        PyroKernel(problem, "mala", step_size=0.0)


@pytest.mark.slow
def test_pyro_mala_draws_pass_the_oracle() -> None:
    problem = _connected_problem()
    kernel = PyroKernel(problem, "mala", num_parallel=4, seed=0, init="prior")
    mcmc = pyro.infer.MCMC(kernel, num_samples=1200, warmup_steps=300, disable_progbar=True)
    mcmc.run()
    chains = kernel.chains(mcmc.get_samples(group_by_chain=True)["x"])  # [4, 1200, 2]
    assert rhat(chains) < 1.01
    import arviz as az

    ess = min(float(az.ess(chains[..., j].double().numpy())) for j in range(2))
    d, q = near_exact(chains.reshape(-1, 2), problem.exact_posterior(), n_eff=int(ess))
    assert d < q, (d, q, ess)


@pytest.mark.slow
def test_pyro_gibbs_draws_pass_the_oracle() -> None:
    # 400 vectorised split-Gibbs chains started from the prior (far from the posterior: the test
    # fails if the kernel does not move them); the last draw of every chain is a posterior draw.
    problem = _connected_problem(noise=2.0)
    post = problem.exact_posterior()
    start = problem.prior.sample(400, torch.Generator().manual_seed(0))
    assert near_exact(start, post)[0] > near_exact(start, post)[1]  # the start is off
    kernel = PyroKernel(problem, "gibbs", num_parallel=400, seed=0, init="prior")
    mcmc = pyro.infer.MCMC(kernel, num_samples=10, warmup_steps=0, disable_progbar=True)
    mcmc.run()
    chains = kernel.chains(mcmc.get_samples(group_by_chain=True)["x"])  # [400, 10, 2]
    d, q = near_exact(chains[:, -1], post)
    assert d < q, (d, q)
