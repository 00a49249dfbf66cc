"""CSGM: the checkpointed adjoint gradient agrees with finite differences; optimisation; errors."""

import pytest
import torch

import posterior as ps
from posterior.samplers.approximate.csgm import csgm_generate, csgm_loss_and_grad
from tests.samplers.approximate._linear_gaussian import NaNPrior, gaussian_problem


def _mixture_problem(operator, B=2, sigma=0.4):
    """A 3-component float64 mixture in d = 3 (a nonlinear denoiser), ``B`` problems."""
    gen = torch.Generator().manual_seed(3)
    dt = torch.float64
    means = 2 * torch.randn(3, 3, generator=gen, dtype=dt)
    covs = torch.rand(3, 3, generator=gen, dtype=dt) + 0.3
    prior = ps.GaussianMixturePrior(torch.tensor([0.5, 0.3, 0.2], dtype=dt), means, covs)
    y = torch.randn(B, 2, generator=gen, dtype=dt)
    return ps.InverseProblem(prior, operator, y, sigma)


@pytest.mark.parametrize("nonlinear", [False, True])
@pytest.mark.parametrize("latent_weight", [0.0, 0.7])
def test_gradient_matches_finite_differences(nonlinear, latent_weight):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    op = (lambda x: torch.tanh(x @ A.T.to(x.dtype))) if nonlinear else A
    problem = _mixture_problem(op)
    pairs = problem.prior.schedule.time_pairs(3, spacing="trailing")
    z = torch.randn(2, 2, 3, generator=gen, dtype=torch.float64)
    loss, grad, _ = csgm_loss_and_grad(problem, z, pairs, latent_weight)
    h = 1e-5
    for _ in range(3):  # central differences along random directions, per particle
        v = torch.randn(z.shape, generator=gen, dtype=torch.float64)
        lp, _, _ = csgm_loss_and_grad(problem, z + h * v, pairs, latent_weight)
        lm, _, _ = csgm_loss_and_grad(problem, z - h * v, pairs, latent_weight)
        fd = (lp - lm) / (2 * h)
        exact = (grad * v).sum(-1)
        # central differences: O(h^2) truncation, O(eps / h) rounding on a loss of size `loss`
        tol = 1e-6 * (1 + loss.abs())
        assert ((fd - exact).abs() <= tol).all(), (fd - exact).abs().max()


def test_generator_is_the_deterministic_ddim_sampler():
    """G(z) equals the prior's own DDIM(eta = 0) sampler on the same grid."""
    problem = _mixture_problem(torch.eye(2, 3, dtype=torch.float64))
    pairs = problem.prior.schedule.time_pairs(4, spacing="trailing")
    assert pairs[0][0] == problem.prior.schedule.num_train_steps - 1
    z = torch.randn(2, 3, 3, dtype=torch.float64)
    x, _ = csgm_generate(problem, z, pairs)
    ref = z.reshape(-1, 3)
    for t, s in pairs:
        ref, _, _ = problem.prior.reverse_kernel(ref, t, s, eta=0.0)
    assert torch.allclose(x.reshape(-1, 3), ref, atol=1e-10)


@pytest.mark.slow
def test_reaches_the_latent_optimum_for_a_gaussian_prior():
    """With a Gaussian prior the DDIM map is affine, G(z) = M z + c, so the loss is quadratic in z
    with minimiser z* = (M^T A^T A M / s^2 + w I)^{-1} M^T A^T (y - A c) / s^2; Adam gets there."""
    problem = gaussian_problem(d=3, m=2, B=2)
    w = 1.0
    pairs = problem.prior.schedule.time_pairs(3, spacing="trailing")
    eye = torch.eye(3, dtype=torch.float64)
    c, _ = csgm_generate(problem, torch.zeros(1, 1, 3, dtype=torch.float64), pairs)
    cols, _ = csgm_generate(problem, eye[None], pairs)
    M = (cols[0] - c[0]).T  # [d, d]: column j is G(e_j) - c
    A, y, s2 = problem.operator.matrix(), problem.y_batch, problem.sigma.pow(2)
    AM = A @ M
    H = AM.T @ AM / s2[:, None, None] + w * eye
    z_star = torch.linalg.solve(H, ((y - c[0, 0] @ A.T) @ AM / s2[:, None])[..., None])[..., 0]
    lr = 0.1
    res = ps.sample(problem, "csgm", num_particles=2, num_steps=150, seed=0, lr=lr, latent_weight=w)
    x_star = z_star @ M.T + c[0, 0]
    # Adam with a constant step ends within about lr of the optimum in z; mapped through M
    tol = lr * torch.linalg.matrix_norm(M, ord=2).item()
    assert (res.samples - x_star[:, None]).abs().max().item() < tol
    assert res.stats["loss"].shape == (2, 150)
    assert (res.stats["loss"][:, -1] < res.stats["loss"][:, 0]).all()


def test_bad_input():
    problem = gaussian_problem()
    noiseless = ps.InverseProblem(problem.prior, problem.operator, problem.y_batch, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        ps.sample(noiseless, "csgm", num_particles=2, num_steps=2)
    assert ps.sample(noiseless, "csgm", num_particles=2, num_steps=2, latent_weight=0.0).samples.shape == (
        2,
        2,
        4,
    )
    bad = ps.InverseProblem(NaNPrior(problem.prior, t_nan=500), problem.operator, problem.y_batch, 0.5)
    with pytest.raises(FloatingPointError, match=r"csgm: iteration 0"):
        ps.sample(bad, "csgm", num_particles=2, num_steps=3)
