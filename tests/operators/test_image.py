"""Image operators: exact adjoints, SVDs that reconstruct A, pseudo-inverses, shape errors."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.operators import (
    Blur,
    Identity,
    Inpainting,
    SuperResolution,
    box_mask,
    gaussian_kernel,
    half_mask,
    random_mask,
)
from posterior.priors.base import DiffusionPrior
from posterior.schedule import VPSchedule

F64 = torch.float64


def _operators() -> list[tuple[str, object, tuple[int, int, int], bool]]:
    """(id, operator, image shape, well conditioned enough to compare pseudo-inverses)."""
    nonsep = torch.tensor([[0.1, 0.3, 0.0], [0.5, 1.0, 0.2], [0.0, 0.4, 0.3]], dtype=F64)
    return [
        ("inpaint-half", Inpainting(half_mask((1, 8, 6))), (1, 8, 6), True),
        ("inpaint-box-2d", Inpainting(box_mask((8, 6), 2, 1, 3, 4)), (2, 8, 6), True),
        ("inpaint-random", Inpainting(random_mask((2, 8, 6), 0.3, seed=1).double()), (2, 8, 6), True),
        ("blur-gauss", Blur(gaussian_kernel(1.0, dtype=F64)), (2, 8, 6), False),
        ("blur-gauss-mild", Blur(gaussian_kernel(0.5, dtype=F64)), (1, 7, 9), True),
        (
            "blur-rect",
            Blur(torch.outer(torch.tensor([1.0, 2.0, 0.5], dtype=F64), torch.arange(1.0, 6.0, dtype=F64))),
            (1, 6, 7),
            False,
        ),
        ("blur-dense", Blur(nonsep), (2, 6, 5), True),
        ("sr2", SuperResolution(2), (2, 8, 6), True),
        ("sr4", SuperResolution(4), (1, 8, 12), True),
        ("identity", Identity(), (2, 3, 4), True),
    ]


OPS = _operators()
IDS = [o[0] for o in OPS]


@pytest.mark.parametrize(("name", "op", "shape", "cond"), OPS, ids=IDS)
def test_adjoint(name, op, shape, cond) -> None:
    op = op.bind(shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, *shape, generator=gen, dtype=F64)
    y = torch.randn(4, *op.out_shape, generator=gen, dtype=F64)
    lhs = (op.A(x) * y).flatten(1).sum(1)
    rhs = (x * op.A_adjoint(y)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "op", "shape", "cond"), OPS, ids=IDS)
def test_svd_reconstructs_A(name, op, shape, cond) -> None:
    op = op.bind(shape)
    M = op.matrix(dtype=F64)  # [m, d]
    m, d = M.shape
    r = min(m, d)
    s = op.singular_values.to(F64)
    assert s.shape == (r,)
    assert (s >= 0).all()
    # same singular values as the dense matrix, sorted in decreasing order
    torch.testing.assert_close(s, torch.linalg.svdvals(M), rtol=1e-9, atol=1e-9)
    # U and V as dense matrices, orthogonal
    V = op.V(torch.eye(d, dtype=F64)).reshape(d, d).T  # columns V e_k
    U = op.U(torch.eye(m, dtype=F64)).reshape(m, m).T
    torch.testing.assert_close(V.T @ V, torch.eye(d, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(U.T @ U, torch.eye(m, dtype=F64), rtol=0, atol=1e-10)
    # V_adjoint / U_adjoint are their transposes
    torch.testing.assert_close(
        op.V_adjoint(torch.eye(d, dtype=F64).reshape(d, *shape)), V, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        op.U_adjoint(torch.eye(m, dtype=F64).reshape(m, *op.out_shape)), U, rtol=0, atol=1e-10
    )
    # A = U[:, :r] diag(S) V[:, :r]^T
    torch.testing.assert_close(U[:, :r] @ torch.diag(s) @ V[:, :r].T, M, rtol=0, atol=1e-10)
    x = torch.randn(3, *shape, dtype=F64)
    torch.testing.assert_close(op.A_via_svd(x), op.A(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("name", "op", "shape", "cond"), [o for o in OPS if o[3]], ids=[o[0] for o in OPS if o[3]]
)
def test_pseudo_inverse(name, op, shape, cond) -> None:
    op = op.bind(shape)
    M = op.matrix(dtype=F64)
    y = torch.randn(3, *op.out_shape, dtype=F64)
    expected = y.reshape(3, -1) @ torch.linalg.pinv(M).T
    torch.testing.assert_close(op.A_pinv(y).reshape(3, -1), expected, rtol=1e-8, atol=1e-8)


def test_float32_and_single_image() -> None:
    x = torch.randn(1, 28, 28)
    for op in (Inpainting(half_mask((1, 28, 28))), Blur.gaussian(1.0), SuperResolution(4)):
        op = op.bind((1, 28, 28))
        y = op.A(x[None])
        assert y.dtype == torch.float32 and y.shape == (1, *op.out_shape)
        assert op.A_adjoint(y).shape == (1, 1, 28, 28)
        torch.testing.assert_close(op.A_via_svd(x[None]), y, rtol=1e-4, atol=1e-5)


def test_inpainting_values() -> None:
    mask = half_mask((1, 4, 4), hide="bottom")
    assert int(mask.sum()) == 8 and mask[0, :2].all() and not mask[0, 2:].any()
    op = Inpainting(mask)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(op.A(x), torch.arange(8.0)[None])
    back = op.A_adjoint(op.A(x))
    torch.testing.assert_close(back, x * mask)
    assert op.out_shape == (8,)


def test_superresolution_is_block_average() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = SuperResolution(2).A(x)
    torch.testing.assert_close(y[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_blur_keeps_constant_interior() -> None:
    op = Blur.gaussian(1.0)
    x = torch.ones(1, 1, 20, 20)
    y = op.A(x)
    torch.testing.assert_close(y[0, 0, 8:12, 8:12], torch.ones(4, 4))
    assert y[0, 0, 0, 0] < 0.5  # zero padding at the corner


def test_masks() -> None:
    m1 = random_mask((1, 10, 10), 0.25, seed=3)
    m2 = random_mask((1, 10, 10), 0.25, seed=3)
    assert m1.dtype == torch.bool and int(m1.sum()) == 25 and torch.equal(m1, m2)
    assert not torch.equal(m1, random_mask((1, 10, 10), 0.25, seed=4))
    box = box_mask((3, 6, 6), 1, 2, 2, 3)
    assert int((~box).sum()) == 3 * 2 * 3 and not box[:, 1:3, 2:5].any()
    for hide in ("top", "bottom", "left", "right"):
        assert int(half_mask((6, 4), hide).sum()) == 12
    assert not half_mask((6, 4), "left")[:, :2].any() and half_mask((6, 4), "left")[:, 2:].all()
    with pytest.raises(ValueError, match="hide"):
        half_mask((4, 4), "middle")
    with pytest.raises(ValueError, match="inside"):
        box_mask((4, 4), 2, 2, 3, 1)
    with pytest.raises(ValueError, match="observed_fraction"):
        random_mask((4, 4), 0.0)


class _ImagePrior(DiffusionPrior):
    """A stand-in image prior (the network predicts zero noise) to build problems with."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.schedule = VPSchedule.linear()
        self.event_shape = shape

    def model_output(self, x_t, t):
        return torch.zeros_like(x_t)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32


