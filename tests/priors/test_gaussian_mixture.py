"""The Gaussian-mixture oracle: exact score, density, sampling, and ancestral sampling."""

import math

import pytest
import torch

import posterior as ps
from posterior.schedule import CLEAN


def _prior(d=2, K=3, seed=0, full=True, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(K, generator=gen, dtype=dtype) + 0.2
    means = 4 * torch.randn(K, d, generator=gen, dtype=dtype)
    if full:
        B = torch.randn(K, d, d, generator=gen, dtype=dtype)
        covs = B @ B.transpose(-1, -2) / d + 0.3 * torch.eye(d, dtype=dtype)
    else:
        covs = torch.rand(K, d, generator=gen, dtype=dtype) + 0.5
    return ps.GaussianMixturePrior(w / w.sum(), means, covs)


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_score_is_gradient_of_log_density(full, t):
    prior = _prior(d=3, full=full)
    x = 3 * torch.randn(16, 3, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior.log_prob(xr, t).sum(), xr)
    assert torch.allclose(prior.score(x, t), grad, rtol=1e-6, atol=1e-8)


def test_marginal_is_the_noised_prior():
    """log p_t from the closed form equals a Monte Carlo convolution of p_0 with the noise."""
    prior = _prior(d=2)
    t = 300
    a = prior.schedule.alpha_bar(t).item()
    x = torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=torch.float64)
    # p_t(x) = E_{x0 ~ p_0}[N(x; sqrt(a) x0, (1 - a) I)]
    x0 = prior.sample(400_000, generator=1)
    logk = -0.5 * ((x[:, None] - a**0.5 * x0[None]) ** 2).sum(-1) / (1 - a) - math.log(2 * math.pi * (1 - a))
    k = logk.exp()
    mc = k.mean(1)
    se = k.std(1) / k.shape[1] ** 0.5
    exact = prior.log_prob(x, t).exp()
    assert ((mc - exact).abs() < 5 * se).all()


def test_exact_samples_match_moments():
    prior = _prior(d=2)
    n = 200_000
    x = prior.sample(n, generator=3)
    mean, cov = prior.distribution.mean, prior.distribution.covariance
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se).all()
    assert torch.allclose(torch.cov(x.T), cov, rtol=0.03, atol=0.03)


def test_denoiser_is_tweedie():
    """x0_hat = (x + (1 - a) score) / sqrt(a), and eps/x0 are consistent with x_t."""
    prior = _prior(d=2)
    t = 400
    a = prior.schedule.alpha_bar(t).item()
    x = torch.randn(8, 2, dtype=torch.float64)
    d = prior.denoise(x, t)
    assert torch.allclose(d.x0, (x + (1 - a) * prior.score(x, t)) / a**0.5)
    assert torch.allclose(a**0.5 * d.x0 + (1 - a) ** 0.5 * d.eps, x)
    assert prior.num_evals == 2 * 8  # one denoise and one score call of 8 samples


def test_denoiser_is_posterior_mean_of_x0():
    """E[x0 | x_t] by Monte Carlo over the joint matches the Tweedie denoiser."""
    prior = _prior(d=2, K=2, seed=4)
    t, n = 600, 400_000
    a = prior.schedule.alpha_bar(t).item()
    x0 = prior.sample(n, generator=5)
    xt_query = torch.tensor([[0.3, 0.1]], dtype=torch.float64)
    w = torch.softmax(-0.5 * ((xt_query - a**0.5 * x0) ** 2).sum(-1) / (1 - a), 0)
    mc = (w[:, None] * x0).sum(0)
    se = ((w[:, None] ** 2) * (x0 - mc) ** 2).sum(0).sqrt()
    assert ((mc - prior.x0(xt_query, t)[0]).abs() < 5 * se + 1e-6).all()


@pytest.mark.slow
@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_ancestral_sampling_matches_prior(eta):
    """DDPM (eta=1) and DDIM (eta=0) with 1000 steps reproduce the mixture weights and moments."""
    problem = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)
    prior = problem.prior
    n = 20_000
    x = prior.sample(n, generator=7, num_steps=1000, eta=eta)
    dist = prior.distribution
    # Components are 8 apart with unit variance: assign each draw to its nearest mean.
    comp = torch.cdist(x, dist.means).argmin(1)
    freq = torch.bincount(comp, minlength=25).double() / n
    w = dist.weights.double()
    se = (w * (1 - w) / n).sqrt()
    assert ((freq - w).abs() < 5 * se + 1e-3).all(), (freq - w).abs().max()
    cov = dist.covariance
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - dist.mean).abs() < 5 * se_mean).all()
    # variance: var of the sample variance ~ (m4 - s^4) / n, bounded generously by 2 s^4 + ... use MC
    v = x.var(0)
    se_var = ((x - x.mean(0)) ** 2).var(0).div(n).sqrt()
    assert ((v - cov.diagonal()).abs() < 5 * se_var).all()


