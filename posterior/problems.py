"""Ready-made inverse problems: the Gaussian-mixture benchmark, simulated batches, MNIST images."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from posterior._utils import as_generator, check_count, check_device, check_dtype
from posterior.noise.base import NoiseModel, as_noise_model
from posterior.operators.base import Operator, as_operator
from posterior.operators.linear import Matrix
from posterior.priors.base import DiffusionPrior
from posterior.priors.gaussian_mixture import GaussianMixturePrior
from posterior.problem import InverseProblem
from posterior.schedule import NoiseSchedule, VPSchedule

__all__ = [
    "gmm_benchmark",
    "gmm_demo",
    "gmm_prior_grid",
    "mnist_deblur",
    "mnist_denoising",
    "mnist_inpainting",
    "mnist_problem",
    "mnist_superresolution",
    "simulate",
]


def gmm_prior_grid(
    dim: int,
    generator: torch.Generator,
    spacing: float = 8.0,
    dtype: torch.dtype = torch.float32,
    schedule: NoiseSchedule | None = None,
) -> GaussianMixturePrior:
    """The 25-component grid prior of MCGdiff: means ``(8i, 8j, 8i, 8j, ...)`` for ``i, j`` in
    ``-2..2``, identity covariances, weights = normalised squared standard normals; on
    ``schedule`` (default: DDPM linear, 1000 steps)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even number >= 2, got {dim}")
    grid = torch.tensor(list(itertools.product(range(-2, 3), repeat=2)), dtype=torch.float64)
    means = (spacing * grid).repeat(1, dim // 2)  # [25, dim]
    weights = torch.randn(25, generator=generator, dtype=torch.float64).pow(2)
    weights = weights / weights.sum()
    variances = torch.ones(25, dim, dtype=torch.float64)
    return GaussianMixturePrior(
        weights.to(dtype), means.to(dtype), variances.to(dtype), schedule=schedule or VPSchedule.linear()
    )


def gmm_benchmark(
    dim: int,
    obs_dim: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    schedule: NoiseSchedule | None = None,
) -> InverseProblem:
    """The Gaussian-mixture benchmark of MCGdiff (Cardoso et al., ICLR 2024), by seed.

    Prior: :func:`gmm_prior_grid`. Operator: an ``obs_dim x dim`` standard normal matrix whose
    singular values are replaced by sorted ``U(0, 1)`` draws. Noise: ``noise_std = U(0, 1) *``
    the largest singular value. ``y = A x* + noise`` with ``x*`` drawn from the prior (kept as
    ``problem.truth``). ``schedule``: the prior's noise schedule (default: DDPM linear); the
    problem itself does not depend on it.
    """
    if not 1 <= obs_dim <= dim:
        raise ValueError(f"need 1 <= obs_dim <= dim, got obs_dim={obs_dim}, dim={dim}")
    gen = torch.Generator().manual_seed(seed)
    prior = gmm_prior_grid(dim, gen, dtype=dtype, schedule=schedule)
    A = torch.randn(obs_dim, dim, generator=gen, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    s = torch.rand(obs_dim, generator=gen, dtype=torch.float64).sort(descending=True).values
    A = U @ torch.diag(s) @ Vh
    noise_std = (torch.rand((), generator=gen, dtype=torch.float64) * s.max()).item()
    x_true = prior.distribution.sample(1, gen)[0].double()
    y = A @ x_true + noise_std * torch.randn(obs_dim, generator=gen, dtype=torch.float64)
    problem = InverseProblem(prior, Matrix(A.to(dtype)), y.to(dtype), noise_std)
    problem.truth = x_true.to(dtype)
    return problem


def gmm_demo(seed: int = 0) -> InverseProblem:
    """A 2-D, 25-component problem observed through one noisy linear measurement (the demo)."""
    return gmm_benchmark(dim=2, obs_dim=1, seed=seed)


def simulate(
    prior: DiffusionPrior,
    operator: Operator | Tensor,
    noise_std: float | NoiseModel,
    num_problems: int,
    seed: int | torch.Generator | None = None,
    truth: Tensor | None = None,
) -> InverseProblem:
    """``B = num_problems`` problems ``y_b = A(x_b) + noise_std eps_b`` with ``x_b ~ prior``.

    ``noise_std`` may also be a noise model from :mod:`posterior.noise`: then
    ``y_b ~ p(y | A(x_b))`` is drawn from it. The draws ``x_b`` (``Tensor[B, *event_shape]``, or
    ``truth`` when given) are kept as ``problem.truth``: the ground truth for coverage and
    simulation-based calibration.
    """
    check_count(num_problems, "num_problems")
    gen = as_generator(seed, prior.device)
    x = prior.sample(num_problems, gen) if truth is None else truth
    op = as_operator(operator).bind(tuple(prior.event_shape))
    clean = op.A(x)
    y = as_noise_model(noise_std, "noise_std").sample(clean, gen)
    problem = InverseProblem(prior, op, y, noise_std)
    problem.truth = x
    return problem


# --------------------------------------------------------------------------------------- MNIST images
def mnist_problem(
    operator: Operator,
    index: int | list[int] = 0,
    noise_std: float = 0.05,
    seed: int = 0,
    prior: DiffusionPrior | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> InverseProblem:
    """``y = A(x) + noise_std * eps`` for held-out MNIST digits ``x`` under the shipped MNIST prior.

    Args:
        operator: an image operator on ``[1, 28, 28]`` (see :mod:`posterior.operators`).
        index: which of the 500 held-out digits (never seen by the prior); a list gives a batch
            of ``B`` problems (``y: [B, *obs_shape]``).
        noise_std: Gaussian noise on the ``[-1, 1]`` pixel scale.
        seed: seeds the observation noise.
        prior: the prior to use (default: ``load_prior("mnist", device, dtype)``).

    ``problem.truth`` is the digit(s), ``Tensor[1, 28, 28]`` (``[B, 1, 28, 28]`` for a list).
    """
    from posterior.priors.shipped import load_prior, mnist_heldout

    device, dtype = check_device(device), check_dtype(dtype)
    if prior is None:
        prior = load_prior("mnist", device=device, dtype=dtype)
    batched = not isinstance(index, int)
    x, _ = mnist_heldout(index if batched else [index], device=prior.device, dtype=prior.dtype)
    op = as_operator(operator).bind(tuple(prior.event_shape))
    gen = torch.Generator().manual_seed(seed)
    clean = op.A(x)
    noise = torch.randn(clean.shape, generator=gen, dtype=torch.float64).to(clean)
    y = clean + noise_std * noise
    problem = InverseProblem(prior, op, y if batched else y[0], noise_std)
    problem.truth = x if batched else x[0]
    return problem


def mnist_inpainting(
    index: int | list[int] = 0,
    kind: str = "half",
    noise_std: float = 0.05,
    seed: int = 0,
    observed_fraction: float = 0.25,
    **kwargs: Any,
) -> InverseProblem:
    """Inpainting of a held-out MNIST digit.

    ``kind``: ``"half"`` (the bottom half hidden), ``"box"`` (a central 12x12 box hidden) or
    ``"random"`` (only ``observed_fraction`` of the pixels observed, drawn with ``seed``).
    Other arguments as in :func:`mnist_problem`.
    """
    from posterior.operators.image import Inpainting, box_mask, half_mask, random_mask

    if kind == "half":
        mask = half_mask((1, 28, 28), hide="bottom")
    elif kind == "box":
        mask = box_mask((1, 28, 28), 8, 8, 12, 12)
    elif kind == "random":
        mask = random_mask((1, 28, 28), observed_fraction, seed=seed)
    else:
        raise ValueError(f"kind must be 'half', 'box' or 'random', got {kind!r}")
    return mnist_problem(Inpainting(mask), index, noise_std, seed, **kwargs)


def mnist_superresolution(
    factor: int = 4, index: int | list[int] = 0, noise_std: float = 0.05, seed: int = 0, **kwargs: Any
) -> InverseProblem:
    """``factor``-times downsampling (average pooling) of a held-out MNIST digit: 2 or 4 (28 = 4 x 7)."""
    from posterior.operators.separable import SuperResolution

    return mnist_problem(SuperResolution(factor), index, noise_std, seed, **kwargs)


def mnist_deblur(
    sigma: float = 1.5, index: int | list[int] = 0, noise_std: float = 0.05, seed: int = 0, **kwargs: Any
) -> InverseProblem:
    """Gaussian blur (std ``sigma`` pixels, zero padding) of a held-out MNIST digit."""
    from posterior.operators.separable import Blur, gaussian_kernel
    from posterior.priors.shipped import load_prior

    if kwargs.get("prior") is None:
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        kwargs["prior"] = load_prior("mnist", device=device, dtype=dtype)
    prior = kwargs["prior"]
    blur = Blur(gaussian_kernel(sigma, dtype=prior.dtype, device=prior.device))
    return mnist_problem(blur, index, noise_std, seed, **kwargs)


def mnist_denoising(
    index: int | list[int] = 0, noise_std: float = 0.3, seed: int = 0, **kwargs: Any
) -> InverseProblem:
    """A held-out MNIST digit observed with Gaussian noise only (``A = I``)."""
    from posterior.operators.linear import Identity

    return mnist_problem(Identity(), index, noise_std, seed, **kwargs)
