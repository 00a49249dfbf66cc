"""The image-mixture oracle's Kronecker path (no ``m x m`` matrix) against its dense path, and the
operators' Kronecker factors against their dense matrices."""

import math

import pytest
import torch

import posterior.problems_image_kron as kron_mod
from posterior.operators.image import Inpainting, half_mask, random_mask
from posterior.operators.linear import Identity
from posterior.operators.separable import Blur, SuperResolution, gaussian_kernel
from posterior.problems import SpecError, named_problem
from posterior.problems_image import gmm_image
from posterior.problems_image_kron import DenseGram, KroneckerGram

torch.set_num_threads(1)

SHAPE = (2, 6, 8)


@pytest.mark.parametrize(
    "op",
    [
        Identity(),
        SuperResolution(2),
        Inpainting(half_mask(SHAPE, "bottom")),
        Inpainting(half_mask(SHAPE, "left")),
        Blur(gaussian_kernel(1.5)),
    ],
)
def test_kronecker_factors_are_the_operator(op):
    op = op.bind(SHAPE)
    A_C, A_H, A_W = op.kronecker_factors()
    torch.testing.assert_close(torch.kron(A_C, torch.kron(A_H, A_W)), op.matrix(dtype=torch.float64))


def test_operators_without_kronecker_factors():
    assert Inpainting(random_mask(SHAPE[1:], 0.5, seed=0)).bind(SHAPE).kronecker_factors() is None
    assert SuperResolution(2).kronecker_factors() is None  # not bound to an image shape
    assert (
        Blur(torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
        .bind(SHAPE)
        .kronecker_factors()
        is None
    )  # a kernel of rank two


def _pair(operator, shape, monkeypatch, noise=0.3, problems=3):
    """The same problems' posterior by the Kronecker path and by the dense path."""
    kw = dict(noise=noise, num_problems=problems, seed=1, num_components=4, dtype=torch.float64)
    fast = gmm_image(shape, operator, **kw).exact_posterior()
    with monkeypatch.context() as m:
        m.setattr(kron_mod, "kronecker_scales", lambda op: None)
        dense = gmm_image(shape, operator, **kw).exact_posterior()
        dense.variance  # noqa: B018 (build the dense factors while patched)
    assert isinstance(fast._gram(noise**2), KroneckerGram)
    assert isinstance(dense._gram(noise**2), DenseGram)
    return fast, dense


@pytest.mark.parametrize("operator", ["inpaint", "sr2", "denoise"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 8)])
def test_kronecker_path_matches_the_dense_path(operator, shape, monkeypatch):
    fast, dense = _pair(operator, shape, monkeypatch)
    torch.testing.assert_close(fast.log_evidence, dense.log_evidence, atol=1e-8, rtol=0)
    torch.testing.assert_close(fast.weights, dense.weights, atol=1e-10, rtol=0)
    torch.testing.assert_close(fast.means, dense.means, atol=1e-9, rtol=0)
    torch.testing.assert_close(fast.component_variances(), dense.component_variances(), atol=1e-9, rtol=0)
    x = dense.sample(4, 0)
    torch.testing.assert_close(fast.log_prob(x), dense.log_prob(x), atol=1e-8, rtol=0)
    torch.testing.assert_close(fast.quantiles([0.05, 0.5]), dense.quantiles([0.05, 0.5]))


@pytest.mark.parametrize("operator", ["inpaint", "sr2"])
def test_kronecker_draws_match_the_exact_moments(operator, monkeypatch):
    """Matheron draws through the Kronecker solve: mean within 4.5 standard errors, variance
    within 5.5 of its own, and pixel covariances within 5 of theirs, against the dense path."""
    fast, dense = _pair(operator, (2, 6, 6), monkeypatch, noise=0.5, problems=2)
    n = 20000
    x = fast.sample(n, 0).reshape(2, n, -1)
    mean, var = dense.mean.reshape(2, -1), dense.variance.reshape(2, -1)
    assert ((x.mean(1) - mean).abs() / (var / n).sqrt()).max() < 4.5
    assert ((x.var(1) / var - 1).abs() / math.sqrt(2 / n)).max() < 5.5
    # the covariance of two neighbouring hidden-or-not pixels, from the dense path's own draws
    ref = dense.sample(n, 1).reshape(2, n, -1)
    for a, b in ((0, 1), (10, 16), (5, 60)):
        c1 = ((x[..., a] - x[..., a].mean(1, True)) * (x[..., b] - x[..., b].mean(1, True))).mean(1)
        c2 = ((ref[..., a] - ref[..., a].mean(1, True)) * (ref[..., b] - ref[..., b].mean(1, True))).mean(1)
        se = (var[:, a] * var[:, b] * 2 / n).sqrt()  # both estimates' error, to leading order
        assert ((c1 - c2).abs() / se).max() < 5


def test_64x64_named_problem_and_refusals():
    problem = named_problem("gmm-image:sr2:3x64x64", num_problems=2, seed=0)
    post = problem.exact_posterior()
    assert isinstance(post._gram(0.01), KroneckerGram)
    assert torch.isfinite(problem.exact_log_evidence()).all()
    assert post.sample(3, 0).shape == (2, 3, 3, 64, 64)
    for op in ("blur", "random-pixels"):
        with pytest.raises(SpecError, match="no affordable exact posterior") as err:
            named_problem(f"gmm-image:{op}:3x64x64")
        assert "\n" not in str(err.value)
