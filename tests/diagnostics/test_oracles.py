"""The K-step chain oracle against a closed form: with a single Gaussian prior component the
exact denoiser is affine, so every DDPM step is an affine map plus Gaussian noise and the chain's
law of ``x_0`` is Gaussian with a mean and variance computed step by step."""

from __future__ import annotations

import math

import torch

import posterior as ps
from posterior.diagnostics.oracles import chain_draws, chain_posterior
from posterior.schedule import CLEAN


def chain_law(m: float, s2: float, schedule: ps.VPSchedule, num_steps: int) -> tuple[float, float]:
    """Mean and variance of ``x_0`` under the ``num_steps``-step DDPM chain of the prior
    ``N(m, s2)`` in one dimension, started from its exact noised marginal."""
    pairs = schedule.time_pairs(num_steps)
    a0 = schedule.alpha_bar(pairs[0][0]).item()
    mean, var = a0**0.5 * m, a0 * s2 + 1 - a0
    for t, s in pairs:
        at, as_ = schedule.alpha_bar(t).item(), schedule.alpha_bar(s).item()
        # x0_hat = m + g (x_t - sqrt(at) m), g = sqrt(at) s2 / (at s2 + 1 - at)
        g = at**0.5 * s2 / (at * s2 + 1 - at)
        noise = (1 - as_) / (1 - at) * (1 - at / as_)  # DDPM kernel variance (0 at CLEAN)
        c_eps = max(1 - as_ - noise, 0.0) ** 0.5 / (1 - at) ** 0.5  # eps = (x_t - sqrt(at) x0) / sqrt(1-at)
        # x_s = sqrt(as) x0 + c_eps (x_t - sqrt(at) x0) + sqrt(noise) xi, with x0 = m + g (x_t - sqrt(at) m)
        slope = (as_**0.5 - c_eps * at**0.5) * g + c_eps
        offset = (as_**0.5 - c_eps * at**0.5) * (m - g * at**0.5 * m)
        mean, var = slope * mean + offset, slope**2 * var + (noise if s != CLEAN else 0.0)
    return mean, var


def test_chain_draws_follow_the_closed_form_chain() -> None:
    m, s2 = 3.0, 0.25
    prior = ps.GaussianMixturePrior(torch.ones(1), torch.tensor([[m]]), torch.tensor([[s2]]))
    for K in (1, 2, 5):
        x = chain_draws(prior, K, 200_000, torch.Generator().manual_seed(K)).double()
        mean, var = chain_law(m, s2, prior.schedule, K)
        se_mean, se_var = (var / x.numel()) ** 0.5, var * (2 / x.numel()) ** 0.5
        assert abs(x.mean().item() - mean) < 4 * se_mean, (K, x.mean().item(), mean)
        assert abs(x.var().item() - var) < 4 * se_var, (K, x.var().item(), var)


def test_chain_posterior_evidence_matches_the_closed_form() -> None:
    """``log p(y)`` of the 2-step chain (its x_0 is far narrower than the prior: the chain, not the
    continuous prior, is what the oracle is exact for) within 4 importance-sampling standard errors."""
    m, s2, noise = 3.0, 0.25, 0.3
    prior = ps.GaussianMixturePrior(torch.ones(1), torch.tensor([[m]]), torch.tensor([[s2]]))
    y = torch.tensor([[3.4], [2.2]])
    problem = ps.InverseProblem(prior, torch.eye(1), y, noise)
    ref = chain_posterior(problem, 2, num_draws=400_000, seed=0)
    mean, var = chain_law(m, s2, prior.schedule, 2)
    exact = -0.5 * (y[:, 0] - mean) ** 2 / (var + noise**2) - 0.5 * math.log(2 * math.pi * (var + noise**2))
    se = 1 / ref.ess.sqrt()  # relative error of the mean weight, roughly
    assert ((ref.log_evidence - exact).abs() < 4 * se).all(), (ref.log_evidence, exact, se)
    continuous = problem.exact_log_evidence()
    assert ((continuous - exact).abs() > 20 * se).any()  # the 2-step chain is not the prior
    # posterior of a Gaussian x_0 ~ N(mean, var) given y = x_0 + noise: reference draws agree
    post_var = 1 / (1 / var + 1 / noise**2)
    post_mean = post_var * (mean / var + y[:, 0] / noise**2)
    draws = ref.samples[..., 0].double()
    assert ((draws.mean(1) - post_mean).abs() < 4 * (post_var / draws.shape[1]) ** 0.5 + 4 * se).all()
