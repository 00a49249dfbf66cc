"""Run this package's MALA and split-Gibbs kernels under ``pyro.infer.MCMC``.

    PYTHONPATH=. python examples/pyro_mcmc.py    # from the repository root (or with the package installed)

A 2-D Gaussian-mixture prior observed through one noisy linear measurement; the exact posterior
is known, so the script prints R-hat, ESS and the sliced Wasserstein distance of the draws to it.
"""

from __future__ import annotations

import warnings

import pyro
import torch

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.kernels.pyro import PyroKernel


def main() -> None:
    torch.set_num_threads(1)
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0.0], [1.5, 0.5]]), torch.ones(2, 2)
    )
    problem = ps.InverseProblem(prior, torch.tensor([[1.0, 1.0]]), torch.tensor([0.5]), 1.0)
    exact = problem.exact_posterior().sample(4000, torch.Generator().manual_seed(0))

    for kind, samples, warmup, options in (("mala", 1000, 300, {}), ("gibbs", 100, 20, {"prior_steps": 20})):
        # 4 vectorised chains in one pyro chain: the site "x" has shape [4, 2]
        kernel = PyroKernel(problem, kind, num_parallel=4, seed=0, init="prior", **options)
        mcmc = pyro.infer.MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc.run()
        draws = mcmc.get_samples(group_by_chain=True)["x"]  # [1, samples, 4, 2]
        chains = kernel.chains(draws)  # [4, samples, 2]: chains x draws
        rhat = pyro.ops.stats.split_gelman_rubin(chains, chain_dim=0, sample_dim=1)
        ess = pyro.ops.stats.effective_sample_size(chains, chain_dim=0, sample_dim=1)
        sw = sliced_wasserstein(chains.reshape(-1, 2), exact)
        acc = kernel.diagnostics()["acceptance rate"]
        print(
            f"{kind:5s}: draws {tuple(chains.shape)}, acceptance {acc:.2f}, "
            f"R-hat {rhat.max():.3f}, ESS {ess.min():.0f}, sliced W1 to the exact posterior {sw:.3f}"
        )


if __name__ == "__main__":
    main()
