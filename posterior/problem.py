"""An inverse problem ``y ~ p(y | A(x))`` (Gaussian noise by default) with a diffusion prior on ``x``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import SUPPORTED_DTYPES, UNSUPPORTED_DTYPE, cast_data, check_device, check_dtype
from posterior.distributions import GaussianMixture, whitened_normal_log_prob
from posterior.noise.base import NoiseModel
from posterior.noise.models import as_noise_model
from posterior.operators.base import LinearOperator, Operator
from posterior.operators.linear import as_operator
from posterior.priors.base import DiffusionPrior

__all__ = ["InverseProblem"]

_MISSING: object = object()  # noise not given


class InverseProblem:
    """A prior, a forward operator, observations and a noise model.

    Args:
        prior: a :class:`~posterior.priors.DiffusionPrior` on ``x: [*event_shape]``.
        operator: an operator from :mod:`posterior.operators`, a ``Tensor[m, d]`` matrix (or a
            NumPy array; converted to the prior's dtype and device), or a differentiable callable
            ``Tensor[n, *event_shape] -> Tensor[n, *obs_shape]``.
        y: ``Tensor[*obs_shape]``, or ``Tensor[B, *obs_shape]`` for ``B`` problems at once (or
            an array; converted to the prior's dtype and device, with a warning where values
            change beyond rounding).
        noise: the observation model ``p(y | A(x))``: a float or ``Tensor[B]`` (the standard
            deviation ``>= 0`` of Gaussian noise), or a noise model from :mod:`posterior.noise`
            (``Gaussian``, ``Poisson``, ``StudentT``, ``Laplace``, ``from_pyro``).
        noise_std: the former name of ``noise``, still accepted as a keyword.

    Attributes:
        y_batch: ``Tensor[B, *obs_shape]`` (``B = 1`` for a single problem).
        noise: the noise model, bound to this problem (its parameters ``Tensor[1]`` or ``[B]``).
        sigma: ``Tensor[B]``, the Gaussian noise level per problem (Gaussian noise only).
        batched: whether ``y`` carried a problem dimension.
    """

    def __init__(
        self,
        prior: DiffusionPrior,
        operator: Operator | Tensor,
        y: Tensor,
        noise: float | Tensor | NoiseModel = _MISSING,  # type: ignore[assignment]
        *,
        noise_std: float | Tensor = _MISSING,  # type: ignore[assignment]
    ) -> None:
        if not isinstance(prior, DiffusionPrior):
            raise TypeError(f"prior must be a DiffusionPrior, got {type(prior).__name__}")
        if (noise is _MISSING) == (noise_std is _MISSING):
            raise TypeError("pass the noise model (or Gaussian noise_std) once, as noise or noise_std")
        arg = "noise" if noise_std is _MISSING else "noise_std"
        model = as_noise_model(noise if noise_std is _MISSING else noise_std, arg)
        if prior.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"InverseProblem: the prior's dtype {prior.dtype} is not supported: {UNSUPPORTED_DTYPE}"
            )
        check_device(prior.device, "the prior's device")
        self.prior = prior
        if isinstance(operator, Tensor) or hasattr(operator, "__array__"):  # a plain matrix
            operator = cast_data(operator, prior.dtype, prior.device, "the operator matrix")
        self.operator = as_operator(operator).bind(tuple(prior.event_shape))
        self._check_operator_placement()

        y = cast_data(y, prior.dtype, prior.device, "y")
        if not torch.isfinite(y).all():
            raise ValueError("y contains NaN or inf")
        obs_shape = self._obs_shape()
        if tuple(y.shape) == obs_shape:
            self.batched, y_batch = False, y.unsqueeze(0)
        elif tuple(y.shape[1:]) == obs_shape and y.dim() == len(obs_shape) + 1:
            self.batched, y_batch = True, y
        else:
            raise ValueError(
                f"y has shape {list(y.shape)} but the operator maps x {list(prior.event_shape)} to "
                f"{list(obs_shape)}: pass y of shape {list(obs_shape)} "
                f"or [B, {', '.join(map(str, obs_shape))}]"
            )
        self.y, self.y_batch, self.obs_shape = y, y_batch, obs_shape

        self.noise = model.bind(self.batch_size, len(obs_shape), prior.dtype, prior.device)
        cleaned = self.noise.validate(y_batch)
        if cleaned is not None:  # e.g. counts rounded
            self.y, self.y_batch = (cleaned if self.batched else cleaned[0]), cleaned
        # what the caller passed: a float / tensor std for Gaussian noise, else the noise model
        self.noise_std = noise if noise_std is _MISSING else noise_std
        self.truth: Tensor | None = None  # the x behind y, when a builder knows it
        self._sigma = self.noise.gaussian_std

    @property
    def sigma(self) -> Tensor:
        """``Tensor[B]``: the standard deviation of Gaussian noise, per problem."""
        if self._sigma is None:
            raise ValueError(
                f"problem.sigma is the level of Gaussian noise; this problem's noise is {self.noise!r}: "
                "use problem.log_likelihood(x) or problem.noise"
            )
        return self._sigma

    @property
    def gaussian(self) -> bool:
        """Whether the noise is Gaussian (``problem.sigma`` exists)."""
        return self._sigma is not None

    # ----------------------------------------------------------------- validation helpers
    def _check_operator_placement(self) -> None:
        for t in self.operator.tensors():
            dev, dt = self.prior.device, self.prior.dtype
            if t.is_floating_point() and (t.device != dev or t.dtype != dt):
                fix = [f"device={str(dev)!r}"] * (t.device != dev) + [f"dtype={dt}"] * (t.dtype != dt)
                raise ValueError(
                    f"the operator holds a tensor with device {t.device} and dtype {t.dtype} but the "
                    f"prior has device {dev} and dtype {dt}: pass operator.to({', '.join(fix)})"
                )

    def _obs_shape(self) -> tuple[int, ...]:
        if self.operator.out_shape is not None:
            return tuple(self.operator.out_shape)
        return self._probe_operator()

    def _probe_operator(self) -> tuple[int, ...]:
        """The output shape of an operator without a declared one, checked to act per sample.

        The operator is called on a batch of two distinct inputs and on each alone: it must return
        a floating tensor with leading dim 2 whose rows are the single-input outputs (``x.sum()``,
        which mixes the batch, or an output without the batch dim is refused here, before it
        could give silently wrong samples).
        """
        d = math.prod(self.prior.event_shape)
        probe = torch.linspace(-0.5, 0.5, 2 * d, dtype=self.prior.dtype, device=self.prior.device)
        probe = probe.reshape(2, *self.prior.event_shape)
        op = self.operator
        try:
            out = op.A(probe)
            rows = [op.A(probe[i : i + 1]) for i in range(2)]
        except Exception as err:
            shape = ", ".join(map(str, self.prior.event_shape))
            raise ValueError(
                f"operator {op!r} failed on a batch of inputs [2, {shape}] ({type(err).__name__}: {err}); "
                "it must map Tensor[n, *event_shape] to Tensor[n, *obs_shape]"
            ) from err
        if not isinstance(out, Tensor) or not out.is_floating_point():
            raise ValueError(f"operator {op!r} must return a floating-point Tensor, got {_describe(out)}")
        if out.dim() < 1 or out.shape[0] != 2:
            raise ValueError(
                f"operator {op!r} must act per sample, Tensor[n, *event_shape] -> Tensor[n, *obs_shape]: "
                f"on a batch of 2 inputs it returned shape {list(out.shape)}"
            )
        rtol = torch.finfo(out.dtype).eps ** 0.5  # batched and single calls may round differently
        scale = float(out.detach().abs().nan_to_num(posinf=0.0, neginf=0.0).max()) if out.numel() else 0.0
        atol = rtol * (1 + scale)
        same = all(
            isinstance(r, Tensor)
            and r.shape == out[i : i + 1].shape
            and torch.allclose(r, out[i : i + 1], rtol=rtol, atol=atol, equal_nan=True)
            for i, r in enumerate(rows)
        )
        if not same:
            raise ValueError(
                f"operator {op!r} must act per sample: its output for a batch of 2 inputs differs from its "
                "outputs for each input alone (does it sum or mix over the batch dim?)"
            )
        return tuple(out.shape[1:])

    def require_linear(self, method: str, svd: bool = False) -> LinearOperator:
        """The operator, or a clear error if ``method`` needs a linear one (with an SVD)."""
        if not isinstance(self.operator, LinearOperator):
            raise ValueError(f"{method!r} needs a linear operator; {self.operator!r} is not linear")
        if svd:
            self.operator.require_svd(method)
        return self.operator

    def require_differentiable(self, method: str) -> None:
        """A clear error if ``method`` needs ``d A(x) / d x`` by autograd and the operator gives none.

        Built-in linear operators are differentiable; any other operator is called once on a
        batch of two inputs that require grad: it must keep the autograd graph (no ``.detach()``,
        ``torch.no_grad`` or round trip through numpy).
        """
        if isinstance(self.operator, LinearOperator):
            return
        x = torch.linspace(-0.5, 0.5, 2 * math.prod(self.event_shape), dtype=self.prior.dtype)
        x = x.to(self.prior.device).reshape(2, *self.event_shape).requires_grad_(True)
        how = ""
        try:
            with torch.enable_grad():
                out = self.operator.A(x)
                ok = isinstance(out, Tensor) and out.requires_grad
                if ok:
                    torch.autograd.grad(out.sum(), x, allow_unused=True)
        except Exception as err:  # e.g. numpy() on a tensor that requires grad
            ok, how = False, f" ({type(err).__name__}: {err})"
        if not ok:
            raise ValueError(
                f"{method!r} needs the gradient of the operator, but {self.operator!r} is not differentiable "
                f"by autograd{how}: write it with torch operations that keep the graph (no .detach(), "
                "torch.no_grad or numpy), or choose a gradient-free method"
            )

    def require_noise(self, method: str) -> None:
        """A clear error if ``method`` needs ``noise_std > 0`` (non-Gaussian noise always has some)."""
        if self._sigma is not None and (self._sigma <= 0).any():
            raise ValueError(f"{method!r} needs noise_std > 0")

    def select(self, start: int, stop: int) -> InverseProblem:
        """Problems ``start .. stop - 1`` of the batch, as a batched problem with the same prior,
        operator and noise model (``truth`` too, when known)."""
        if not 0 <= start < stop <= self.batch_size:
            raise ValueError(f"select needs 0 <= start < stop <= {self.batch_size}, got {start}, {stop}")
        sub = InverseProblem(
            self.prior, self.operator, self.y_batch[start:stop], self.noise.select(slice(start, stop))
        )
        if self.truth is not None:
            sub.truth = (self.truth if self.batched else self.truth[None])[start:stop]
        return sub

    def repeat(self, runs: int) -> InverseProblem:
        """Each problem ``runs`` times in a row: a batched problem of ``B * runs`` problems, row
        ``b * runs + r`` holding problem ``b`` (``truth`` too, when known). Independent runs of a
        sampler share one batched network call this way."""
        index = torch.arange(self.batch_size, device=self.y_batch.device).repeat_interleave(runs)
        sub = InverseProblem(self.prior, self.operator, self.y_batch[index], self.noise.select(index))
        if self.truth is not None:
            sub.truth = (self.truth if self.batched else self.truth[None])[index]
        return sub

    def require_gaussian(self, method: str) -> Tensor:
        """``problem.sigma`` (``Tensor[B]``), or a clear error if ``method`` needs Gaussian noise."""
        if self._sigma is None:
            raise ValueError(
                f"{method!r} needs Gaussian noise (its updates use linear-Gaussian closed forms); "
                f"this problem's noise is {self.noise!r}: use a method that takes any noise model, "
                "e.g. 'tds', 'mala' or 'dps'"
            )
        return self._sigma

    def noise_scale(self) -> Tensor:
        """``Tensor[B]``: ``sigma`` for Gaussian noise, else the root mean of the noise model's
        variance at ``y`` (on the forward model's scale): a typical noise level, for step sizes."""
        if self._sigma is not None:
            return self._sigma
        y = self.y_batch
        v = self.noise.variance(y, y).expand(y.shape).reshape(self.batch_size, -1)
        return v.mean(-1).sqrt()

    # ----------------------------------------------------------------- shapes
    @property
    def batch_size(self) -> int:
        """``B``, the number of problems (1 for a single problem)."""
        return self.y_batch.shape[0]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.prior.event_shape)

    @property
    def obs_dim(self) -> int:
        return math.prod(self.obs_shape)

    # ----------------------------------------------------------------- likelihood
    def forward(self, x: Tensor) -> Tensor:
        """``A(x)`` for particles ``x: Tensor[B, N, *event_shape]``; returns ``[B, N, *obs_shape]``."""
        B, N = x.shape[:2]
        return self.operator.A(x.reshape(B * N, *self.event_shape)).reshape(B, N, *self.obs_shape)

    def residual(self, x: Tensor) -> Tensor:
        """``y - A(x)`` for ``x: Tensor[B, N, *event_shape]``, flattened: ``Tensor[B, N, m]``."""
        r = self.y_batch.unsqueeze(1) - self.forward(x)
        return r.reshape(*x.shape[:2], -1)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` for ``x: Tensor[B, N, *event_shape]``; returns ``[B, N]``.

        ``problem.noise.log_prob(y, A(x))``: ``log N(y; A(x), sigma^2 I)`` for Gaussian noise.
        Differentiable in ``x``; ``-inf`` where ``x`` is impossible (e.g. a negative Poisson rate).
        """
        self.require_noise("log_likelihood")
        return self.noise.log_prob(self.y_batch.unsqueeze(1), self.forward(x))

    # ----------------------------------------------------------------- closed forms
    @property
    def has_exact_posterior(self) -> bool:
        """Whether :meth:`exact_posterior` and :meth:`exact_log_evidence` exist in closed form: a
        prior that is a Gaussian mixture (``prior.distribution``), a linear operator, Gaussian noise."""
        return (
            self.gaussian
            and self.prior.distribution is not None
            and isinstance(self.operator, LinearOperator)
            and not getattr(self.noise, "unknowns", None)
        )

    def _require_exact(self, what: str) -> tuple[GaussianMixture, Tensor]:
        if getattr(self.noise, "unknowns", None):
            raise ValueError(
                f"{what} depends on the unknown {', '.join(self.noise.unknowns)}: compute it at given "
                "values (posterior.parameters.Parameters(problem).instantiate)"
            )
        if not self.gaussian:
            raise ValueError(
                f"{what} is known in closed form only for Gaussian noise; this problem's noise is "
                f"{self.noise!r}"
            )
        mixture = self.prior.distribution
        if mixture is None or not isinstance(self.operator, LinearOperator):
            raise ValueError(
                f"{what} is known in closed form only for a Gaussian-mixture prior with a linear "
                f"operator and Gaussian noise; this problem has {type(self.prior).__name__} and "
                f"{self.operator!r}"
            )
        return mixture, self.operator.matrix(dtype=torch.float64, device=self.prior.device)

    def _marginal_terms(self) -> tuple[GaussianMixture, Tensor, Tensor, Tensor, Tensor]:
        """Prior mixture, ``A``, ``y`` and per-component ``S_k = A Sigma_k A^T + s^2 I`` (float64)."""
        prior, A = self._require_exact("the exact posterior")
        y = self.y_batch.reshape(self.batch_size, -1).double()  # [B, m]
        sig2 = self.sigma.double().pow(2)
        covs = prior.full_covs().double()  # [K, d, d]
        eye = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
        shared = bool((sig2 == sig2[0]).all())
        AS = A @ covs  # [K, m, d]
        S = AS @ A.T  # [K, m, m]
        S = S + (sig2[0] if shared else sig2[:, None, None, None]) * eye  # [K|B,K, m, m]
        return prior, A, y, S, covs

    def _marginal_cholesky(self, S: Tensor, caller: str) -> Tensor:
        """Cholesky factor of ``S_k = A Sigma_k A^T + s^2 I``, or a ``ValueError`` where it is
        singular: ``noise_std = 0`` with an operator of rank below its number of rows. Rounding can
        let the factorisation of an exactly singular ``S`` through with a pivot of order ``eps``,
        so a pivot below ``1e-10`` of the largest diagonal entry counts as singular there."""
        L, info = torch.linalg.cholesky_ex(S)
        if (self.sigma > 0).all():
            if (info != 0).any():
                torch.linalg.cholesky(S)  # raises torch's own error for a non-singular cause
            return L
        pivots = L.diagonal(dim1=-2, dim2=-1).pow(2)  # [..., m]
        scale = S.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True)
        if (info != 0).any() or (pivots <= 1e-10 * scale).any():
            raise ValueError(
                f"{caller}: with noise_std = 0 and an operator of rank below its number of rows, y "
                "has no density (A Sigma A^T is singular); build the problem with a tiny noise_std, "
                "or drop the redundant rows of the operator"
            )
        return L

    def exact_posterior(self) -> GaussianMixture:
        """The posterior ``p(x | y)`` as a :class:`~posterior.GaussianMixture`.

        Per component, a Kalman update: ``mu_k' = mu_k + G_k (y - A mu_k)``,
        ``Sigma_k' = Sigma_k - G_k A Sigma_k`` with ``G_k = Sigma_k A^T S_k^{-1}``; weights
        ``propto w_k N(y; A mu_k, S_k)``. Batch dims: ``[B]`` for batched problems, none otherwise.
        With ``noise_std = 0`` the posterior lives on ``{A x = y}``: its covariances are singular
        and, where they are not positive definite in floating point, a ``ValueError`` says so (a
        tiny ``noise_std`` gives a reference as close to it as wanted).
        """
        try:
            return self._exact_posterior()
        except torch.linalg.LinAlgError as err:
            if (self.sigma > 0).all():
                raise
            raise ValueError(
                "exact_posterior: with noise_std = 0 the posterior is singular (supported on A x = y) "
                "and has no Gaussian-mixture form here; build the problem with a tiny noise_std for "
                "a reference"
            ) from err

    def _exact_posterior(self) -> GaussianMixture:
        prior, A, y, S, covs = self._marginal_terms()
        mu = prior.means.double()  # [K, d]
        L = self._marginal_cholesky(S, "exact_posterior")  # [(B,) K, m, m]
        gain_t = torch.cholesky_solve(A @ covs, L)  # S^{-1} A Sigma: [(B,) K, m, d]
        resid = y[:, None, :] - (mu @ A.T)[None]  # [B, K, m]
        # mean update: mu + (S^{-1} A Sigma)^T resid
        means = mu[None] + torch.einsum("...kmd,...km->...kd", gain_t, resid)
        post_covs = covs - (A @ covs).transpose(-1, -2) @ gain_t
        post_covs = 0.5 * (post_covs + post_covs.transpose(-1, -2))
        logw = prior.weights.double().log()[None] + _log_normal(resid, L)  # [B, K]
        weights = torch.softmax(logw, dim=-1)
        if not self.batched:
            weights, means = weights[0], means[0]
            post_covs = post_covs[0] if post_covs.dim() == 4 else post_covs
        dt = self.prior.dtype
        return GaussianMixture(weights.to(dt), means.to(dt), post_covs.to(dt), validate=False)

    def exact_log_evidence(self) -> Tensor:
        """``log p(y) = log sum_k w_k N(y; A mu_k, A Sigma_k A^T + s^2 I)``: a scalar, or ``[B]``.

        With ``noise_std = 0`` and ``A Sigma_k A^T`` singular (``A`` of rank below its number of
        rows, e.g. repeated rows), ``y`` has no density: a ``ValueError`` says so.
        """
        prior, A, y, S, _ = self._marginal_terms()
        resid = y[:, None, :] - (prior.means.double() @ A.T)[None]
        L = self._marginal_cholesky(S, "exact_log_evidence")
        out = torch.logsumexp(prior.weights.double().log()[None] + _log_normal(resid, L), dim=-1)
        return out if self.batched else out[0]

    # ----------------------------------------------------------------- placement
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> InverseProblem:
        """This problem with its prior, operator, observations, noise and truth on ``device`` /
        ``dtype`` (``None``: unchanged); ``self`` when nothing moves. A network prior moves in
        place (``DiffusersPrior.to``); a mixture prior and the operator are copied."""
        dev, dt = check_device(device), check_dtype(dtype)
        if (dev is None or dev == self.prior.device) and dt in (None, self.prior.dtype):
            return self
        noise = self.noise_std
        if isinstance(noise, Tensor):
            noise = noise.to(device=dev, dtype=dt)
        moved = InverseProblem(
            self.prior.to(dev, dt), self.operator.to(dev, dt), self.y.to(device=dev, dtype=dt), noise
        )
        moved.truth = None if self.truth is None else self.truth.to(device=dev, dtype=dt)
        return moved

    def _noise_repr(self) -> str:
        if self._sigma is not None and not isinstance(self.noise_std, NoiseModel):
            return f"noise_std={self.noise_std}"
        return f"noise={self.noise!r}"

    def __repr__(self) -> str:
        batch = f", B={self.batch_size}" if self.batched else ""
        return (
            f"InverseProblem({type(self.prior).__name__} {list(self.event_shape)}, {self.operator!r}, "
            f"y {list(self.obs_shape)}{batch}, {self._noise_repr()})"
        )


def _describe(v: object) -> str:
    return f"a {v.dtype} Tensor" if isinstance(v, Tensor) else type(v).__name__


def _log_normal(resid: Tensor, L: Tensor) -> Tensor:
    """``log N(resid; 0, L L^T)`` for ``resid: [B, K, m]`` and ``L: [(B,) K, m, m]``; ``[B, K]``."""
    z = torch.linalg.solve_triangular(
        L.expand(*resid.shape[:2], *L.shape[-2:]), resid.unsqueeze(-1), upper=False
    )
    return whitened_normal_log_prob(z.squeeze(-1), L.diagonal(dim1=-2, dim2=-1).log().sum(-1))