def test_bad_mixtures():
    m = torch.zeros(2, 2)
    eye = torch.eye(2).expand(2, 2, 2)
    with pytest.raises(ValueError, match="sum to one"):
        ps.GaussianMixturePrior(torch.tensor([0.3, 0.3]), m, eye)
    with pytest.raises(ValueError, match="non-negative"):
        ps.GaussianMixturePrior(torch.tensor([1.5, -0.5]), m, eye)
    with pytest.raises(ValueError, match="positive definite"):
        ps.GaussianMixturePrior(torch.tensor([0.5, 0.5]), m, torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match="NaN"):
        ps.GaussianMixturePrior(torch.tensor([0.5, 0.5]), torch.full((2, 2), float("nan")), eye)
    with pytest.raises(ValueError, match="disagree on K"):
        ps.GaussianMixturePrior(torch.tensor([1.0]), m, eye)
    with pytest.raises(ValueError, match="device and dtype"):
        ps.GaussianMixturePrior(torch.tensor([0.5, 0.5]), m.double(), eye)


def test_time_checks():
    prior = _prior()
    with pytest.raises(ValueError, match="t >= 0"):
        prior.denoise(torch.zeros(2, 2, dtype=torch.float64), CLEAN)
    with pytest.raises(ValueError, match="shape"):
        prior.denoise(torch.zeros(2, 3, dtype=torch.float64), 5)


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("t", [0, 20, 300])
def test_sample_x0_draws_the_denoising_posterior(full, t):
    # x0 ~ p, x_t = sqrt(a) x0 + sqrt(1 - a) eps, x0' ~ p(x0 | x_t): (x0', x_t) has the law of
    # (x0, x_t), so r' = x0' - x_t / sqrt(a) has the law of r = -sqrt((1 - a) / a) eps given with x_t:
    # mean 0, covariance (1 - a) / a I, Cov(r', x_t) = -(1 - a) / sqrt(a) I, and x0' has the prior's
    # mean and covariance. Tolerances: 5 standard errors of each moment estimate.
    prior = _prior(d=2, full=full)
    assert prior.has_exact_x0_sampler
    gen = torch.Generator().manual_seed(7)
    n = 200_000
    a = prior.schedule.alpha_bar(t).item()
    x0 = prior.sample(n, gen)
    xt = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(n, 2, generator=gen, dtype=x0.dtype)
    new = prior.sample_x0(xt, t, gen)
    assert new.shape == x0.shape and new.dtype == x0.dtype
    eye = torch.eye(2, dtype=x0.dtype)

    def close(terms, want):  # terms: [n, ...] whose mean estimates want
        return ((terms.mean(0) - want).abs() < 5 * terms.std(0) / n**0.5).all()

    r = new - xt / a**0.5
    xc = xt - xt.mean(0)
    assert close(r, torch.zeros(2, dtype=x0.dtype))
    assert close(r[:, :, None] * r[:, None, :], (1 - a) / a * eye)
    assert close(r[:, :, None] * xc[:, None, :], -(1 - a) / a**0.5 * eye)
    mean, cov = prior.distribution.mean, prior.distribution.covariance
    centred = new - mean
    assert close(new, mean)
    assert close(centred[:, :, None] * centred[:, None, :], cov)


def test_sample_x0_is_a_capability_of_closed_form_priors_only():
    from posterior.priors.base import DiffusionPrior

    assert _prior().has_closed_form_sample and _prior().has_exact_x0_sampler
    assert not DiffusionPrior.has_closed_form_sample
    with pytest.raises(NotImplementedError, match="cannot draw"):
        DiffusionPrior.sample_x0(_prior(), torch.zeros(1, 2, dtype=torch.float64), 0, torch.Generator())


