"""The joint samplers against the grid quadrature of p(std | y) on Gaussian-mixture problems.

Three problems of ``tests/samplers/joint/_grid.noise_problem(0, num_problems=3)`` (dim 16, ``A`` an
orthogonal matrix times 0.3, std drawn from LogNormal(log 0.8, 0.4)); 64 chains started from prior
draws, one kept draw each after 30 iterations (pmmh: 16 inner TDS particles; pgibbs: 64 particles
per conditional SMC sweep), 30 diffusion steps on the "leading" time grid. Prints, per problem,
the 1-D W1 between the std draws and the grid posterior over the exact floor (the mean W1 of 64
independent grid draws), the variance ratio of log std, and the x draws' sliced W1 over the
exact-vs-exact floor; then the same with a broken ingredient (pmmh: the evidence Z^ ** 0.5;
pgibbs: the theta-step likelihood ** 0.5). ``pgibbs-variance``: the same three problems with the
noise variance unknown under the conjugate prior InverseGamma(3, 1.5)
(``noise_problem(..., variance=True)``), pgibbs drawing it exactly given ``x_0``; the metrics on
the variance; broken: the conditional's shape ``a + m / 2`` lowered to ``a + m / 4``.

    PYTHONPATH=. python benchmarks/mixture_unknown_noise.py [pmmh] [pgibbs] [pgibbs-variance]
"""

from __future__ import annotations

import time

import torch

import posterior as ps
import posterior.samplers.joint._inner as inner
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.samplers.joint.pgibbs import ParticleGibbsTheta
from tests.samplers.joint._grid import (
    grid_posterior,
    mean_shift,
    noise_problem,
    std_draws,
    w1,
    w1_floor,
    x_draws,
)

C = 64


def run(method: str, temper: float) -> ps.Result:
    """``method`` on the problems, its evidence (pmmh) or theta likelihood (pgibbs) tempered
    (``pgibbs-variance``: the conjugate conditional's shape ``a + m / 2`` lowered by ``m / 2 *
    (1 - temper)``, the broken version of the exact Gibbs draw)."""
    exact_call, exact_lik = inner.InnerRun.__call__, ParticleGibbsTheta._log_likelihood
    exact_conj = ps.noise.Gaussian.conjugate
    try:
        if method == "pgibbs-variance":

            def conj(self, key, prior, y, mean):  # type: ignore[no-untyped-def]
                cond = exact_conj(self, key, prior, y, mean)
                m = mean[0].numel()
                return (
                    cond if cond is None else type(cond)(cond.concentration - m / 2 * (1 - temper), cond.rate)
                )

            ps.noise.Gaussian.conjugate = conj
            run = {"particles": 64, "sweeps": 31, "burn_in": 30}
            return ps.sample(VARIANCE_PROBLEM, "pgibbs", C, 30, seed=0, time_grid="leading", **run)
        if method == "pmmh":

            def call(self, *a, **k):  # type: ignore[no-untyped-def]
                log_z, x = exact_call(self, *a, **k)
                return temper * log_z, x

            inner.InnerRun.__call__ = call
            run = {"particles": 16, "iterations": 31, "burn_in": 30}
            return ps.sample(PROBLEM, "pmmh", C, 30, seed=0, time_grid="leading", **run)
        ParticleGibbsTheta._log_likelihood = staticmethod(lambda *a: temper * exact_lik(*a))
        run = {"particles": 64, "sweeps": 31, "burn_in": 30}
        return ps.sample(PROBLEM, "pgibbs", C, 30, seed=0, time_grid="leading", **run)
    finally:
        ps.noise.Gaussian.conjugate = exact_conj
        inner.InnerRun.__call__ = exact_call
        ParticleGibbsTheta._log_likelihood = staticmethod(exact_lik)


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    PROBLEM = noise_problem(0, num_problems=3)
    VARIANCE_PROBLEM = noise_problem(0, num_problems=3, variance=True)
    for method in sys.argv[1:] or ("pmmh", "pgibbs", "pgibbs-variance"):
        problem = VARIANCE_PROBLEM if method == "pgibbs-variance" else PROBLEM
        name = "variance" if method == "pgibbs-variance" else "std"
        grid, weights, at = grid_posterior(problem)
        reference = std_draws(grid, weights, C * 100, seed=1)
        floor = w1_floor(grid, weights, C, reference)
        M = reference.shape[1]
        quantiles = reference.sort(1).values[:, (torch.arange(C) * M) // C + M // (2 * C)]
        ref_x, ref_x2 = x_draws(grid, weights, at, C, 2), x_draws(grid, weights, at, C, 3)
        x_floor = sliced_wasserstein(ref_x2, ref_x)
        print(f"true std {problem.true_std.tolist()}, W1 floor of {name} {floor.tolist()}")
        for temper in (1.0, 0.5):
            start = time.perf_counter()
            r = run(method, temper)
            std = r.parameters[name].double()
            ratio = w1(std, quantiles) / floor
            var = std.log().var(1) / reference.log().var(1)
            x_ratio = sliced_wasserstein(r.samples, ref_x) / x_floor
            acc = r.acceptance if method == "pmmh" else r.stats["theta_acceptance"]
            shift = mean_shift(std, reference)
            print(
                f"{method} temper {temper}: W1/floor {[round(v, 2) for v in ratio.tolist()]}, "
                f"var ratio {[round(v, 2) for v in var.tolist()]}, "
                f"x W1/floor {[round(v, 2) for v in x_ratio.tolist()]}, "
                f"mean shift (se) {[round(v, 2) for v in shift.tolist()]}, "
                f"acceptance {float(acc[:, 20:].mean()):.2f}, {time.perf_counter() - start:.0f} s"
            )
