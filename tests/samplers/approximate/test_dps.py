"""DPS (Chung et al., ICLR 2023)."""

import pytest
import torch

import posterior as ps
from tests.samplers.approximate._baselines import (
    check_closer_than_prior,
    check_near_y,
    small_prior,
)


def test_near_y() -> None:
    # The normalised step has length ~zeta whatever the residual, so the samples settle within
    # ~zeta of y (measured median 0.57 at zeta = 0.5, 0.3 at the default 0.3); the squared
    # variant's step shrinks with the residual (measured median 0.08 at zeta = 0.2).
    check_near_y("dps", tol=0.75)
    check_near_y("dps", tol=0.15, variant="squared", zeta=0.2)


def test_nonlinear_operator() -> None:
    # y = 2 tanh(x / 2) (elementwise, invertible) of a point near a mode, tiny noise: the samples
    # land near that point (measured median distance 0.09; unguided, zeta = 0: 2.7).
    prior = small_prior()
    x_true = torch.tensor([1.8, 0.4])

    def op(x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(x / 2)

    problem = ps.InverseProblem(prior, op, op(x_true[None])[0], 0.01)
    res = ps.sample(problem, "dps", num_particles=200, num_steps=50, seed=0, variant="squared", zeta=1.0)
    assert (res.samples - x_true).norm(dim=-1).median() < 0.2


def test_guidance_moves_toward_y() -> None:
    # zeta = 0 is the unconditional sampler; guidance must move the samples toward y.
    prior = small_prior()
    problem = ps.InverseProblem(prior, torch.tensor([[1.0, 0.0]]), torch.tensor([2.0]), 0.1)
    free = ps.sample(problem, "dps", num_particles=1000, num_steps=50, seed=0, zeta=0.0).samples
    guided = ps.sample(problem, "dps", num_particles=1000, num_steps=50, seed=0).samples
    assert (guided[:, 0] - 2).abs().mean() < 0.5 * (free[:, 0] - 2).abs().mean()


@pytest.mark.slow
def test_closer_to_posterior_mean_than_prior() -> None:
    check_closer_than_prior("dps")
