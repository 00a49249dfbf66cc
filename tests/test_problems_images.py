"""MNIST image problem builders: truth from the held-out digits, y = A(truth) + noise."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.priors.base import DiffusionPrior
from posterior.priors.shipped import mnist_heldout
from posterior.schedule import VPSchedule


class _StandIn(DiffusionPrior):
    """A network-free prior on [1, 28, 28] (the builders never call the network)."""

    def __init__(self) -> None:
        super().__init__()
        self.schedule = VPSchedule.linear()
        self.event_shape = (1, 28, 28)

    def model_output(self, x_t, t):
        return torch.zeros_like(x_t)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32


@pytest.mark.parametrize(
    ("build", "kwargs", "obs_shape"),
    [
        (ps.problems.mnist_inpainting, {"kind": "half"}, (392,)),
        (ps.problems.mnist_inpainting, {"kind": "box"}, (784 - 144,)),
        (ps.problems.mnist_inpainting, {"kind": "random", "observed_fraction": 0.5}, (392,)),
        (ps.problems.mnist_superresolution, {"factor": 4}, (1, 7, 7)),
        (ps.problems.mnist_superresolution, {"factor": 2}, (1, 14, 14)),
        (ps.problems.mnist_deblur, {"sigma": 1.0}, (1, 28, 28)),
        (ps.problems.mnist_denoising, {}, (1, 28, 28)),
    ],
)
def test_builders(build, kwargs, obs_shape) -> None:
    prior = _StandIn()
    noise_std = 0.1
    problem = build(index=5, noise_std=noise_std, seed=3, prior=prior, **kwargs)
    assert problem.obs_shape == obs_shape and not problem.batched
    torch.testing.assert_close(problem.truth, mnist_heldout(5)[0][0])
    resid = problem.y - problem.operator.A(problem.truth[None])[0]
    m = resid.numel()
    # the noise has the stated std: relative MC error of a std estimate is 1/sqrt(2m)
    assert abs(resid.std().item() / noise_std - 1) < 5 / (2 * m) ** 0.5
    again = build(index=5, noise_std=noise_std, seed=3, prior=prior, **kwargs)
    torch.testing.assert_close(again.y, problem.y)
    assert not torch.equal(build(index=5, noise_std=noise_std, seed=4, prior=prior, **kwargs).y, problem.y)


def test_batched_and_errors() -> None:
    prior = _StandIn()
    problem = ps.problems.mnist_inpainting([0, 1, 2], prior=prior)
    assert problem.batched and problem.y_batch.shape == (3, 392) and problem.truth.shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="kind"):
        ps.problems.mnist_inpainting(kind="stripes", prior=prior)
    with pytest.raises(IndexError):
        ps.problems.mnist_denoising(index=1000, prior=prior)
