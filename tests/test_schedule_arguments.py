"""Schedule constructors refuse bad arguments with one line naming the class and the argument the
user passed (never the derived ``alphas_cumprod``, an ``OverflowError`` or a comparison
``TypeError``), and accept the edges that still give a valid schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from posterior.schedule import EDMSchedule, FlowSchedule, NoiseSchedule, VPSchedule


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: EDMSchedule(rho=1e-3), r"^EDMSchedule: rho=0\.001 .*sigma_max"),
        (lambda: EDMSchedule(rho="7"), r"^EDMSchedule: rho must be a positive finite number, got '7'"),
        (lambda: EDMSchedule(rho=math.inf), r"^EDMSchedule: rho must be a positive finite number"),
        (lambda: EDMSchedule(rho=math.nan), r"^EDMSchedule: rho must be"),
        (lambda: EDMSchedule(sigma_min=1e-9), r"^EDMSchedule: sigma_min=1e-09 "),
        (lambda: EDMSchedule(sigma_min=0.0), r"^EDMSchedule: sigma_min must be a positive"),
        (lambda: EDMSchedule(sigma_min="0.002"), r"^EDMSchedule: sigma_min must be a positive"),
        (lambda: EDMSchedule(sigma_max=1e200), r"^EDMSchedule: sigma_max=1e\+200 is too large"),
        (lambda: EDMSchedule(sigma_max=math.inf), r"^EDMSchedule: sigma_max must be a positive finite"),
        (lambda: EDMSchedule(sigma_min=1.0, sigma_max=0.5), r"^EDMSchedule: .*sigma_min < sigma_max"),
        (lambda: EDMSchedule(num_train_steps=1), r"^EDMSchedule: num_train_steps must be an integer >= 2"),
        (lambda: FlowSchedule(shift=math.inf), r"^FlowSchedule: shift must be a positive finite number"),
        (lambda: FlowSchedule(shift="3"), r"^FlowSchedule: shift must be a positive finite number"),
        (lambda: FlowSchedule(shift=1e8), r"^FlowSchedule: shift=1e\+08 "),
        (lambda: FlowSchedule(shift=1e-300), r"^FlowSchedule: shift=1e-300 "),
        (lambda: FlowSchedule(tau_max=1.0), r"^FlowSchedule: tau_max must be a number in \(0, 1\)"),
        (lambda: VPSchedule.linear(10**6), r"^VPSchedule\.linear: num_train_steps=1000000 "),
        (lambda: VPSchedule.linear(2.5), r"^VPSchedule\.linear: num_train_steps must be an integer >= 2"),
        (lambda: VPSchedule.linear(beta_start=1e-20), r"^VPSchedule\.linear: beta_start=1e-20 "),
        (lambda: VPSchedule.linear(beta_start=0.1, beta_end=0.01), r"^VPSchedule\.linear: .*beta_end"),
        (lambda: VPSchedule.linear(beta_end=1.0), r"^VPSchedule\.linear: beta_end must be a number in"),
        (
            lambda: VPSchedule.cosine(max_beta=0),
            r"^VPSchedule\.cosine: max_beta must be a number in \(",
        ),
        (lambda: VPSchedule.cosine(max_beta=1e-20), r"^VPSchedule\.cosine: max_beta=1e-20 "),
        (lambda: VPSchedule.cosine(s=-1.0), r"^VPSchedule\.cosine: s must be a non-negative"),
        (lambda: VPSchedule.cosine(num_train_steps=True), r"^VPSchedule\.cosine: num_train_steps must be"),
    ],
)
def test_bad_schedule_arguments_are_one_line_errors_naming_them(
    build: Callable[[], NoiseSchedule], needle: str
) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        build()
    assert "\n" not in str(err.value) and "alphas_cumprod" not in str(err.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: EDMSchedule(rho=1.0),
        lambda: EDMSchedule(rho=0.5),
        lambda: EDMSchedule(sigma_min=1e-6),
        lambda: EDMSchedule(sigma_max=1e8),
        lambda: EDMSchedule(num_train_steps=2),
        lambda: FlowSchedule(shift=10.0),
        lambda: FlowSchedule(shift=0.01),
        lambda: VPSchedule.linear(10**4),
        lambda: VPSchedule.linear(2),
        lambda: VPSchedule.cosine(max_beta=0.5),
        lambda: VPSchedule.cosine(s=0.0),
    ],
)
def test_edge_arguments_that_give_a_valid_schedule_are_accepted(build: Callable[[], NoiseSchedule]) -> None:
    abar = build()._abar_ext
    assert (abar[1:] < abar[:-1]).all() and (abar[1:] > 0).all()
