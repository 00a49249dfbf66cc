"""Ready-made inverse problems: the Gaussian-mixture benchmark, simulated batches, MNIST images."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posterior._utils import as_generator, check_count, check_device, check_dtype
from posterior.noise.base import NoiseModel
from posterior.noise.models import as_noise_model
from posterior.operators.base import Operator
from posterior.operators.linear import Matrix, as_operator
from posterior.priors.base import DiffusionPrior
from posterior.priors.gaussian_mixture import GaussianMixturePrior
from posterior.problem import InverseProblem
from posterior.problems_image import IMAGE_OPERATORS, gmm_image
from posterior.schedule import NoiseSchedule, VPSchedule

__all__ = [
    "PROBLEMS_HELP",
    "SpecError",
    "gmm_benchmark",
    "gmm_demo",
    "gmm_image",
    "gmm_prior_grid",
    "mnist_deblur",
    "mnist_denoising",
    "mnist_inpainting",
    "mnist_problem",
    "mnist_superresolution",
    "named_problem",
    "prior_from_spec",
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


# --------------------------------------------------------------------------- named problems
PROBLEMS_HELP = (
    "gmm-demo (2-D, 25-component mixture, one noisy linear measurement); "
    "gmm:DIM:OBS (the MCGdiff mixture benchmark, e.g. gmm:8:2); "
    "gmm-image:OP[:CxHxW] (a Gaussian mixture on images with a known posterior; OP in inpaint, "
    "random-pixels, sr2, blur, denoise; 1x28x28 by default, e.g. gmm-image:sr2:3x32x32; up to "
    "3x64x64 and beyond for inpaint, sr2, denoise); "
    "mnist-inpaint, mnist-sr4, mnist-blur, mnist-denoise (held-out digits; --prior picks the model)"
)


class SpecError(ValueError):
    """A problem or prior name that does not parse, or a prior that cannot be loaded from it."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def prior_from_spec(spec: str, device: torch.device | str | None = None) -> DiffusionPrior:
    """A shipped prior by name (``mnist``, ``mnist-latent``) or a diffusers folder (a latent one:
    ``unet/`` + ``vae/`` or ``vqvae/``); :class:`SpecError` otherwise."""
    from posterior.priors.diffusers import DiffusersPrior
    from posterior.priors.latent import LatentPrior
    from posterior.priors.shipped import load_prior

    path = Path(spec)
    if path.exists() or os.sep in spec or spec.startswith("."):
        if not path.is_dir():
            raise SpecError(f"prior folder {spec!r} does not exist or is not a folder")
        if not os.access(path, os.R_OK | os.X_OK):
            raise SpecError(f"prior folder {spec!r} is not readable")
        if not ((path / "unet").is_dir() or (path / "config.json").is_file()):  # before importing diffusers
            raise SpecError(
                f"cannot load a diffusers prior from {spec!r}: no unet/ subfolder and no config.json"
            )
        try:
            if (path / "vae").is_dir() or (path / "vqvae").is_dir():  # a latent diffusion folder
                return LatentPrior.from_pretrained(path, device=device)
            return DiffusersPrior.from_pretrained(path, device=device)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise SpecError(f"cannot load a diffusers prior from {spec!r}: {_first_line(err)}") from None
    try:
        return load_prior(spec, device=device)
    except ValueError as err:
        raise SpecError(f"{_first_line(err)} (or pass a diffusers folder)") from None


def named_problem(
    spec: str,
    num_problems: int = 1,
    seed: int = 0,
    device: str = "cpu",
    prior: str = "mnist",
    noise: float | None = None,
) -> InverseProblem:
    """Build a named problem (see :data:`PROBLEMS_HELP`); ``num_problems > 1`` simulates a batch
    with known truths from the same prior, operator and noise level. A name that does not parse
    or a prior that cannot be loaded is a :class:`SpecError`."""
    from posterior.operators.image import Inpainting, half_mask
    from posterior.operators.linear import Identity
    from posterior.operators.separable import Blur, SuperResolution, gaussian_kernel
    from posterior.priors.shipped import mnist_heldout

    try:
        dev = check_device(device)
    except ValueError as err:
        raise SpecError(str(err)) from None
    if spec.startswith("gmm-image:"):
        return _gmm_image_spec(spec, num_problems, seed, dev, noise)
    if spec == "gmm-demo" or spec.startswith("gmm:"):
        if spec == "gmm-demo":
            base = gmm_demo(seed)
        else:
            parts = spec.split(":")
            try:
                dim, obs = int(parts[1]), int(parts[2])
                if len(parts) != 3:
                    raise ValueError
            except (ValueError, IndexError):
                raise SpecError(f"bad problem {spec!r}: expected gmm:DIM:OBS, e.g. gmm:8:2") from None
            try:
                base = gmm_benchmark(dim, obs, seed)
            except ValueError as err:
                raise SpecError(f"bad problem {spec!r}: {_first_line(err)}") from None
        if num_problems > 1:
            base = simulate(base.prior, base.operator, base.noise_std, num_problems, seed=seed)
        return base.to(dev)
    image_ops = {"inpaint", "sr4", "blur", "denoise"}
    kind = spec.removeprefix("mnist-")
    if not spec.startswith("mnist-") or kind not in image_ops:
        raise SpecError(f"unknown problem {spec!r}; known problems: {PROBLEMS_HELP}")
    model = prior_from_spec(prior, dev)
    shape = tuple(model.event_shape)
    if kind == "inpaint":
        op = Inpainting(half_mask(shape, "bottom", device=dev))
    elif kind == "sr4":
        op = SuperResolution(4)
    elif kind == "blur":
        op = Blur(gaussian_kernel(1.5, device=dev, dtype=model.dtype))
    else:
        op = Identity()
    noise = 0.1 if noise is None else noise
    if shape == (1, 28, 28):
        truth, _ = mnist_heldout(slice(0, num_problems), device=dev, dtype=model.dtype)
        if truth.shape[0] < num_problems:
            raise SpecError(f"only {truth.shape[0]} held-out digits; ask for fewer problems")
    else:  # another model: truths drawn from the model itself
        truth = model.sample(num_problems, torch.Generator(dev).manual_seed(seed), num_steps=50)
    problem = simulate(model, op, noise, num_problems, seed=seed, truth=truth)
    if num_problems == 1:  # a single problem, unbatched
        single = InverseProblem(model, problem.operator, problem.y_batch[0], noise)
        single.truth = truth[0]
        return single
    return problem


def _gmm_image_spec(
    spec: str, num_problems: int, seed: int, device: torch.device | None, noise: float | None
) -> InverseProblem:
    """``gmm-image:OP[:CxHxW]``: :func:`gmm_image` (noise 0.1 unless given)."""
    parts = spec.split(":")
    usage = "expected gmm-image:OP or gmm-image:OP:CxHxW, e.g. gmm-image:inpaint:1x28x28"
    if len(parts) not in (2, 3) or parts[1] not in IMAGE_OPERATORS:
        raise SpecError(f"bad problem {spec!r}: {usage}; OP in {', '.join(IMAGE_OPERATORS)}")
    try:
        shape = tuple(int(v) for v in parts[2].split("x")) if len(parts) == 3 else (1, 28, 28)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError
    except ValueError:
        raise SpecError(f"bad problem {spec!r}: {usage}") from None
    try:
        return gmm_image(shape, parts[1], 0.1 if noise is None else noise, num_problems, seed, device=device)
    except ValueError as err:
        raise SpecError(f"bad problem {spec!r}: {_first_line(err)}") from None
