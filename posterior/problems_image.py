"""An image-sized inverse problem with a known posterior: a Gaussian mixture on images.

:func:`gmm_image` builds ``B`` problems ``y_b = A x_b + noise eps_b`` with ``x_b`` drawn from an
:class:`~posterior.priors.image_mixture.ImageMixturePrior` (ten components with smooth means and
pixel correlations of a per-component amplitude and length scale, plus a small white term) and ``A``
inpainting, random-pixel inpainting, 2x super-resolution, Gaussian blur or the identity. The
posterior is again a Gaussian mixture; :meth:`ImageMixtureProblem.exact_posterior` computes it
without a ``d x d`` matrix (``d = C H W``): ``S_k = A Sigma_k A^T + sigma^2 I`` (``m`` observed
values) in a Kronecker eigenbasis when the operator is a Kronecker product with orthogonal rows
(denoising, half inpainting, super-resolution: no ``m x m`` matrix,
:mod:`posterior.problems_image_kron`), else by one ``m x m`` Cholesky factor per component; exact
draws by Matheron's rule
(``x + Sigma_k A^T S_k^{-1} (y - A x - sigma eps)`` with ``x ~ N(mu_k, Sigma_k)``), the density by
the matrix determinant lemma, and per-pixel marginals from the diagonal of the posterior
covariances. It is exact for the continuous posterior ``p(x_0 | y)``; a sampler simulating a
``K``-step chain converges to the chain's posterior, which tends to it as ``K`` grows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import as_generator, check_count, check_device, check_dtype
from posterior.operators.base import LinearOperator
from posterior.priors.image_mixture import ImageMixturePrior, rbf_correlation
from posterior.problem import InverseProblem
from posterior.problems_image_kron import DENSE_MAX_OBSERVED, DenseGram, KroneckerGram, gram, kronecker_scales
from posterior.schedule import NoiseSchedule

__all__ = [
    "IMAGE_OPERATORS",
    "ImageMixturePosterior",
    "ImageMixtureProblem",
    "gmm_image",
    "image_mixture_prior",
]

#: The operators of :func:`gmm_image`.
IMAGE_OPERATORS = ("inpaint", "random-pixels", "sr2", "blur", "denoise")


class ImageMixturePosterior:
    """``p(x | y_b)`` for ``B`` problems sharing an :class:`ImageMixturePrior` and a linear ``A``:
    ``y: Tensor[B, *obs_shape]``, Gaussian noise std ``sigma: Tensor[B]`` (positive); ``batched=False``
    drops the batch dim of what it returns (one problem).

    Attributes:
        weights: ``Tensor[B, K]`` posterior component probabilities (float64).
        means: ``Tensor[B, K, C, H, W]`` posterior component means (float64).
        log_evidence: ``Tensor[B]``, ``log p(y_b)``.
    """

    def __init__(
        self,
        prior: ImageMixturePrior,
        operator: LinearOperator,
        y: Tensor,
        sigma: Tensor,
        batched: bool = True,
    ) -> None:
        self.prior, self.batched = prior, batched
        dev = prior.device
        self.op = operator.to(dev, torch.float64)
        self.y = y.reshape(y.shape[0], -1).double()  # [B, m]
        self.sigma = sigma.double().reshape(-1).expand(self.y.shape[0])
        self.m, self.K, self.event = self.y.shape[1], prior.num_components, tuple(prior.event_shape)
        self._grams: dict[float, KroneckerGram | DenseGram] = {}  # sigma^2 -> S_k of every k
        mu = prior.means.double()
        self._A_mu = self._A(mu)  # [K, m]
        logj = torch.empty(self.y.shape[0], self.K, dtype=torch.float64, device=dev)
        self.means = torch.empty(self.y.shape[0], self.K, *self.event, dtype=torch.float64, device=dev)
        for s2, rows in self._groups():
            S = self._gram(s2)
            for k in range(self.K):
                resid = self.y[rows] - self._A_mu[k]  # [b, m]
                logn = -0.5 * (S.quad(k, resid) + S.logdet(k) + self.m * math.log(2 * math.pi))
                logj[rows, k] = prior.params["weights"][k].log().item() + logn
                self.means[rows, k] = mu[k] + prior.cov_apply(self._At(S.solve(k, resid)), k)
        self.log_evidence = torch.logsumexp(logj, -1)
        self.weights = torch.softmax(logj, -1)
        self._var: Tensor | None = None

    def _A(self, x: Tensor) -> Tensor:
        """``A x`` for ``x: [n, C, H, W]`` -> ``[n, m]``, through the SVD where there is one (a
        float64 convolution is slow on CPUs)."""
        return (self.op.A_via_svd(x) if self.op.has_svd else self.op.A(x)).reshape(x.shape[0], -1)

    def _At(self, u: Tensor) -> Tensor:
        """``A^T u`` for ``u: [n, m]`` -> ``[n, C, H, W]``."""
        if not self.op.has_svd:
            return self.op.A_adjoint(u.reshape(-1, *self.op.out_shape))
        s = self.op.singular_values.double()
        z = torch.zeros(u.shape[0], math.prod(self.event), dtype=u.dtype, device=u.device)
        z[:, : s.numel()] = s * self.op.U_adjoint(u.reshape(-1, *self.op.out_shape))[:, : s.numel()]
        return self.op.V(z).reshape(-1, *self.event)

    def _groups(self) -> list[tuple[float, Tensor]]:
        """The problems by noise variance: ``[(sigma^2, row indices)]``."""
        s2 = self.sigma.pow(2)
        return [(float(v), (s2 == v).nonzero()[:, 0]) for v in s2.unique()]

    def _gram(self, s2: float) -> KroneckerGram | DenseGram:
        """``S_k = A Sigma_k A^T + s2 I`` of every component, once per ``s2``: in a Kronecker
        eigenbasis where the operator allows it, else by dense Cholesky factors
        (:func:`~posterior.problems_image_kron.gram`)."""
        if s2 not in self._grams:
            self._grams[s2] = gram(self.prior, self.op, s2, self._A, self._rows)
        return self._grams[s2]

    def _rows(self) -> Tensor:
        """``A^T I_m``: ``[m, C, H, W]``, the operator's rows (the dense path only)."""
        return self._At(torch.eye(self.m, dtype=torch.float64, device=self.prior.device))

    def _out(self, x: Tensor) -> Tensor:
        return x if self.batched else x[0]

    # ----------------------------------------------------------------- draws and density
    def sample(self, num_samples: int, generator: torch.Generator | int | None = None) -> Tensor:
        """Exact draws ``Tensor[B, num_samples, C, H, W]`` (``[num_samples, C, H, W]`` for one
        problem), by Matheron's rule per component; float64."""
        check_count(num_samples, "num_samples")
        prior, dev = self.prior, self.prior.device
        gen = as_generator(generator, dev)
        B, n = self.y.shape[0], num_samples
        comp = torch.multinomial(self.weights, n, replacement=True, generator=gen)  # [B, n]
        xi = torch.randn(B, n, *self.event, generator=gen, dtype=torch.float64, device=dev)
        eps = torch.randn(B, n, self.m, generator=gen, dtype=torch.float64, device=dev)
        out = torch.empty_like(xi)
        mu = prior.means.double()
        for s2, rows in self._groups():
            S = self._gram(s2)
            for k in range(self.K):
                hit = (comp[rows] == k).nonzero()
                if not hit.numel():
                    continue
                b, j = rows[hit[:, 0]], hit[:, 1]
                x = mu[k] + prior.cov_apply(xi[b, j], k, 0.5)
                resid = self.y[b] - self._A(x) - s2**0.5 * eps[b, j]
                out[b, j] = x + prior.cov_apply(self._At(S.solve(k, resid)), k)
        return self._out(out)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x | y_b)`` for ``x: Tensor[B, n, C, H, W]`` (``[n, C, H, W]`` for one problem);
        returns ``[B, n]`` (``[n]``). Per component ``Sigma'^{-1} = Sigma^{-1} + A^T A / sigma^2``
        and ``log det Sigma' = log det Sigma + m log sigma^2 - log det S``."""
        x = (x if self.batched else x[None]).double()
        B, n = x.shape[:2]
        d = math.prod(self.event)
        out = torch.empty(B, n, self.K, dtype=torch.float64, device=x.device)
        for s2, rows in self._groups():
            S = self._gram(s2)
            for k in range(self.K):
                delta = (x[rows] - self.means[rows, k, None]).reshape(-1, *self.event)
                z = self.prior.to_basis(delta, k, self.prior.basis64)
                lam = self.prior.lam64[k]
                quad = (z.pow(2) / lam).flatten(1).sum(1) + self._A(delta).pow(2).sum(1) / s2
                logdet = lam.log().sum() + self.m * math.log(s2) - S.logdet(k)
                logn = -0.5 * (quad + logdet + d * math.log(2 * math.pi))
                out[rows, :, k] = self.weights[rows, k, None].log() + logn.reshape(len(rows), n)
        return self._out(torch.logsumexp(out, -1))

    # ----------------------------------------------------------------- per-pixel marginals
    def component_variances(self) -> Tensor:
        """Per-pixel posterior variances of each component, ``Tensor[B, K, C, H, W]``:
        ``diag(Sigma_k) - diag(Sigma_k A^T S_k^{-1} A Sigma_k)`` (computed once)."""
        if self._var is None:
            prior_var = self.prior.component_variances()  # [K, C, H, W]
            var = torch.empty(self.y.shape[0], self.K, *self.event, dtype=torch.float64, device=self.y.device)
            for s2, rows in self._groups():
                S = self._gram(s2)
                for k in range(self.K):
                    var[rows, k] = (prior_var[k] - S.gram_diag(k)).clamp_min(0)
            self._var = var
        return self._var

    @property
    def mean(self) -> Tensor:
        """Posterior mean ``Tensor[B, C, H, W]``."""
        return self._out((self.weights[..., None, None, None] * self.means).sum(1))

    @property
    def variance(self) -> Tensor:
        """Per-pixel posterior variance ``Tensor[B, C, H, W]``."""
        w = self.weights[..., None, None, None]
        second = (w * (self.component_variances() + self.means.pow(2))).sum(1)
        mean = (w * self.means).sum(1)
        return self._out(second - mean.pow(2))

    def quantiles(self, q: Tensor | list[float], iters: int = 60) -> Tensor:
        """Per-pixel marginal quantiles ``Tensor[L, B, C, H, W]`` (``[L, C, H, W]`` for one
        problem) of the posterior, at levels ``q: [L]`` in ``(0, 1)``, by bisection on each
        pixel's mixture-of-Gaussians CDF (to ``2^-iters`` of the bracket)."""
        q = torch.as_tensor(q, dtype=torch.float64, device=self.y.device).reshape(-1)
        if not ((q > 0) & (q < 1)).all():
            raise ValueError(f"quantile levels must lie in (0, 1), got {q.tolist()}")
        w = self.weights[..., None, None, None]  # [B, K, 1, 1, 1]
        sd = self.component_variances().sqrt().clamp_min(1e-12)
        lo = (self.means - 12 * sd).amin(1).expand(len(q), *self.means[:, 0].shape).clone()
        hi = (self.means + 12 * sd).amax(1).expand_as(lo).clone()
        target = q.reshape(-1, 1, 1, 1, 1)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            cdf = (w * torch.special.ndtr((mid[:, :, None] - self.means) / sd)).sum(2)
            below = cdf < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        out = 0.5 * (lo + hi)
        return out if self.batched else out[:, 0]

    def interval(self, level: float) -> tuple[Tensor, Tensor]:
        """The central per-pixel credible interval at ``level``: ``(low, high)``, each like :attr:`mean`."""
        lo, hi = self.quantiles([(1 - level) / 2, (1 + level) / 2])
        return lo, hi


