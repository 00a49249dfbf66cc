"""DiffPIR: the HQS data step solves its quadratic subproblem; sampling, errors."""

import pytest
import torch

import posterior as ps
from posterior.operators import Identity, Matrix
from posterior.samplers.approximate._linear_solve import ridge_solve
from posterior.samplers.approximate.diffpir import diffpir_data_step
from tests.samplers.approximate._linear_gaussian import NaNPrior, NoSVD, gaussian_problem


def _dense_ridge(A, y, z, rho):
    d = A.shape[1]
    H = A.T @ A + rho[:, None, None] * torch.eye(d, dtype=A.dtype)
    return torch.linalg.solve(H, (y @ A + rho[:, None] * z)[..., None])[..., 0]


@pytest.mark.parametrize("shape", [(2, 5), (5, 3), (4, 4)])
@pytest.mark.parametrize("svd", [True, False])
def test_ridge_solve_matches_dense_solution(shape, svd):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = torch.randn(6, shape[0], generator=gen, dtype=torch.float64)
    z = torch.randn(6, shape[1], generator=gen, dtype=torch.float64)
    rho = torch.rand(6, generator=gen, dtype=torch.float64) * 10 + 1e-3
    op = Matrix(A) if svd else NoSVD(A)
    x = ridge_solve(op, y, z, rho, cg_iters=50, rtol=1e-12)
    assert torch.allclose(x, _dense_ridge(A, y, z, rho), rtol=1e-7, atol=1e-9)


def test_ridge_solve_identity():
    op = Identity((3,))
    y, z = torch.randn(4, 3), torch.randn(4, 3)
    rho = torch.full((4,), 0.5)
    assert torch.allclose(ridge_solve(op, y, z, rho), (y + 0.5 * z) / 1.5, atol=1e-6)


@pytest.mark.parametrize("svd", [True, False])
@pytest.mark.parametrize("t", [5, 200, 900])
def test_data_step_solves_the_hqs_subproblem(svd, t):
    """The gradient of ||y - A x||^2 + rho_t ||x - x0||^2 vanishes at DiffPIR's data-step output."""
    problem = gaussian_problem(d=5, m=3, B=2)
    if not svd:
        problem = ps.InverseProblem(
            problem.prior, NoSVD(problem.operator.matrix()), problem.y_batch, problem.sigma
        )
    lam = 7.0
    x0 = torch.randn(2, 4, 5, dtype=torch.float64)
    x = diffpir_data_step(problem, x0, t, lam, cg_iters=50).requires_grad_(True)
    abar = problem.prior.schedule.alpha_bar(t).item()
    rho = (lam * problem.sigma.pow(2) * abar / (1 - abar))[:, None]
    obj = problem.residual(x).pow(2).sum(-1) + rho * (x - x0).pow(2).sum(-1)
    (g,) = torch.autograd.grad(obj.sum(), x)
    # g = 2 (M x - b) with b = A^T y + rho x0: the CG path stops at ||M x - b|| <= 1e-6 ||b||
    b = problem.y_batch[:, None] @ problem.operator.matrix() + rho[..., None] * x0
    tol = 2 * (1e-6 if not svd else 1e-12) * b.norm(dim=-1) + 1e-12
    assert (g.norm(dim=-1) <= tol).all(), (g.norm(dim=-1) / b.norm(dim=-1)).max()
    # and not the trivial answer: the data step moves x0 towards the data
    assert not torch.allclose(x, x0)


def test_last_step_is_data_consistent_for_a_gaussian_prior():
    """With zeta = 0 and one step from T, DiffPIR returns the data step applied to the prior mean
    at t = T - 1 (the denoiser output), i.e. a closed form."""
    problem = gaussian_problem(d=4, m=2, B=2)
    res = ps.sample(problem, "diffpir", num_particles=2, num_steps=1, seed=0, zeta=0.0)
    # one step: t = T - 1 (the default grid's one time), x_0 = data step of the denoiser there
    prior = problem.prior
    top = prior.schedule.num_train_steps - 1
    assert prior.schedule.timesteps(1).tolist() == [top]
    x_T = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = prior.x0(x_T.reshape(-1, 4), top).reshape(2, 2, 4)
    assert torch.allclose(res.samples, diffpir_data_step(problem, x0, top, 7.0), atol=1e-10)


def test_bad_input():
    problem = gaussian_problem()
    nonlinear = ps.InverseProblem(problem.prior, lambda x: x[:, :2] ** 2, problem.y_batch, 0.5)
    with pytest.raises(ValueError, match="'diffpir' needs a linear operator"):
        ps.sample(nonlinear, "diffpir", num_particles=2, num_steps=2)
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y_batch, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        ps.sample(noiseless, "diffpir", num_particles=2, num_steps=2)
    bad = ps.InverseProblem(NaNPrior(problem.prior, t_nan=500), problem.operator, problem.y_batch, 0.5)
    with pytest.raises(FloatingPointError, match=r"diffpir: step \d+ \(t=\d+\)"):
        ps.sample(bad, "diffpir", num_particles=2, num_steps=4)
