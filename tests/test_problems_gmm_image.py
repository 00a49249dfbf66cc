"""The image-sized Gaussian-mixture problem: its prior against a dense mixture, its exact posterior
against brute-force conditioning with full covariance matrices and against importance sampling."""

import math

import pytest
import torch

import posterior as ps
from posterior.operators.linear import Matrix
from posterior.priors.gaussian_mixture import GaussianMixturePrior
from posterior.problems import SpecError, named_problem
from posterior.problems_image import IMAGE_OPERATORS, gmm_image, image_mixture_prior

torch.set_num_threads(1)


def dense_prior(prior):
    """The same mixture with full ``[K, d, d]`` covariances built from its kernels (torch.kron)."""
    p, kern = prior.params, prior.kernels
    d = math.prod(prior.event_shape)
    covs = torch.stack(
        [
            p["amplitudes"][k] ** 2 * torch.kron(kern["C"], torch.kron(kern["H"][k], kern["W"][k]))
            + p["white"] ** 2 * torch.eye(d, dtype=torch.float64)
            for k in range(prior.num_components)
        ]
    )
    return GaussianMixturePrior(p["weights"], prior.means.double().reshape(prior.num_components, -1), covs)


@pytest.mark.parametrize("operator", IMAGE_OPERATORS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 4, 6)])
def test_posterior_matches_dense_conditioning(operator, shape):
    if operator == "sr2" and shape[2] % 2:
        pytest.skip("sr2 needs even sizes")
    problem = gmm_image(
        shape, operator, noise=0.3, num_problems=3, seed=1, num_components=4, dtype=torch.float64
    )
    post = problem.exact_posterior()
    A = problem.operator.matrix(dtype=torch.float64)
    ref = ps.InverseProblem(dense_prior(problem.prior), Matrix(A), problem.y_batch.reshape(3, -1), 0.3)
    gm = ref.exact_posterior()
    torch.testing.assert_close(problem.exact_log_evidence(), ref.exact_log_evidence(), atol=1e-6, rtol=0)
    torch.testing.assert_close(post.weights, gm.weights.double(), atol=1e-8, rtol=0)
    torch.testing.assert_close(post.means.reshape(3, 4, -1), gm.means.double(), atol=1e-6, rtol=0)
    cov = gm.covariance.double()
    torch.testing.assert_close(
        post.variance.reshape(3, -1), cov.diagonal(dim1=-2, dim2=-1), atol=1e-6, rtol=0
    )
    x = post.sample(5, 0)
    assert x.shape == (3, 5, *shape)
    torch.testing.assert_close(
        post.log_prob(x).reshape(-1), gm.log_prob(x.reshape(3, 5, -1)).double().reshape(-1)
    )


def test_draws_and_quantiles_match_the_exact_moments():
    problem = gmm_image((1, 6, 6), "random-pixels", noise=0.5, num_problems=2, seed=3, num_components=3)
    post = problem.exact_posterior()
    n = 20000
    x = post.sample(n, 0).reshape(2, n, -1)
    mean, var = post.mean.reshape(2, -1), post.variance.reshape(2, -1)
    # the mean of n draws is within 4.5 standard errors (72 coordinates); the variance within 4.5 of its own
    assert ((x.mean(1) - mean).abs() / (var / n).sqrt()).max() < 4.5
    assert ((x.var(1) / var - 1).abs() / math.sqrt(2 / n)).max() < 5.5
    levels = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    q = post.quantiles(levels).reshape(3, 2, -1)
    below = (x[None] < q[:, :, None]).double().mean(2)  # share of draws below each quantile
    se = (levels * (1 - levels) / n).sqrt()[:, None, None]
    assert ((below - levels[:, None, None]).abs() / se).max() < 5


def test_evidence_against_importance_sampling():
    """``log p(y) = log E_prior[p(y | x)]``, from 400,000 prior draws (a small problem, large noise)."""
    problem = gmm_image(
        (1, 3, 3), "denoise", noise=0.5, num_problems=2, seed=0, num_components=3, dtype=torch.float64
    )
    x = problem.prior.sample(400_000, 0)
    loglik = problem.log_likelihood(x[None].expand(2, *x.shape))  # [2, n]
    m = loglik.amax(1, keepdim=True)
    w = (loglik - m).exp()
    est = m[:, 0] + w.mean(1).log()
    se = w.std(1) / w.mean(1) / math.sqrt(x.shape[0])  # delta method, on the log scale
    assert ((est - problem.exact_log_evidence()).abs() / se).max() < 4.5


def test_prior_matches_a_dense_mixture():
    prior = image_mixture_prior((2, 4, 6), num_components=3, seed=2, dtype=torch.float64)
    dense = dense_prior(prior)
    gen = torch.Generator().manual_seed(0)
    for t in (-1, 10, 500, 999):
        x = prior.sample_marginal(6, t, gen)
        torch.testing.assert_close(prior.log_prob(x, t), dense.log_prob(x.reshape(6, -1), t))
        if t >= 0:
            eps = prior.denoise(x, t).eps.reshape(6, -1)
            torch.testing.assert_close(eps, dense.denoise(x.reshape(6, -1), t).eps)
    mean, var = prior.moments()
    torch.testing.assert_close(mean.reshape(-1), dense.moments()[0])
    torch.testing.assert_close(var.reshape(-1), dense.moments()[1])
    torch.testing.assert_close(prior.covariance(), dense.covariance())
    moved = prior.to(dtype=torch.float32)
    assert moved.dtype == torch.float32 and moved.event_shape == (2, 4, 6)


def test_sample_x0_draws_the_denoising_posterior():
    """The mean of exact ``p(x_0 | x_t)`` draws is the Tweedie denoiser, within Monte Carlo error."""
    prior = image_mixture_prior((1, 4, 4), num_components=3, seed=1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x_t = prior.sample_marginal(2, 300, gen)
    n = 20000
    draws = prior.sample_x0(x_t.repeat_interleave(n, 0), 300, gen).reshape(2, n, -1)
    x0 = prior.denoise(x_t, 300).x0.reshape(2, -1)
    se = draws.std(1) / math.sqrt(n)
    assert ((draws.mean(1) - x0).abs() / se).max() < 4.5


def test_samplers_run_on_it_and_named_problems():
    problem = named_problem("gmm-image:sr2:1x8x8", num_problems=2, seed=0)
    result = ps.sample(problem, "tds", num_particles=8, num_steps=4, seed=0)
    assert result.samples.shape == (2, 8, 1, 8, 8)
    assert torch.isfinite(result.log_evidence).all()
    single = named_problem("gmm-image:inpaint:1x8x8")
    assert single.truth.shape == (1, 8, 8) and single.exact_log_evidence().dim() == 0
    assert single.exact_posterior().sample(3, 0).shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"operator": "paint"}, "operator must be one of"),
        ({"noise": 0.0}, "noise must be a positive number"),
        ({"noise": "0.1"}, "noise must be a positive number"),
        ({"shape": (28, 28)}, "shape must be"),
        ({"num_problems": 0}, "num_problems"),
        ({"shape": (1, 7, 7), "operator": "sr2"}, "divisible by 2"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gmm_image(**kwargs)


@pytest.mark.parametrize(
    "spec", ["gmm-image:", "gmm-image:paint", "gmm-image:sr2:3x32", "gmm-image:sr2:1x7x7"]
)
def test_bad_named_problems(spec):
    with pytest.raises(SpecError, match="bad problem"):
        named_problem(spec)
