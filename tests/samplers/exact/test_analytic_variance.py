"""Analytic-DPM's optimal reverse variance (``kernel_var="analytic"``): the formula against the
exact reverse variance of a Gaussian prior, and the samplers' exactness for the chain it makes."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.diagnostics.oracles import chain_posterior
from posterior.samplers.exact.analytic_variance import analytic_variance, ddim_variance, kernel_variances
from posterior.schedule import CLEAN

from .test_chain_exactness import few_step_problems


def gaussian_reverse_variance(abar_t: float, abar_s: float, lam2: float, V: float) -> float:
    """``Var[x_s | x_t]`` for ``x_0 ~ N(0, V)`` (1-D), ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t)
    e`` and ``x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s - lam2) e + sqrt(lam2) z`` (the DDIM bridge),
    by Gaussian conditioning of the joint of ``(x_s, x_t)`` written in ``(x_0, e, z)``."""
    a = torch.tensor([abar_s**0.5, (1 - abar_s - lam2) ** 0.5, lam2**0.5], dtype=torch.float64)
    b = torch.tensor([abar_t**0.5, (1 - abar_t) ** 0.5, 0.0], dtype=torch.float64)
    cov = torch.diag(torch.tensor([V, 1.0, 1.0], dtype=torch.float64))
    return float(a @ cov @ a - (a @ cov @ b) ** 2 / (b @ cov @ b))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("abar_t", "abar_s", "V"), [(0.1, 0.3, 4.0), (0.5, 0.9, 0.2), (1e-3, 0.05, 65.0)])
def test_analytic_variance_is_the_exact_reverse_variance_of_a_gaussian_prior(
    eta: float, abar_t: float, abar_s: float, V: float
) -> None:
    """With the exact denoiser of a Gaussian prior (``v_t = V (1 - abar_t) / (abar_t V + 1 -
    abar_t)``) the optimal isotropic variance is the reverse law's own variance, for every eta."""
    mse = V * (1 - abar_t) / (abar_t * V + 1 - abar_t)
    exact = gaussian_reverse_variance(abar_t, abar_s, ddim_variance(abar_t, abar_s, eta), V)
    assert analytic_variance(abar_t, abar_s, eta, mse) == pytest.approx(exact, rel=1e-10)


def test_kernel_variances_are_ddims_below_analytic_and_zero_at_the_last_step() -> None:
    """``"ddim"`` gives DDIM(eta)'s variance, ``"analytic"`` adds ``c^2 v_t >= 0`` to it, and the
    last step (to ``CLEAN``) stays deterministic."""
    prior = few_step_problems(1).prior
    pairs = prior.schedule.time_pairs(5, "auto")
    ddim = kernel_variances(prior, pairs, 1.0, "ddim")
    ana = kernel_variances(prior, pairs, 1.0, "analytic")
    assert ddim[pairs[-1]] == ana[pairs[-1]] == 0.0 and pairs[-1][1] == CLEAN
    assert all(ana[p] > ddim[p] > 0 for p in pairs[:-1])


@pytest.mark.parametrize("method", ["smc", "tds", "mcgdiff"])
def test_samplers_are_exact_for_the_analytic_chain(method: str) -> None:
    """At K = 2 the analytic chain's evidence differs from the DDPM chain's by 16-280 nats on
    these 8 problems (measured); ``Z_hat / Z_chain`` against the analytic chain's oracle averages 1
    within 4 standard errors plus the oracle's own error (measured: 0.996-1.010)."""
    problem = few_step_problems()
    ref = chain_posterior(problem, 2, num_draws=400_000, seed=2, kernel_var="analytic")
    res = ps.sample(problem, method, num_particles=2048, num_steps=2, seed=0, kernel_var="analytic")
    ratio = (res.log_evidence.double() - ref.log_evidence.double()).exp()
    se = ratio.std().item() / ratio.numel() ** 0.5
    oracle = 4 / ref.ess.min().sqrt().item()
    assert abs(ratio.mean().item() - 1) < 4 * se + oracle, (ratio, se, oracle)


def test_kernel_var_arguments() -> None:
    """``eta = 0`` only with the analytic variance; an unknown ``kernel_var`` is refused."""
    problem = few_step_problems(1)
    with pytest.raises(ValueError, match="eta"):
        ps.sample(problem, "mcgdiff", num_particles=16, num_steps=3, eta=0.0)
    with pytest.raises(ValueError, match="kernel_var"):
        ps.sample(problem, "mcgdiff", num_particles=16, num_steps=3, kernel_var="optimal")
    res = ps.sample(problem, "mcgdiff", num_particles=16, num_steps=3, eta=0.0, kernel_var="analytic")
    assert torch.isfinite(res.samples).all()
