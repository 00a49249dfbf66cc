"""Options and limits the SVD-twisted particle samplers (smc, mcgdiff) share."""

from __future__ import annotations

import warnings

import pytest
import torch

import posterior as ps


@pytest.mark.parametrize("method", ["smc", "mcgdiff"])
def test_noiseless_single_step_is_refused_and_two_steps_run(method: str) -> None:
    # noise_std = 0 pins the observation at the last noisy time, which with one step is x_T
    base = ps.problems.gmm_benchmark(2, 1, seed=0)
    problem = ps.InverseProblem(base.prior, base.operator, base.y, 0.0)
    with pytest.raises(ValueError, match=f"'{method}' with noise_std = 0 needs num_steps >= 2") as err:
        ps.sample(problem, method, 64, 1, seed=0)
    assert "num_steps=1" in str(err.value) and "\n" not in str(err.value)
    with warnings.catch_warnings():  # 64 particles at 2 steps may degenerate: not what is tested
        warnings.simplefilter("ignore", ps.ParticleDegeneracyWarning)
        r = ps.sample(problem, method, 64, 2, seed=0)
    assert torch.isfinite(r.samples).all() and torch.isfinite(r.log_evidence).all()
    ps.sample(base, method, 64, 1, seed=0)  # with noise one step is fine


@pytest.mark.parametrize("method", ["smc", "mcgdiff"])
def test_gibbs_rejuvenation_draws_the_conditional_of_the_newest_state(method: str) -> None:
    """The Gibbs move redraws ``x_s`` from ``p(x_s | x_t) g_s(x_s)``: in SVD coordinates, on the
    observed ones ``N((mu / v + c / w) / (1 / v + 1 / w), 1 / (1 / v + 1 / w))`` and on the others
    ``N(mu, v)``, with ``mu`` the kernel mean kept from the step. Means within 5 standard errors,
    variances within 5 standard errors (``sqrt(2 / n)`` relative) over ``n = 20000`` copies of one
    particle. (A move that ignores the twist, drawing ``N(mean, v I)``, fails both.)"""
    base = ps.problems.gmm_benchmark(6, 3, seed=2)
    model = ps.METHODS[method]().model(base, base.prior.schedule.time_pairs(10))
    gen = torch.Generator().manual_seed(0)
    n = 20000
    x, extras, _ = model.init(1, 1, gen, gen)
    (t, s) = model.pairs[3]
    for t_k, s_k in model.pairs[:4]:
        x, extras, _ = model.step(t_k, s_k, x, extras, torch.zeros(1, 1), gen)
    copies = {k: v.expand(1, n, *v.shape[2:]).contiguous() for k, v in extras.items()}
    x_new, new_extras = model.gibbs(t, s, x.expand(1, n, *x.shape[2:]).contiguous(), copies, gen)
    z = model.coords(x_new)[0]  # [n, r]
    mu = model.coords(extras["mean"])[0, 0]
    v = model.kernel_variance(t, s, x)
    c, w = model.path(s, extras)
    c, w = c[0, 0], w[0, 0]
    prec = 1 / v + 1 / w
    obs = model.observed
    mean = torch.where(obs, (mu / v + c / w) / prec, mu)
    var = torch.where(obs, 1 / prec, torch.full_like(mu, v))
    assert ((z.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    assert ((z.var(0) / var - 1).abs() < 5 * (2 / n) ** 0.5).all()
    assert torch.allclose(
        new_extras["log_g"][0], model.log_twist(model.coords(x_new), s, new_extras)[0], atol=1e-4
    )
