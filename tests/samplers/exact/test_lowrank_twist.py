"""The low-rank-plus-isotropic covariance twist against the dense one, and TDS choosing it."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.problems_image import IMAGE_OPERATORS, gmm_image
from posterior.samplers.exact.covariance_twist import CovarianceTwist
from posterior.samplers.exact.lowrank_twist import LowRankCovariance, LowRankTwist, lowrank_covariance
from posterior.samplers.exact.tds import TDS

torch.set_num_threads(1)


@pytest.mark.parametrize("operator", IMAGE_OPERATORS)
def test_matches_the_dense_twist_of_the_same_covariance(operator: str) -> None:
    problem = gmm_image((2, 6, 6), operator, 0.1, num_problems=2, num_components=3, dtype=torch.float64)
    cov = lowrank_covariance(problem.prior, 40)
    assert cov.W.shape == (72, 39) and cov.delta > 0 and (cov.lam > cov.delta).all()
    eye = torch.eye(72, dtype=torch.float64)
    dense = cov.W @ torch.diag(cov.lam - cov.delta) @ cov.W.T + cov.delta * eye
    args = (problem.operator, problem.event_shape, problem.prior.schedule, 0.7)
    low, full = LowRankTwist(args[0], cov, *args[1:]), CovarianceTwist(args[0], dense, *args[1:])
    gen = torch.Generator().manual_seed(0)
    resid = 0.3 * torch.randn(5, problem.y_batch[0].numel(), generator=gen, dtype=torch.float64)
    noise_var = torch.tensor([0.01, 0.01, 0.04, 0.04, 0.01], dtype=torch.float64)
    for t in (900, 300, 10):
        torch.testing.assert_close(low.log_prob(t, resid, noise_var), full.log_prob(t, resid, noise_var))


def test_draws_give_the_prior_covariance() -> None:
    """Many draws: the low-rank part is the empirical covariance, shrunk to isotropic."""
    problem = gmm_image((1, 4, 4), "denoise", 0.1, num_components=2, dtype=torch.float64)
    cov = lowrank_covariance(problem.prior, 4000)
    rebuilt = cov.W @ torch.diag(cov.lam - cov.delta) @ cov.W.T + cov.delta * torch.eye(
        16, dtype=torch.float64
    )
    exact = problem.prior.covariance()
    shrunk = 0.9 * exact + 0.1 * exact.diagonal().mean() * torch.eye(16, dtype=torch.float64)
    assert (rebuilt - shrunk).abs().max() < 0.1 * exact.abs().max()
    assert lowrank_covariance(problem.prior, 4000) is cov  # cached per prior


def test_tds_uses_it_beyond_the_dense_size_and_on_request() -> None:
    small = gmm_image((1, 8, 8), "sr2", 0.1, num_problems=2)
    pairs = TDS().time_pairs(small, 3)
    assert isinstance(TDS().model(small, pairs).cov_twist, CovarianceTwist)
    assert isinstance(TDS(prior_var="lowrank").model(small, pairs).cov_twist, LowRankTwist)
    big = gmm_image((3, 38, 38), "sr2", 0.1, num_problems=1, num_components=2)  # 4332 > 4096 values
    assert TDS().uses_covariance(big) and isinstance(TDS().model(big, pairs).cov_twist, LowRankTwist)
    result = ps.sample(small, "tds", num_particles=8, num_steps=3, seed=0, prior_var="lowrank")
    assert result.options["prior_var"] == "lowrank" and torch.isfinite(result.log_evidence).all()
    assert isinstance(lowrank_covariance(small.prior), LowRankCovariance)
