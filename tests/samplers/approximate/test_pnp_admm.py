"""PnP-ADMM: the data step solves its quadratic subproblem; the Gaussian fixed point; errors."""

import pytest
import torch

import posterior as ps
from posterior.samplers.approximate.pnp_admm import admm_data_step
from tests.samplers.approximate._linear_gaussian import NaNPrior, NoSVD, gaussian_problem, posterior_moments


@pytest.mark.parametrize("svd", [True, False])
def test_data_step_solves_the_admm_subproblem(svd):
    """The gradient of ||y - A x||^2 / (2 sigma^2) + rho/2 ||x - v||^2 vanishes at the data step."""
    problem = gaussian_problem(d=5, m=3, B=2)
    if not svd:
        problem = ps.InverseProblem(
            problem.prior, NoSVD(problem.operator.matrix()), problem.y_batch, problem.sigma
        )
    v = torch.randn(2, 4, 5, dtype=torch.float64)
    rho = torch.tensor([0.01, 30.0], dtype=torch.float64)
    x = admm_data_step(problem, v, rho, cg_iters=50).requires_grad_(True)
    obj = problem.residual(x).pow(2).sum(-1) / (2 * problem.sigma.pow(2)[:, None])
    obj = obj + 0.5 * rho[:, None] * (x - v).pow(2).sum(-1)
    (g,) = torch.autograd.grad(obj.sum(), x)
    scale = rho.max().item() + problem.operator.matrix().norm().item() ** 2 / problem.sigma.min().item() ** 2
    assert g.abs().max().item() < 1e-9 * scale * (1 + x.abs().max().item())
    assert not torch.allclose(x, v)


def test_converges_to_the_map_for_a_gaussian_prior():
    """For a Gaussian prior the MMSE denoiser at level sigmabar is the exact proximal map of
    ``-log p`` with step ``sigmabar^2``, so ADMM converges to the MAP (= the posterior mean); with the
    annealed penalty the error shrinks as the number of iterations grows (geometric contraction).
    The penalty anneals along the "leading" grid, on which the 1e-6 below was measured (the
    default grid, denser at low noise, leaves 2e-5 relative after 160 iterations)."""
    problem = gaussian_problem(d=4, m=2, B=2)
    mean, _ = posterior_moments(problem)
    errs = []
    for steps in (10, 40, 160):
        res = ps.sample(problem, "pnp_admm", num_particles=2, num_steps=steps, seed=0, time_grid="leading")
        errs.append((res.samples - mean[:, None]).abs().max().item())
    assert errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10, errs
    # float64 and 160 contractions: what is left is far below any statistical scale
    assert errs[2] < 1e-6 * mean.abs().max().item(), errs


def test_bad_input():
    problem = gaussian_problem()
    nonlinear = ps.InverseProblem(problem.prior, lambda x: x[:, :2] ** 2, problem.y_batch, 0.5)
    with pytest.raises(ValueError, match="'pnp_admm' needs a linear operator"):
        ps.sample(nonlinear, "pnp_admm", num_particles=2, num_steps=2)
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y_batch, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        ps.sample(noiseless, "pnp_admm", num_particles=2, num_steps=2)
    bad = ps.InverseProblem(NaNPrior(problem.prior, t_nan=500), problem.operator, problem.y_batch, 0.5)
    with pytest.raises(FloatingPointError, match=r"pnp_admm: step \d+ \(t=\d+\)"):
        ps.sample(bad, "pnp_admm", num_particles=2, num_steps=4)