def test_bad_sample_counts_and_schedule_are_named():
    prior = _prior()
    for n in (0, -1, 1.5, "3"):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            prior.sample(n)
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            prior.sample(n, num_steps=5)
    with pytest.raises(ValueError, match="num_steps must be in"):
        prior.sample(4, num_steps=0)  # not silently every training step
    with pytest.raises(ValueError, match="num_problems must be a positive integer"):
        ps.problems.simulate(prior, torch.ones(1, 2, dtype=torch.float64), 0.1, 0)
    with pytest.raises(TypeError, match="schedule must be a noise schedule"):
        ps.GaussianMixturePrior(prior.weights, prior.means, prior.covs, schedule="linear")


SCHEDULES = {"edm": ps.EDMSchedule(), "flow": ps.FlowSchedule()}


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("t", [0, 300, 700, 999])
def test_native_marginal_is_the_natively_noised_prior(kind, t):
    """``alpha_t x_0 + sigma_t eps`` from exact draws matches the native marginal's moments, and
    the VP marginal is it scaled by ``1 / s_t``."""
    base = _prior(d=2)
    prior = ps.GaussianMixturePrior(base.weights, base.means, base.covs, schedule=SCHEDULES[kind])
    sch, n = prior.schedule, 200_000
    gen = torch.Generator().manual_seed(t)
    x0 = prior.sample(n, gen)
    x = sch.alpha(t).item() * x0 + sch.sigma(t).item() * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    native = prior.native_marginal(t)
    se = (native.covariance.diagonal() / n).sqrt()
    assert ((x.mean(0) - native.mean).abs() < 5 * se).all()
    assert torch.allclose(torch.cov(x.T), native.covariance, rtol=0.03, atol=0.03 * sch.scale(t).item() ** 2)
    s = sch.scale(t).item()
    assert torch.allclose(prior.marginal(t).mean * s, native.mean)
    assert torch.allclose(prior.marginal(t).covariance * s**2, native.covariance)
    # native log density = VP log density of x / s minus d log s; native score = VP score / s
    xq = 3 * s * torch.randn(5, 2, generator=gen, dtype=torch.float64)
    assert torch.allclose(native.log_prob(xq), prior.log_prob(xq / s, t) - 2 * math.log(s))
    assert torch.allclose(native.score(xq), prior.score(xq / s, t) / s)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_denoiser_under_native_schedules_is_the_posterior_mean(kind):
    """``E[x_0 | x_t]`` by Monte Carlo over natively noised draws equals the denoiser at the VP
    variable ``x_t / s_t``, and ``x_t = alpha_t x0_hat + sigma_t eps_hat`` natively."""
    base = _prior(d=2, K=2, seed=4)
    prior = ps.GaussianMixturePrior(base.weights, base.means, base.covs, schedule=SCHEDULES[kind])
    sch, t, n = prior.schedule, 600, 400_000
    a, sig = sch.alpha(t).item(), sch.sigma(t).item()
    x0 = prior.sample(n, generator=5)
    xq = torch.tensor([[0.3, 0.1]], dtype=torch.float64) * sch.scale(t).item()
    w = torch.softmax(-0.5 * ((xq - a * x0) ** 2).sum(-1) / sig**2, 0)
    mc = (w[:, None] * x0).sum(0)
    se = ((w[:, None] ** 2) * (x0 - mc) ** 2).sum(0).sqrt()
    d = prior.denoise(sch.from_native(xq, t), t)
    assert ((mc - d.x0[0]).abs() < 5 * se + 1e-6).all()
    assert torch.allclose(a * d.x0 + sig * d.eps, xq)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SCHEDULES)
def test_ancestral_sampling_under_native_schedules_matches_prior(kind):
    """The 1000-step DDPM chain on the VP-equivalent EDM / flow schedule reproduces the mixture."""
    base = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0).prior
    prior = ps.GaussianMixturePrior(
        base.weights, base.means, base.distribution.covs, schedule=SCHEDULES[kind]
    )
    n = 20_000
    x = prior.sample(n, generator=7, num_steps=1000)
    dist = prior.distribution
    comp = torch.cdist(x, dist.means).argmin(1)
    freq = torch.bincount(comp, minlength=25).double() / n
    w = dist.weights.double()
    se = (w * (1 - w) / n).sqrt()
    assert ((freq - w).abs() < 5 * se + 1e-3).all(), (freq - w).abs().max()
    se_mean = (dist.covariance.diagonal() / n).sqrt()
    assert ((x.mean(0) - dist.mean).abs() < 5 * se_mean).all()
