"""Every method with a non-Gaussian noise model: it runs on ``log p(y | x)`` or refuses clearly."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch.nn.functional import softplus

import posterior as ps
from posterior.operators import Nonlinear

# methods built on linear-Gaussian closed forms (they read the Gaussian noise level)
GAUSSIAN_ONLY = ["smc", "mcgdiff", "ddrm", "pigdm", "mmps", "diffpir", "pnp_admm", "score_ald", "sdedit"]
# methods whose updates only need log p(y | x) and its gradient
ANY_NOISE = ["tds", "pgas", "pmmh", "pgibbs", "mala", "dps", "gibbs", "reddiff", "csgm"]
OPTIONS = {"reddiff": {"init": "noise"}, "gibbs": {"prior_steps": 5, "z_steps": 2}}


def test_every_method_is_classified() -> None:
    assert sorted(GAUSSIAN_ONLY + ANY_NOISE) == sorted(ps.METHODS)


def laplace_problem(B: int = 2) -> ps.InverseProblem:
    base = ps.problems.gmm_benchmark(4, 2, 0)
    return ps.problems.simulate(base.prior, base.operator, ps.noise.Laplace(0.4), B, seed=0)


@pytest.mark.parametrize("method", GAUSSIAN_ONLY)
def test_linear_gaussian_methods_refuse_other_noise_in_one_line(method: str) -> None:
    with pytest.raises(ValueError, match=rf"^'{method}' needs Gaussian noise.*Laplace\(scale=0.4\)") as err:
        ps.sample(laplace_problem(), method, num_particles=4, num_steps=4)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ANY_NOISE)
@pytest.mark.parametrize("noise", ["poisson", "studentt", "laplace"])
def test_likelihood_methods_run_with_every_noise_model(method: str, noise: str) -> None:
    """Finite samples of the right shape, on a nonlinear operator with Poisson counts and on a
    matrix with Student-t and Laplace noise."""
    base = ps.problems.gmm_benchmark(4, 2, 0)
    if noise == "poisson":
        problem = ps.problems.simulate(
            base.prior, Nonlinear(lambda x: softplus(x[:, :2] / 4)), ps.noise.Poisson(2.0), 2, seed=0
        )
    else:
        model = ps.noise.StudentT(3.0, 0.4) if noise == "studentt" else ps.noise.Laplace(0.4)
        problem = ps.problems.simulate(base.prior, base.operator, model, 2, seed=0)
    res = ps.sample(problem, method, num_particles=8, num_steps=6, seed=0, **OPTIONS.get(method, {}))
    assert res.samples.shape == (2, 8, 4) and torch.isfinite(res.samples).all()


def test_reddiff_pinv_start_needs_gaussian_noise() -> None:
    with pytest.raises(ValueError, match=r"'reddiff' with init='pinv' needs Gaussian noise.*init='noise'"):
        ps.sample(laplace_problem(), "reddiff", num_particles=4, num_steps=4)


def test_dps_refuses_a_model_without_a_misfit() -> None:
    base = ps.problems.gmm_benchmark(4, 2, 0)
    noise = ps.noise.from_pyro(lambda m: dist.Poisson(softplus(m)))
    problem = ps.problems.simulate(base.prior, base.operator, noise, 1, seed=0)
    with pytest.raises(ValueError, match=r"^'dps' guides by the noise model's misfit.*from_pyro"):
        ps.sample(problem, "dps", num_particles=4, num_steps=4)


def test_gaussian_model_gives_the_same_draws_as_the_float() -> None:
    """``Gaussian(s)`` is ``s``: same seed, same samples, for a sampler using its closed forms
    (smc) and for the likelihood-based ones (tds, dps)."""
    base = ps.problems.gmm_benchmark(4, 2, 0)
    model = ps.InverseProblem(base.prior, base.operator, base.y, ps.noise.Gaussian(base.noise_std))
    for method in ("smc", "tds", "dps"):
        a = ps.sample(base, method, num_particles=16, num_steps=8, seed=1)
        b = ps.sample(model, method, num_particles=16, num_steps=8, seed=1)
        torch.testing.assert_close(a.samples, b.samples, msg=method)


def test_dps_guides_by_the_poisson_misfit_on_the_intensity_scale() -> None:
    """Counts at gain 50 of a positive intensity: DPS's draws predict the counts (within 3 Poisson
    standard deviations in median), which a residual taken on the count scale would not."""
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    op = Nonlinear(lambda x: softplus(x / 4))
    problem = ps.problems.simulate(prior, op, ps.noise.Poisson(50.0), 2, seed=0)
    res = ps.sample(problem, "dps", num_particles=64, num_steps=50, seed=0)
    predicted = 50 * problem.forward(res.samples)  # [B, N, 2]
    z = (predicted - problem.y_batch[:, None]).abs() / (problem.y_batch[:, None] + 1).sqrt()
    assert z.median() < 3, z.median()
