"""mcgdiff and smc never sit far from the exact posterior silently at image size (issue 29).

On ``gmm_image((1, 16, 16), OP)`` (4 problems, noise 0.1), 128 particles, 25 steps and default
options, each run's sliced W1 to 128 exact draws (100 directions; the benchmark's measure,
``benchmarks/image_oracle.py``) over the floor between two exact sets of 128 is either at most 2,
or the run raised a :class:`~posterior.ParticleDegeneracyWarning`. Measured (2026-12-07, one
thread): smc is 6-19x the floor and always warns; mcgdiff is 5-8x and warns on every operator:
on denoise and random-pixels through its ESS, on inpaint, sr2 and blur (5.0-6.0x, per-step ESS
3-16 of 128) only through the path degeneracy warning (its draws descend from 2-3 of the 128
particles alive half way through the chain). Checked: with the warnings silenced the tests fail
(smc on inpaint and sr2, mcgdiff on denoise: 14.5x, 7.6x, 7.7x; without the path degeneracy
warning, mcgdiff on inpaint, sr2 and blur).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.problems_image import IMAGE_OPERATORS, gmm_image

torch.set_num_threads(1)

SHAPE, PROBLEMS, DRAWS, STEPS = (1, 16, 16), 4, 128, 25


@pytest.mark.slow
@pytest.mark.parametrize("operator", IMAGE_OPERATORS)
@pytest.mark.parametrize("method", ["mcgdiff", "smc"])
def test_far_off_is_never_silent(method: str, operator: str) -> None:
    problem = gmm_image(SHAPE, operator, 0.1, PROBLEMS, seed=0)
    exact = problem.exact_posterior().sample(2 * DRAWS, 1).flatten(2)
    e1, e2 = exact[:, :DRAWS], exact[:, DRAWS:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = ps.sample(problem, method, DRAWS, STEPS, seed=0, progress=False)
    warned = any(issubclass(w.category, ps.ParticleDegeneracyWarning) for w in caught)
    sw = sliced_wasserstein(result.samples.flatten(2).double(), e1, seed=0).mean()
    ratio = float(sw / sliced_wasserstein(e2, e1, seed=0).mean())
    assert ratio <= 2 or warned, f"{method} on {operator}: {ratio:.1f}x the floor and no warning"
