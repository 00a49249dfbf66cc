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