def test_problems_bind_and_shape_errors() -> None:
    prior = _ImagePrior((2, 6, 6))
    # an [H, W] mask is shared by the channels
    op = Inpainting(box_mask((6, 6), 0, 0, 3, 6))
    problem = ps.InverseProblem(prior, op, torch.zeros(2 * 18), 0.1)
    assert problem.operator.in_shape == (2, 6, 6) and problem.obs_shape == (36,)
    problem = ps.InverseProblem(prior, Blur.gaussian(1.0), torch.zeros(2, 6, 6), 0.1)
    assert problem.operator.in_shape == (2, 6, 6) and problem.operator.has_svd
    problem = ps.InverseProblem(prior, SuperResolution(3), torch.zeros(2, 2, 2), 0.1)
    assert problem.obs_shape == (2, 2, 2)
    # masks of the wrong shape
    with pytest.raises(ValueError, match="mask"):
        ps.InverseProblem(prior, Inpainting(torch.ones(1, 6, 6)), torch.zeros(36), 0.1)
    with pytest.raises(ValueError, match="mask"):
        ps.InverseProblem(prior, Inpainting(torch.ones(5, 6)), torch.zeros(60), 0.1)
    with pytest.raises(ValueError, match="divisible"):
        ps.InverseProblem(prior, SuperResolution(4), torch.zeros(2, 1, 1), 0.1)
    with pytest.raises(ValueError, match=r"images \[C, H, W\]"):
        ps.InverseProblem(_ImagePrior((36,)), Blur.gaussian(1.0), torch.zeros(36), 0.1)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        Inpainting(torch.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="no pixel"):
        Inpainting(torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[H, W\] or \[C, H, W\]"):
        Inpainting(torch.ones(4))
    op = Inpainting(torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="expects x of shape"):
        op.A(torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="expects y of shape"):
        op.A_adjoint(torch.zeros(2, 15))
    with pytest.raises(ValueError, match="odd"):
        Blur(torch.ones(2, 3))
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(1.0, size=4)
    with pytest.raises(ValueError, match="factor"):
        SuperResolution(0)
    with pytest.raises(ValueError, match="divisible"):
        SuperResolution(3).A(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="needs the image shape"):
        _ = SuperResolution(2).singular_values
    # a non-separable kernel on a large image has no SVD: a clear error
    big = Blur(torch.rand(3, 3, generator=torch.Generator().manual_seed(0)), shape=(1, 80, 80))
    assert not big.has_svd
    with pytest.raises(ValueError, match="needs an operator with an SVD"):
        big.require_svd("mcgdiff")
    with pytest.raises(ValueError, match="rank-one"):
        _ = big.singular_values
    assert Blur.gaussian(1.0, shape=(1, 80, 80)).has_svd
