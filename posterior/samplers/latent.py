"""Sampling with a latent prior: the latent inverse problem, decoding, and its closed form.

For a problem whose prior is a :class:`~posterior.priors.latent.LatentPrior` (latent prior
``p(z)``, decoder ``D``), ``ps.sample`` samples ``p(z | y) propto p(z) p(y | A(D(z)))`` with the
requested method on :func:`latent_problem` (operator ``A o D``, the same noise model) and
decodes the draws with :func:`decode_result`. Methods that need a linear operator refuse the
composed operator by name (unless the decoder is affine: then the latent problem is linear);
every method taking a differentiable nonlinear operator runs on it.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from posterior._utils import check_finite
from posterior.operators.base import LinearOperator, Operator
from posterior.operators.linear import Matrix
from posterior.priors.latent import LatentPrior
from posterior.problem import InverseProblem
from posterior.samplers.result import Result

__all__ = ["DecodedOperator", "decode_result", "latent_problem", "linear_latent_problem"]


class DecodedOperator(Operator):
    """The operator ``z -> A(D(z))`` of a latent problem (nonlinear, differentiable through ``D``).

    Args:
        operator: the bound operator ``A`` on ``x: [*event_shape]``.
        prior: the :class:`LatentPrior` whose decoder ``D`` maps ``z: [*latent_shape]`` to ``x``.
        out_shape: the shape of ``A(x)``.
    """

    def __init__(self, operator: Operator, prior: LatentPrior, out_shape: tuple[int, ...]) -> None:
        self.operator, self.prior = operator, prior
        self.in_shape, self.out_shape = tuple(prior.latent_shape), tuple(out_shape)

    def A(self, z: Tensor) -> Tensor:
        return self.operator.A(self.prior.decode(z))

    def tensors(self) -> list[Tensor]:
        return self.operator.tensors()

    def __repr__(self) -> str:
        return f"A o D ({self.operator!r} after the latent decoder)"


def latent_problem(problem: InverseProblem) -> InverseProblem:
    """The inverse problem on latents behind ``problem`` (whose prior is a :class:`LatentPrior`):
    prior ``prior.latent_prior``, operator :class:`DecodedOperator` ``A o D``, the same ``y``
    (batched as ``problem``) and noise model. Where ``A o D`` is affine (a
    :class:`~posterior.priors.latent.LinearDecoder`, a linear ``A``) and the noise Gaussian, it is
    the linear problem :func:`linear_latent_problem` instead (the same posterior; linear methods
    and linear twists apply). Its ``truth`` is the encoded truth where the prior has an encoder
    and the problem a truth, else ``None``."""
    prior = problem.prior
    if not isinstance(prior, LatentPrior):
        raise TypeError(f"latent_problem needs a problem with a LatentPrior, got {type(prior).__name__}")
    affine = prior.linear_decoder is not None and isinstance(problem.operator, LinearOperator)
    if affine and problem.gaussian:
        inner = linear_latent_problem(problem)
    else:
        op = DecodedOperator(problem.operator, prior, problem.obs_shape)
        inner = InverseProblem(prior.latent_prior, op, problem.y, problem.noise)
    if problem.truth is not None and prior.encoder is not None:
        inner.truth = prior.encode(problem.truth)
    return inner


def decode_result(result: Result, problem: InverseProblem, decoder_evals_before: int) -> Result:
    """``result`` of a latent problem (batched), decoded for ``problem``: ``latents`` are its draws
    ``[B, N, *latent_shape]``, ``samples`` their decoding ``[B, N, *event_shape]`` (in chunks of
    ``prior.max_batch_size``), ``truth`` the problem's; ``num_evals`` adds every decoder call made
    since ``decoder_evals_before`` (the operator's and the final decoding). Unbatched like
    ``problem``."""
    prior: LatentPrior = problem.prior  # type: ignore[assignment]
    start = time.perf_counter()
    b = result.as_batched()
    b.latents = b.samples
    with torch.no_grad():
        b.samples = prior.decode(b.latents)
        # draws kept in stats (each run's own, stored MCMC chains): decoded too, latents beside
        k = len(prior.latent_shape)
        for key, latent_key in (("run_samples", "run_latents"), ("chain", "chain_latents")):
            value = b.stats.get(key)
            if value is not None and value.numel() and value.shape[value.dim() - k :] == prior.latent_shape:
                b.stats = {**b.stats, key: prior.decode(b.stats[key]), latent_key: b.stats[key]}
    check_finite(b.samples, f"{b.method}: decoded samples")
    b.num_evals += prior.num_evals - decoder_evals_before
    b.wall_time += time.perf_counter() - start
    b.truth = None if problem.truth is None else (problem.truth if problem.batched else problem.truth[None])
    return b if problem.batched else b.unbatched()


def linear_latent_problem(problem: InverseProblem) -> InverseProblem:
    """The linear problem on ``z`` behind a problem with an affine decoder ``D(z) = W z + b``
    (:class:`~posterior.priors.latent.LinearDecoder`), a linear operator ``A`` and Gaussian
    noise: ``y - A b = (A W) z + noise`` with the latent prior and the same noise. For a latent
    Gaussian-mixture prior and Gaussian noise its ``exact_posterior()`` is the exact posterior of
    ``z`` (its draws decode to exact draws of ``x``: the ``x``-space prior is a mixture with
    covariances ``W Sigma_k W^T``, singular where ``W`` is tall, to which nothing is added) and
    its ``exact_log_evidence()`` the evidence of ``y``."""
    prior = problem.prior
    if not isinstance(prior, LatentPrior) or prior.linear_decoder is None:
        raise ValueError("linear_latent_problem needs a LatentPrior with a LinearDecoder")
    if not isinstance(problem.operator, LinearOperator) or not problem.gaussian:
        raise ValueError(
            f"linear_latent_problem needs a linear operator and Gaussian noise, got {problem.operator!r} "
            f"and {problem.noise!r}"
        )
    dec = prior.linear_decoder
    A = problem.operator.matrix(dtype=torch.float64, device=prior.device)  # [m, d]
    AW = (A @ dec.matrix.double()).to(prior.dtype)  # [m, k]
    Ab = (A @ dec.bias.double()).to(prior.dtype)  # [m]
    y = problem.y_batch.reshape(problem.batch_size, -1) - Ab
    linear = InverseProblem(prior.latent_prior, Matrix(AW), y if problem.batched else y[0], problem.noise)
    return linear
