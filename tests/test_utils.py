"""Shared helpers: the device check every public ``device`` argument goes through."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior._utils import check_device
from posterior.operators.image import box_mask, half_mask, random_mask
from posterior.operators.separable import gaussian_kernel
from posterior.priors.shipped import mnist_heldout, weights_path


def test_check_device() -> None:
    assert check_device(None) is None
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        check_device("gpu")
    with pytest.raises(ValueError, match=r"device must be a torch\.device"):
        check_device(3)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    "build",
    [
        lambda: ps.load_prior("mnist", device="cuda"),
        lambda: ps.DiffusersPrior.from_pretrained(weights_path("mnist"), device="cuda"),
        lambda: ps.problems.mnist_inpainting(device="cuda"),
        lambda: ps.problems.mnist_deblur(device="cuda"),
        lambda: ps.problems.mnist_problem(ps.operators.Identity(), device="cuda"),
        lambda: mnist_heldout([0], device="cuda"),
        lambda: half_mask((28, 28), device="cuda"),
        lambda: box_mask((28, 28), 0, 0, 2, 2, device="cuda"),
        lambda: random_mask((28, 28), 0.5, device="cuda"),
        lambda: gaussian_kernel(1.0, device="cuda"),
        lambda: ps.load_prior("mnist").to("cuda"),
    ],
)
def test_cuda_without_cuda_is_one_line_naming_device(build) -> None:
    with pytest.raises(ValueError, match="device='cuda' requested but CUDA is not available") as err:
        build()
    assert "\n" not in str(err.value)


def test_dtype_that_is_not_a_torch_dtype_is_named() -> None:
    # diffusers would ignore the string and load float32: refused instead
    for build in (
        lambda: ps.load_prior("mnist", dtype="float64"),
        lambda: mnist_heldout([0], dtype="float64"),
        lambda: ps.problems.mnist_denoising(dtype=torch.int64),
    ):
        with pytest.raises(ValueError, match=r"dtype must be a floating torch\.dtype"):
            build()


def test_option_validators_name_the_argument_and_refuse_bools():
    from posterior._utils import (
        check_bool,
        check_choice,
        check_fraction,
        check_int,
        check_number,
        check_positive,
        check_positive_int,
    )

    assert check_positive_int(3, "n") == 3 and check_positive_int(None, "n", allow_none=True) is None
    assert check_int(0, "k") == 0 and check_positive(2, "h") == 2.0 and check_fraction(1, "eta") == 1.0
    assert check_number(0.5, "t0", 0.0, 1.0, low_open=True) == 0.5 and check_bool(False, "flag") is False
    assert check_choice("a", "mode", ("a", "b")) == "a"
    bad = [
        (lambda: check_positive_int(True, "n"), "n must be a positive integer, got True"),
        (lambda: check_positive_int(0, "n", allow_none=True), "n must be a positive integer or None"),
        (lambda: check_int(-1, "k"), "k must be a non-negative integer"),
        (lambda: check_positive(0.0, "h"), "h must be a positive finite number, got 0.0"),
        (lambda: check_positive(float("inf"), "h"), "h must be a positive finite number"),
        (lambda: check_number(-1, "w", 0.0), "w must be a non-negative finite number"),
        (lambda: check_fraction(1.5, "eta"), r"eta must be a number in \[0, 1\], got 1.5"),
        (lambda: check_fraction(0.0, "q", open_interval=True), r"q must be a number in \(0, 1\)"),
        (lambda: check_number("0.5", "t0", 0.0, 1.0), "t0 must be a number"),
        (lambda: check_bool("false", "flag"), "flag must be True or False, got 'false'"),
        (lambda: check_choice("c", "mode", ("a", "b")), r"mode must be one of \('a', 'b'\), got 'c'"),
    ]
    for call, match in bad:
        with pytest.raises(ValueError, match=match):
            call()
