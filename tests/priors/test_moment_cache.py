"""The disk cache of a network prior's moment estimate: written once, read back bit for bit by a
new prior with the same weights, ignored for other weights, off on request; the shipped file."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.priors import moment_cache
from tests.priors.test_diffusers import make_scheduler, tiny_unet


def _prior(seed: int = 0) -> ps.DiffusersPrior:
    prior = ps.DiffusersPrior(tiny_unet(seed=seed), make_scheduler("ddpm", "epsilon"))
    prior.moment_draws, prior.moment_steps = 16, 3
    return prior


def test_estimate_is_stored_and_read_back_for_the_same_weights_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POSTERIOR_CACHE_DIR", str(tmp_path))
    first = _prior()
    cov = first.covariance()
    (mean, var), fresh_cov = _prior().estimate_moments()  # what the estimator computes
    assert torch.equal(cov, fresh_cov) and torch.equal(first.moments()[0], mean)
    files = list(tmp_path.glob("moments-*.safetensors"))
    assert len(files) == 1

    def no_estimate(self):
        raise AssertionError("the stored estimate should have been used")

    again = _prior()
    monkeypatch.setattr(ps.DiffusersPrior, "estimate_moments", no_estimate)
    assert torch.equal(again.covariance(), cov) and torch.equal(again.moments()[1], var)
    other = _prior(seed=1)  # other weights: another fingerprint, so the file is not used
    assert moment_cache.fingerprint(other) != moment_cache.fingerprint(again)
    with pytest.raises(AssertionError, match="should have been used"):
        other.covariance()
    changed = _prior()
    changed.moment_draws = 8  # the estimator's settings are part of the fingerprint
    with pytest.raises(AssertionError, match="should have been used"):
        changed.moments()


def test_cache_off_and_priors_without_a_network(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POSTERIOR_CACHE_DIR", "off")
    assert moment_cache.cache_dir() is None
    prior = _prior()
    prior.covariance()
    assert prior.covariance().shape == (64, 64)
    mixture = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0).prior
    assert moment_cache.fingerprint(mixture) is None


def test_a_corrupt_file_is_recomputed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POSTERIOR_CACHE_DIR", str(tmp_path))
    prior = _prior()
    path = moment_cache.cache_path(moment_cache.fingerprint(prior))
    path.write_bytes(b"not a safetensors file")
    cov = prior.covariance()
    assert torch.isfinite(cov).all()
    assert moment_cache.load_moments(path, moment_cache.fingerprint(prior), prior) is not None  # rewritten


def test_shipped_mnist_estimate_is_found_and_matches_its_fingerprint() -> None:
    prior = ps.load_prior("mnist")
    assert prior.moment_file is not None and prior.moment_file.is_file()
    stored = moment_cache.load_moments(prior.moment_file, moment_cache.fingerprint(prior), prior)
    assert stored is not None  # a stale file (weights retrained) fails here: rerun scripts/prior_moments.py
    mean, var, cov = stored
    assert cov.shape == (784, 784) and torch.allclose(cov.diagonal(), var.reshape(-1), rtol=1e-4)
    assert -1 <= float(mean.min()) and float(mean.max()) <= 1