class ImageMixtureProblem(InverseProblem):
    """An :class:`~posterior.InverseProblem` on an :class:`ImageMixturePrior` whose exact posterior
    (:class:`ImageMixturePosterior`) and evidence are computed without ``d x d`` matrices."""

    @property
    def has_exact_posterior(self) -> bool:
        return (
            self.gaussian
            and isinstance(self.operator, LinearOperator)
            and isinstance(self.prior, ImageMixturePrior)
        )

    def exact_posterior(self) -> ImageMixturePosterior:  # type: ignore[override]
        """The posterior of every problem, built once and cached (see :class:`ImageMixturePosterior`)."""
        if not self.has_exact_posterior:
            raise ValueError(
                "the exact posterior needs an ImageMixturePrior, a linear operator and Gaussian noise"
            )
        if (self.sigma <= 0).any():
            raise ValueError("the exact posterior of an image mixture needs noise_std > 0")
        cached = getattr(self, "_posterior", None)
        if cached is None:
            cached = ImageMixturePosterior(self.prior, self.operator, self.y_batch, self.sigma, self.batched)  # type: ignore[arg-type]
            self._posterior = cached
        return cached

    def exact_log_evidence(self) -> Tensor:
        """``log p(y)``: ``Tensor[B]``, or a scalar for one problem (float64)."""
        ev = self.exact_posterior().log_evidence
        return ev if self.batched else ev[0]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> InverseProblem:
        moved = super().to(device, dtype)
        if moved is self:
            return self
        out = ImageMixtureProblem(moved.prior, moved.operator, moved.y, moved.noise_std)
        out.truth = moved.truth
        return out


