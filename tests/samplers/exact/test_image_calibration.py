"""Calibration on images: TDS with its default options (32 independent runs of 4 particles for 128
draws, the covariance twist) covers MNIST truths drawn from the shipped prior at the nominal rate
(issue 17's coverage check, smaller).

Oracle: the truths are ancestral draws of the shipped network's own 25-step chain, the chain the
sampler's posterior is exact for, so calibrated draws cover them at the nominal rate in
expectation over problems. The error of the mean coverage over problems is the spread between
problems over ``sqrt(P)``: the pixels of one image are strongly correlated, so a binomial error
over pixels would be far too small. Measured: 90% coverage 0.879 (se 0.047), 50% 0.473 (se
0.094). The previous defaults, one run of all the particles (``runs=1``, ``prior_var="auto"``),
collapse onto one or two of them and fail this check (90% coverage 0.166).
"""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.diagnostics.calibration import coverage

P, DRAWS, STEPS, NOISE = 6, 128, 25, 0.1


@pytest.mark.slow
def test_tds_defaults_cover_prior_drawn_digits():
    torch.manual_seed(0)
    prior = ps.load_prior("mnist")
    gen = torch.Generator().manual_seed(0)
    truth = prior.sample(P, gen, num_steps=STEPS)  # [P, 1, 28, 28]
    mask = ps.operators.half_mask(tuple(prior.event_shape), "bottom")
    op = ps.operators.Inpainting(mask)
    clean = op.A(truth)
    y = clean + NOISE * torch.randn(clean.shape, generator=gen)
    problem = ps.InverseProblem(prior, op, y, NOISE)

    result = ps.sample(problem, "tds", DRAWS, STEPS, seed=0, progress=False)
    draws = result.samples  # [P, DRAWS, 1, 28, 28]
    assert result.options["runs"] == 32  # runs="auto": 32 runs of 4
    assert result.num_evals + result.num_vjps <= 200 * P * DRAWS  # issue 17's budget per draw

    hidden = ~mask.reshape(-1).bool()
    cov = coverage(draws.flatten(2)[..., hidden], truth.flatten(1)[..., hidden], [0.5, 0.9])
    per_problem = cov.per_problem  # [2, P]
    mean, se = per_problem.mean(1), per_problem.std(1) / P**0.5
    # targets of issue 17: 90% coverage >= 0.85, 50% coverage in [0.40, 0.62]; 2 standard errors
    assert mean[1] >= 0.85 - 2 * se[1], (per_problem[1].tolist(), float(se[1]))
    assert 0.40 - 2 * se[0] <= mean[0] <= 0.62 + 2 * se[0], (per_problem[0].tolist(), float(se[0]))
