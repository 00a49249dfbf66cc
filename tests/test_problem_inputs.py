"""What an :class:`InverseProblem` accepts: half precision and the meta device are refused up front
with one line naming them; a plain matrix (tensor or NumPy array) and ``y`` in another dtype are
converted to the prior's, with a warning only where values change beyond rounding; an
``Operator`` object in another dtype is refused with the fix in the message."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import posterior as ps
from posterior.priors import GaussianMixturePrior


def _base() -> ps.InverseProblem:
    return ps.problems.gmm_benchmark(4, 2, seed=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_refused_up_front_naming_the_dtype(dtype: torch.dtype) -> None:
    problem = _base()
    needle = rf"{dtype} is not supported: use torch\.float32 or torch\.float64"
    with pytest.raises(ValueError, match=needle) as err:
        problem.to(dtype=dtype)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=needle):
        problem.prior.to(dtype=dtype)
    d = problem.prior.distribution
    with pytest.raises(ValueError, match=needle):
        GaussianMixturePrior(d.weights.to(dtype), d.means.to(dtype), d.covs.to(dtype))
    with pytest.raises(ValueError, match=needle):
        ps.problems.gmm_benchmark(4, 2, seed=0, dtype=dtype)


def test_a_prior_in_half_precision_is_refused_by_the_problem() -> None:
    class HalfPrior(GaussianMixturePrior):
        @property
        def dtype(self) -> torch.dtype:
            return torch.float16

    problem = _base()
    d = problem.prior.distribution
    prior = HalfPrior(d.weights, d.means, d.covs)
    with pytest.raises(
        ValueError, match=r"^InverseProblem: the prior's dtype torch\.float16 is not supported"
    ):
        ps.InverseProblem(prior, problem.operator, problem.y, 0.5)


def test_the_meta_device_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"device='meta'.*holds no data") as err:
        _base().to("meta")
    assert "\n" not in str(err.value)


def test_a_float64_matrix_and_y_are_converted_to_a_float32_prior() -> None:
    problem = _base()
    A = problem.operator.matrix(dtype=torch.float64)
    y = problem.y.double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ordinary values: no warning
        converted = ps.InverseProblem(problem.prior, A, y, 0.5)
        from_numpy = ps.InverseProblem(problem.prior, A.numpy(), y.numpy(), 0.5)
    for p in (converted, from_numpy):
        assert p.y.dtype == torch.float32 and p.operator.matrix().dtype == torch.float32
        torch.testing.assert_close(p.y, problem.y)
        torch.testing.assert_close(p.operator.matrix(), problem.operator.matrix())
    x = problem.prior.sample(3, torch.Generator().manual_seed(0))[None]
    torch.testing.assert_close(
        converted.log_likelihood(x), ps.InverseProblem(*_args(problem)).log_likelihood(x)
    )


def _args(problem: ps.InverseProblem) -> tuple:
    return problem.prior, problem.operator, problem.y, 0.5


def test_values_that_change_beyond_rounding_warn() -> None:
    problem = _base()
    A = problem.operator.matrix(dtype=torch.float64)
    A[0, 0] = 1e-50  # underflows to zero in float32
    with pytest.warns(UserWarning, match=r"operator .*float64 to the prior's torch\.float32.*1 of 8 values"):
        ps.InverseProblem(problem.prior, A, problem.y, 0.5)
    y = problem.y.double()
    y[0] = 2.0**24 + 1  # an integer float32 cannot hold
    with pytest.warns(UserWarning, match=r"^y converted from torch\.float64"):
        ps.InverseProblem(problem.prior, problem.operator, y, 0.5)
    y[0] = 1e300  # overflows to inf
    with (
        pytest.raises(ValueError, match="y contains NaN or inf"),
        pytest.warns(UserWarning, match="^y converted"),
    ):
        ps.InverseProblem(problem.prior, problem.operator, y, 0.5)


def test_an_operator_object_in_another_dtype_is_refused_with_the_fix() -> None:
    problem = _base()
    op = problem.operator.to(dtype=torch.float64)
    with pytest.raises(ValueError, match=r"operator\.to\(dtype=torch\.float32\)") as err:
        ps.InverseProblem(problem.prior, op, problem.y, 0.5)
    assert "\n" not in str(err.value)
    assert np.isfinite(ps.InverseProblem(problem.prior, op.to(dtype=torch.float32), problem.y, 0.5).y).all()