def image_mixture_prior(
    shape: tuple[int, int, int] = (1, 28, 28),
    num_components: int = 10,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    schedule: NoiseSchedule | None = None,
) -> ImageMixturePrior:
    """The prior of :func:`gmm_image`: weights ``propto 1 + U(0, 1)``; means drawn from a smooth
    Gaussian field (length scale ``H / 6`` pixels, standard deviation 0.5, channels correlated
    0.5); amplitudes ``U(0.15, 0.4)``; length scales ``U(1.5, 4) * H / 28`` pixels; white term
    0.05."""
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
    C, H, W = (int(s) for s in shape)
    check_count(num_components, "num_components")
    gen = torch.Generator().manual_seed(seed)
    weights = 1 + torch.rand(num_components, generator=gen, dtype=torch.float64)
    weights = weights / weights.sum()
    # smooth means: 0.5 * a draw of N(0, R_C kron K_H(H/6) kron K_W(W/6))
    factors = [
        torch.eye(C, dtype=torch.float64) * 0.5 + 0.5,
        rbf_correlation(H, H / 6),
        rbf_correlation(W, W / 6),
    ]
    roots = []
    for K in factors:
        g, Q = torch.linalg.eigh(K)
        roots.append(Q * g.clamp_min(0).sqrt())
    xi = torch.randn(num_components, C, H, W, generator=gen, dtype=torch.float64)
    means = 0.5 * torch.einsum("ca,hb,wd,kabd->kchw", roots[0], roots[1], roots[2], xi)
    amplitudes = 0.15 + 0.25 * torch.rand(num_components, generator=gen, dtype=torch.float64)
    lengths = (1.5 + 2.5 * torch.rand(num_components, generator=gen, dtype=torch.float64)) * H / 28
    dev = check_device(device)
    return ImageMixturePrior(
        weights, means.to(device=dev, dtype=dtype), amplitudes, lengths, 0.05, 0.5, schedule=schedule
    )


