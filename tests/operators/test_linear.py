import pytest
import torch

from posterior.operators import CompressedSensing, Identity, Matrix, as_operator


def _operators():
    gen = torch.Generator().manual_seed(0)
    return [
        Identity((5,)),
        Identity((2, 3, 3)),
        Matrix(torch.randn(3, 7, generator=gen, dtype=torch.float64)),
        Matrix(torch.randn(6, 4, generator=gen, dtype=torch.float64)),  # m > d
        CompressedSensing(4, 9, seed=1, dtype=torch.float64),
        Matrix(torch.randn(5, 12, generator=gen, dtype=torch.float64)).bind((3, 2, 2)),  # on images
        CompressedSensing(4, 8, seed=2, dtype=torch.float64).bind((2, 2, 2)),
    ]


@pytest.mark.parametrize("op", _operators(), ids=repr)
def test_adjoint(op):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.in_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(3, *op.out_shape, generator=gen, dtype=torch.float64)
    lhs = (op.A(x) * y).flatten(1).sum(1)
    rhs = (x * op.A_adjoint(y)).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, atol=1e-10)


@pytest.mark.parametrize("op", _operators(), ids=repr)
def test_svd_reconstructs_operator(op):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, *op.in_shape, generator=gen, dtype=torch.float64)
    assert torch.allclose(op.A_via_svd(x), op.A(x), atol=1e-10)
    # V and U are orthogonal: V(V^T x) = x, U^T U z = z
    assert torch.allclose(op.V(op.V_adjoint(x)), x, atol=1e-10)
    z = torch.randn(4, op.out_dim, generator=gen, dtype=torch.float64)
    assert torch.allclose(op.U_adjoint(op.U(z)), z, atol=1e-10)
    assert op.singular_values.numel() == min(op.in_dim, op.out_dim)


def test_pinv_matches_dense_pinv():
    A = torch.randn(3, 7, dtype=torch.float64)
    op = Matrix(A)
    y = torch.randn(2, 3, dtype=torch.float64)
    assert torch.allclose(op.A_pinv(y), y @ torch.linalg.pinv(A).T, atol=1e-10)


def test_as_operator_and_errors():
    assert isinstance(as_operator(torch.eye(2)), Matrix)
    with pytest.raises(ValueError, match="2-D"):
        Matrix(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        Matrix(torch.tensor([[float("nan")]]))
    with pytest.raises(TypeError):
        as_operator("not an operator")
    with pytest.raises(ValueError, match="m > 0"):
        CompressedSensing(0, 3)


def test_matrix_bound_to_images_acts_on_the_row_major_flattening():
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    op = Matrix(A).bind((3, 2, 2))
    x = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    assert torch.equal(op.A(x), x.reshape(4, 12) @ A.T)
    assert op.A_adjoint(torch.ones(1, 5, dtype=torch.float64)).shape == (1, 3, 2, 2)
    assert torch.equal(op.matrix(), A) and op.in_shape == (3, 2, 2)
    assert Matrix(A).in_shape == (12,)  # binding returns a copy
    with pytest.raises(ValueError, match="expects inputs of shape"):
        Matrix(A).bind((1, 3, 3))


def test_svd_coordinates_read_y_in_the_singular_basis():
    # rank-deficient: one zero singular value observes nothing
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    op = Matrix(A @ torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0])
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    z = op.to_svd(x)
    assert z.shape == (2, 5, 3) and torch.allclose(op.from_svd(z), x)
    y = op.A(x[:, 0])  # [B, m], noiseless
    svd = op.svd_coordinates(y, torch.float32)
    assert svd.s.dtype == svd.y_tilde.dtype == torch.float32 and svd.observed.tolist() == [True, True, False]
    assert torch.equal(svd.s_safe[svd.observed], svd.s[svd.observed]) and svd.s_safe[2] == 1
    # y~ = z on the observed coordinates (y = A x: U^T y = S V^T x)
    torch.testing.assert_close(svd.y_tilde[:, :2], z[:, 0, :2].float())
    torch.testing.assert_close(svd.uy, (svd.s * z[:, 0].float()))


def test_operators_move_with_to():
    op = Matrix(torch.randn(2, 3))
    moved = op.to(dtype=torch.float64)
    assert moved.weight.dtype == torch.float64 and op.weight.dtype == torch.float32
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(moved.A(x), x @ op.weight.double().T)
