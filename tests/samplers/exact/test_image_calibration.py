"""Calibration on images: TDS in 32 independent runs of 4 particles for 128 draws (its default
``runs="auto"`` and covariance twist) on MNIST truths drawn from the shipped prior.

Oracle: the truths are ancestral draws of the shipped network's own 25-step chain, the chain the
sampler's posterior is exact for, so calibrated draws cover them at the nominal rate in
expectation over problems. The error of the mean coverage over problems is the spread between
problems over ``sqrt(P)``: the pixels of one image are strongly correlated, so a binomial error
over pixels would be far too small.

The runs' log-evidences spread by tens of nats on these problems, so the default merge, which
weighs each run by its evidence (exact as the runs grow), rests on about one run of 4 particles
here: measured, 1.0-1.1 effective runs, 90% coverage 0.22 (se 0.06; it fails the check below), and a
``ParticleDegeneracyWarning`` that says so. The runs merged equally (``merge="equal"``, an
approximation at a fixed run size, labelled as such in ``result.options``) are the configuration
that covers near the nominal rate: measured 90% coverage 0.855 (se 0.10), 50%
0.41 (se 0.12). One run of all the particles (``runs=1``, ``prior_var="auto"``) collapses onto
one or two of them and fails this check (90% coverage 0.166).
"""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.diagnostics.calibration import coverage

P, DRAWS, STEPS, NOISE = 6, 128, 25, 0.1


@pytest.mark.slow
def test_tds_runs_merged_equally_cover_prior_drawn_digits_and_the_evidence_merge_says_it_collapses():
    torch.manual_seed(0)
    prior = ps.load_prior("mnist")
    gen = torch.Generator().manual_seed(0)
    truth = prior.sample(P, gen, num_steps=STEPS)  # [P, 1, 28, 28]
    mask = ps.operators.half_mask(tuple(prior.event_shape), "bottom")
    op = ps.operators.Inpainting(mask)
    clean = op.A(truth)
    y = clean + NOISE * torch.randn(clean.shape, generator=gen)
    problem = ps.InverseProblem(prior, op, y, NOISE)

    with pytest.warns(ps.particles.ParticleDegeneracyWarning, match="effective runs of 32"):
        result = ps.sample(problem, "tds", DRAWS, STEPS, seed=0, progress=False, merge="equal")
    draws = result.samples  # [P, DRAWS, 1, 28, 28]
    assert result.options["runs"] == 32 and result.options["merge"] == "equal"  # labelled
    assert result.num_evals + result.num_vjps <= 200 * P * DRAWS  # the budget: 200 network calls per draw
    # what the default evidence merge would rest on: about one run on every problem
    assert (result.stats["effective_runs"] < 2).all(), result.stats["effective_runs"]

    hidden = ~mask.reshape(-1).bool()
    cov = coverage(draws.flatten(2)[..., hidden], truth.flatten(1)[..., hidden], [0.5, 0.9])
    per_problem = cov.per_problem  # [2, P]
    mean, se = per_problem.mean(1), per_problem.std(1) / P**0.5
    # the targets: 90% coverage >= 0.85, 50% coverage in [0.40, 0.62]; 2 standard errors
    assert mean[1] >= 0.85 - 2 * se[1], (per_problem[1].tolist(), float(se[1]))
    assert 0.40 - 2 * se[0] <= mean[0] <= 0.62 + 2 * se[0], (per_problem[0].tolist(), float(se[0]))