def _image_operator(
    name: str, shape: tuple[int, int, int], seed: int, device: torch.device | None
) -> LinearOperator:
    from posterior.operators.image import Inpainting, half_mask, random_mask
    from posterior.operators.linear import Identity
    from posterior.operators.separable import Blur, SuperResolution, gaussian_kernel

    if name == "inpaint":
        return Inpainting(half_mask(shape, "bottom", device=device))
    if name == "random-pixels":
        return Inpainting(random_mask(shape[1:], 0.5, seed=seed, device=device))
    if name == "sr2":
        return SuperResolution(2)
    if name == "blur":
        return Blur(gaussian_kernel(1.5, device=device))
    if name == "denoise":
        return Identity()
    raise ValueError(f"operator must be one of {', '.join(IMAGE_OPERATORS)}, got {name!r}")


def gmm_image(
    shape: tuple[int, int, int] = (1, 28, 28),
    operator: str = "inpaint",
    noise: float = 0.1,
    num_problems: int = 1,
    seed: int = 0,
    *,
    prior_seed: int = 0,
    num_components: int = 10,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    schedule: NoiseSchedule | None = None,
) -> ImageMixtureProblem:
    """``B = num_problems`` image problems with a known posterior.

    Args:
        shape: the image shape ``(C, H, W)``, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        operator: ``"inpaint"`` (bottom half hidden), ``"random-pixels"`` (a random half of the
            pixel positions observed, the same in every channel, drawn with ``prior_seed``),
            ``"sr2"`` (2x average pooling), ``"blur"`` (Gaussian, std 1.5 pixels, zero padding) or
            ``"denoise"`` (``A = I``).
        noise: the Gaussian noise std (positive).
        num_problems: ``B``; one problem is unbatched (``truth: [C, H, W]``).
        seed: draws the truths ``x_b`` from the prior and the noise.
        prior_seed: draws the prior (:func:`image_mixture_prior`) and the random mask.
        num_components, dtype (default float32), device, schedule: of the prior.

    ``problem.truth`` is ``Tensor[B, C, H, W]``; ``problem.exact_posterior()`` an
    :class:`ImageMixturePosterior` (draws, ``log_prob``, per-pixel quantiles);
    ``problem.exact_log_evidence()`` ``Tensor[B]``. Cost (one core): the prior builds in well under
    a second; the posterior takes three small eigendecompositions per component for ``inpaint``,
    ``sr2`` and ``denoise`` (any size), one ``m x m`` Cholesky per component for ``random-pixels``
    and ``blur`` (``m`` observed values; refused above 4,096).
    """
    if (
        isinstance(noise, bool)
        or not isinstance(noise, (int, float))
        or not (math.isfinite(noise) and noise > 0)
    ):
        raise ValueError(f"noise must be a positive number, got {noise!r}")
    check_count(num_problems, "num_problems")
    dev, dt = check_device(device), check_dtype(dtype) or torch.float32
    if operator not in IMAGE_OPERATORS:
        raise ValueError(f"operator must be one of {', '.join(IMAGE_OPERATORS)}, got {operator!r}")
    prior = image_mixture_prior(tuple(shape), num_components, prior_seed, dt, dev, schedule)
    op = _image_operator(operator, tuple(prior.event_shape), prior_seed, dev).bind(tuple(prior.event_shape))
    op = op.to(prior.device, dt)
    if kronecker_scales(op) is None and op.out_dim > DENSE_MAX_OBSERVED:
        raise ValueError(
            f"operator {operator!r} at shape {tuple(shape)} has no affordable exact posterior ({op.out_dim} "
            f"observed values need dense factors; at most {DENSE_MAX_OBSERVED}): use inpaint, sr2 or denoise"
        )
    gen = torch.Generator(prior.device).manual_seed(seed)
    x = prior.sample(num_problems, gen)
    clean = op.A(x)
    y = clean + noise * torch.randn(clean.shape, generator=gen, device=clean.device, dtype=clean.dtype)
    if num_problems == 1:
        problem = ImageMixtureProblem(prior, op, y[0], float(noise))
        problem.truth = x[0]
    else:
        problem = ImageMixtureProblem(prior, op, y, float(noise))
        problem.truth = x
    return problem
