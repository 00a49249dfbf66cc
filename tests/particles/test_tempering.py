"""Adaptive tempering: the bisection finds the largest exponent that keeps the conditional ESS."""

from __future__ import annotations

import math

import torch

from posterior.distributed.context import current_communicator
from posterior.particles.tempering import conditional_ess, temper_exponent


def test_conditional_ess_of_flat_and_one_hot_potentials() -> None:
    comm = current_communicator()
    log_w = torch.full((2, 10), -math.log(10))
    assert torch.allclose(conditional_ess(log_w, torch.zeros(2, 10), comm), torch.ones(2))
    one_hot = torch.full((2, 10), -math.inf)
    one_hot[:, 3] = 0.0
    assert torch.allclose(conditional_ess(log_w, one_hot, comm), torch.full((2,), 0.1))


def test_exponent_is_the_largest_that_keeps_the_target() -> None:
    comm = current_communicator()
    gen = torch.Generator().manual_seed(0)
    log_w = torch.log_softmax(torch.randn(4, 200, generator=gen), -1)
    base = 0.3 * torch.randn(4, 200, generator=gen)
    log_g = torch.tensor([0.01, 1.0, 10.0, 100.0])[:, None] * torch.randn(4, 200, generator=gen)
    low = torch.tensor([0.0, 0.0, 0.0, 0.5])
    lam = temper_exponent(log_w, base, log_g, low, 0.5, comm)
    frac = conditional_ess(log_w, base + lam[:, None] * log_g, comm)
    assert lam[0] == 1.0 and frac[0] >= 0.5  # a near-flat potential goes in whole
    assert (0 < lam[1:3]).all() and (lam[1:3] < 1).all()
    assert torch.allclose(frac[1:3], torch.full((2,), 0.5), atol=1e-3)  # on the boundary
    later = conditional_ess(log_w, base + (lam[:, None] + 1e-3) * log_g, comm)
    assert (later[1:3] < 0.5).all()
    assert lam[3] == 0.5  # fails already at the lower bound: stays there
