"""Blur and super-resolution: operators that act on each channel as ``Y = K_r X K_c^T``.

``vec(Y) = kron(K_r, K_c) vec(X)``, so their SVD is the Kronecker product of the SVDs of two
small 1-D matrices (a blur kernel must be rank one, i.e. separable, as a Gaussian is; otherwise a
dense SVD is used for small images only), applied as functions so that SVD-based samplers never
form a dense ``m x d`` matrix (Kawar et al., 2022, "Denoising Diffusion Restoration Models").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from posterior._utils import check_device, check_positive_int
from posterior.operators.base import LinearOperator
from posterior.operators.image import _dims
from posterior.operators.parametric import OperatorFamily
from posterior.parameters import Unknown, check_positive_support

__all__ = ["Blur", "SuperResolution", "gaussian_kernel"]

#: Largest number of pixels per channel for which :class:`Blur` falls back to a dense SVD.
DENSE_SVD_MAX_PIXELS = 4096

_Key = tuple[torch.dtype, torch.device]


# --------------------------------------------------------------------------------------- per-channel SVD
class _ChannelSVD:
    """SVD of an operator acting identically on each of ``C`` channels, as functions.

    A per-channel map is given either as ``kron(M_r, M_c)`` (``Y = M_r X M_c^T``) or as a dense
    matrix on flattened pixels. Per channel, the singular coordinates of the input (``V^T x``)
    and output (``U^T y``) are indexed ``0..P_in-1`` / ``0..P_out-1``; the ``k``-th singular value
    pairs input coordinate ``core_in[k]`` with output coordinate ``core_out[k]``. Globally the
    pairs of all channels are sorted by decreasing singular value and put first, then the
    remaining coordinates of each side (zero singular values), per the convention of
    :class:`~posterior.operators.base.LinearOperator`. Factors are computed once in float64 and
    cached per dtype and device.
    """

    def __init__(
        self,
        channels: int,
        in_hw: tuple[int, int],
        out_hw: tuple[int, int],
        kron: tuple[Tensor, Tensor] | None = None,
        dense: Tensor | None = None,
    ) -> None:
        self.C, self.in_hw, self.out_hw = channels, in_hw, out_hw
        self.kron = kron is not None
        if kron is not None:
            Mr, Mc = (m.double() for m in kron)
            Ur, sr, Vrh = torch.linalg.svd(Mr, full_matrices=True)
            Uc, sc, Vch = torch.linalg.svd(Mc, full_matrices=True)
            self._f64 = (Ur, Vrh.T, Uc, Vch.T)
            kr, kc = sr.numel(), sc.numel()
            ii, jj = torch.meshgrid(torch.arange(kr), torch.arange(kc), indexing="ij")
            s_ch = (sr[:, None] * sc[None, :]).reshape(-1)
            core_in = (ii * in_hw[1] + jj).reshape(-1)
            core_out = (ii * out_hw[1] + jj).reshape(-1)
        else:
            U, s_ch, Vh = torch.linalg.svd(dense.double(), full_matrices=True)
            self._f64 = (U, Vh.T)
            core_in = core_out = torch.arange(s_ch.numel())
        P_in, P_out = math.prod(in_hw), math.prod(out_hw)
        C = channels
        # global coordinates c * P + core, all channels, sorted by decreasing singular value
        s_all = s_ch.repeat(C)
        offs = torch.arange(C).repeat_interleave(s_ch.numel())
        order = torch.sort(s_all, descending=True, stable=True).indices
        g_in = (offs * P_in + core_in.repeat(C))[order]
        g_out = (offs * P_out + core_out.repeat(C))[order]
        d, m = C * P_in, C * P_out
        r = min(m, d)
        self.singular_values = torch.cat([s_all[order], s_all.new_zeros(r - s_all.numel())])
        self.perm_in = _complete(g_in, d)  # singular coordinate k <- flat coordinate perm_in[k]
        self.perm_out = _complete(g_out, m)
        self.inv_in = torch.argsort(self.perm_in)
        self.inv_out = torch.argsort(self.perm_out)
        self._cache: dict[_Key, tuple[Tensor, ...]] = {}

    def _factors(self, like: Tensor) -> tuple[Tensor, ...]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = tuple(f.to(dtype=like.dtype, device=like.device) for f in self._f64)
            self._cache[key] += tuple(
                p.to(like.device) for p in (self.perm_in, self.inv_in, self.perm_out, self.inv_out)
            )
        return self._cache[key]

    # channel-wise basis changes: [n, C, h, w] <-> [n, C, h', w'] (kron) or [n, C, P] (dense)
    def _to_coeffs(self, x: Tensor, left: Tensor, right: Tensor | None) -> Tensor:
        if right is not None:
            return left.T @ x @ right  # L^T X R per channel
        return x.reshape(*x.shape[:2], -1) @ left  # (L^T x)^T for each channel

    def _from_coeffs(self, z: Tensor, left: Tensor, right: Tensor | None, hw: tuple[int, int]) -> Tensor:
        if right is not None:
            return left @ z @ right.T
        return (z @ left.T).reshape(*z.shape[:2], *hw)

    def V_adjoint(self, x: Tensor) -> Tensor:
        f = self._factors(x)
        left, right = (f[1], f[3]) if self.kron else (f[1], None)
        z = self._to_coeffs(x, left, right).reshape(x.shape[0], -1)
        return z.index_select(1, f[-4])

    def V(self, z: Tensor) -> Tensor:
        f = self._factors(z)
        left, right = (f[1], f[3]) if self.kron else (f[1], None)
        z = z.index_select(1, f[-3]).reshape(z.shape[0], self.C, *(self.in_hw if self.kron else (-1,)))
        return self._from_coeffs(z, left, right, self.in_hw)

    def U_adjoint(self, y: Tensor) -> Tensor:
        f = self._factors(y)
        left, right = (f[0], f[2]) if self.kron else (f[0], None)
        z = self._to_coeffs(y, left, right).reshape(y.shape[0], -1)
        return z.index_select(1, f[-2])

    def U(self, z: Tensor) -> Tensor:
        f = self._factors(z)
        left, right = (f[0], f[2]) if self.kron else (f[0], None)
        z = z.index_select(1, f[-1]).reshape(z.shape[0], self.C, *(self.out_hw if self.kron else (-1,)))
        return self._from_coeffs(z, left, right, self.out_hw)


def _complete(first: Tensor, n: int) -> Tensor:
    """A permutation of ``0..n-1`` starting with ``first`` (distinct), then the others in order."""
    taken = torch.zeros(n, dtype=torch.bool)
    taken[first] = True
    return torch.cat([first, (~taken).nonzero().squeeze(1)])


class _ImageOperator(LinearOperator):
    """Shared plumbing of per-channel image operators whose image size is learnt at ``bind``."""

    def _image_shape(self, shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
        if shape is None:
            return None
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise ValueError(f"{type(self).__name__} acts on images [C, H, W], got shape {list(shape)}")
        return shape  # type: ignore[return-value]

    def _check_x(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a batch of images [n, C, H, W], got {list(x.shape)}"
            )
        if self.in_shape is not None and tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [n, {_dims(self.in_shape)}], got {list(x.shape)}"
            )

    def _check_y(self, y: Tensor) -> None:
        if y.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a batch of images [n, C, h, w], got {list(y.shape)}"
            )
        if self.out_shape is not None and tuple(y.shape[1:]) != self.out_shape:
            raise ValueError(
                f"{type(self).__name__} expects y of shape [n, {_dims(self.out_shape)}], got {list(y.shape)}"
            )

    def _svd_obj(self) -> _ChannelSVD:
        if self.in_shape is None:
            raise ValueError(
                f"{type(self).__name__} needs the image shape for its SVD: pass shape=(C, H, W) or bind it"
            )
        if self._svd is None:
            self._svd = self._make_svd()
        return self._svd

    def _make_svd(self) -> _ChannelSVD:
        raise NotImplementedError

    def _row_col(self) -> tuple[Tensor, Tensor] | None:
        """``(M_r [h, H], M_c [w, W])`` with ``Y = M_r X M_c^T`` per channel (float64), or ``None``."""
        return None

    def kronecker_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(I_C, M_r, M_c)`` where each channel is ``Y = M_r X M_c^T``; ``None`` otherwise."""
        rc = None if self.in_shape is None else self._row_col()
        return None if rc is None else (torch.eye(self.in_shape[0], dtype=torch.float64), *rc)

    def _placement(self) -> tuple[torch.dtype, torch.device]:
        """Dtype and device of :attr:`singular_values` (the operator's own tensors)."""
        return torch.get_default_dtype(), torch.device("cpu")

    @property
    def singular_values(self) -> Tensor:
        dtype, device = self._placement()
        return self._svd_obj().singular_values.to(dtype=dtype, device=device)

    # the base versions with the singular values moved to the input's device and dtype
    def A_pinv(self, y: Tensor) -> Tensor:
        s = self._svd_obj().singular_values.to(dtype=y.dtype, device=y.device)
        r = s.numel()
        inv = torch.where(s > 0, 1 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        z = torch.zeros(y.shape[0], self.in_dim, dtype=y.dtype, device=y.device)
        z[:, :r] = self.U_adjoint(y)[:, :r] * inv
        return self.V(z)

    def A_via_svd(self, x: Tensor) -> Tensor:
        s = self._svd_obj().singular_values.to(dtype=x.dtype, device=x.device)
        r = s.numel()
        z = torch.zeros(x.shape[0], self.out_dim, dtype=x.dtype, device=x.device)
        z[:, :r] = s * self.V_adjoint(x)[:, :r]
        return self.U(z)

    def V_adjoint(self, x: Tensor) -> Tensor:
        self._check_x(x)
        return self._svd_obj().V_adjoint(x)

    def V(self, z: Tensor) -> Tensor:
        return self._svd_obj().V(z)

    def U_adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return self._svd_obj().U_adjoint(y)

    def U(self, z: Tensor) -> Tensor:
        return self._svd_obj().U(z)


# --------------------------------------------------------------------------------------- blur
def gaussian_kernel(
    sigma: float,
    size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A normalised 2-D Gaussian kernel ``Tensor[size, size]``, ``size = 2 ceil(3 sigma) + 1`` by default."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the kernel size must be a positive odd number, got {size}")
    g = torch.exp(-0.5 * (torch.arange(size, dtype=torch.float64) - (size - 1) / 2).pow(2) / sigma**2)
    g = g / g.sum()
    return torch.outer(g, g).to(dtype=dtype, device=check_device(device))


def _conv_matrix(taps: Tensor, n: int) -> Tensor:
    """The ``n x n`` matrix of a zero-padded 'same' 1-D cross-correlation with odd ``taps``:
    ``M[i, i'] = taps[i' - i + p]``, ``p = len(taps) // 2``."""
    p = taps.numel() // 2
    idx = torch.arange(n)
    off = idx[None, :] - idx[:, None] + p
    valid = (off >= 0) & (off < taps.numel())
    return torch.where(valid, taps[off.clamp(0, taps.numel() - 1)], taps.new_zeros(()))


class Blur(_ImageOperator):
    """Zero-padded 'same' convolution of each channel with ``kernel`` (a blur).

    Args:
        kernel: ``Tensor[kh, kw]`` with odd sizes, e.g. :func:`gaussian_kernel` (or use
            :meth:`Blur.gaussian`). ``A`` is a cross-correlation (``torch.conv2d``); its exact
            adjoint is the transposed convolution.
        shape: the image shape ``(C, H, W)``; taken from the prior when the problem is built.

    SVD: a rank-one (separable) kernel ``k = a b^T`` acts per channel as ``Y = K_a X K_b^T`` with
    1-D Toeplitz matrices ``K_a [H, H]``, ``K_b [W, W]``, so ``A = kron(K_a, K_b)`` per channel and
    its SVD is the product of two small SVDs. Other kernels get a dense SVD for images of at most
    :data:`DENSE_SVD_MAX_PIXELS` pixels per channel; larger ones have no SVD (``has_svd`` is false).
    """

    def __init__(self, kernel: Tensor, shape: tuple[int, ...] | None = None) -> None:
        kernel = torch.as_tensor(kernel)
        if kernel.dim() != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise ValueError(
                f"a blur kernel is a 2-D Tensor[kh, kw] with odd sizes, got shape {list(kernel.shape)}"
            )
        if not kernel.is_floating_point():
            kernel = kernel.float()
        if not torch.isfinite(kernel).all():
            raise ValueError("the blur kernel contains NaN or inf")
        self.kernel = kernel
        self.in_shape = self.out_shape = self._image_shape(shape)
        # rank-one factorisation k = a b^T (relative tolerance on the second singular value)
        u, s, vh = torch.linalg.svd(kernel.double().cpu())
        self.rank_one = bool(s.numel() == 1 or s[1] <= 1e-6 * s[0])
        self._taps = (u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()) if self.rank_one else None
        small = self.in_shape is not None and self.in_shape[1] * self.in_shape[2] <= DENSE_SVD_MAX_PIXELS
        self.has_svd = self.rank_one or small
        self._svd: _ChannelSVD | None = None

    @classmethod
    def gaussian(
        cls, sigma: float | Unknown, size: int | None = None, shape: tuple[int, ...] | None = None, **kw
    ) -> Blur | OperatorFamily:
        """A Gaussian blur of standard deviation ``sigma`` pixels (see :func:`gaussian_kernel`).
        An unknown ``sigma`` (:class:`~posterior.Unknown`, a prior on ``(0, inf)``) gives the
        family of these blurs over its parameter ``width``, for the joint samplers."""
        if isinstance(sigma, Unknown):
            check_positive_support(sigma, "Blur.gaussian: sigma")

            def gaussian_blur(width: float) -> Blur:
                return cls(gaussian_kernel(width, size, **kw), shape)

            return OperatorFamily(gaussian_blur, shape, width=sigma)
        return cls(gaussian_kernel(sigma, size, **kw), shape)

    def _placement(self) -> tuple[torch.dtype, torch.device]:
        return self.kernel.dtype, self.kernel.device

    def tensors(self) -> list[Tensor]:
        return [self.kernel]

    def bind(self, event_shape: tuple[int, ...]) -> Blur:
        if self.in_shape is None:
            return Blur(self.kernel, self._image_shape(tuple(event_shape)))
        return super().bind(event_shape)  # type: ignore[return-value]

    def _padding(self) -> tuple[int, int]:
        return self.kernel.shape[0] // 2, self.kernel.shape[1] // 2

    def A(self, x: Tensor) -> Tensor:
        self._check_x(x)
        n, C, H, W = x.shape
        k = self.kernel.to(dtype=x.dtype, device=x.device)[None, None]
        return F.conv2d(x.reshape(n * C, 1, H, W), k, padding=self._padding()).reshape(n, C, H, W)

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        n, C, H, W = y.shape
        k = self.kernel.to(dtype=y.dtype, device=y.device)[None, None]
        return F.conv_transpose2d(y.reshape(n * C, 1, H, W), k, padding=self._padding()).reshape(n, C, H, W)

    def _row_col(self) -> tuple[Tensor, Tensor] | None:
        if not self.rank_one:
            return None
        a, b = self._taps
        return _conv_matrix(a, self.in_shape[1]), _conv_matrix(b, self.in_shape[2])

    def _make_svd(self) -> _ChannelSVD:
        C, H, W = self.in_shape
        if self.rank_one:
            return _ChannelSVD(C, (H, W), (H, W), kron=self._row_col())
        if H * W > DENSE_SVD_MAX_PIXELS:
            raise ValueError(
                f"Blur has an SVD only for a rank-one (separable) kernel, or a dense one for images of at "
                f"most {DENSE_SVD_MAX_PIXELS} pixels per channel; this kernel is not separable and the "
                f"image is {H}x{W}"
            )
        eye = torch.eye(H * W, dtype=torch.float64, device=self.kernel.device).reshape(H * W, 1, H, W)
        k = self.kernel.double()[None, None]
        dense = F.conv2d(eye, k, padding=self._padding()).reshape(H * W, H * W).T  # columns A e_j
        return _ChannelSVD(C, (H, W), (H, W), dense=dense.cpu())

    def __repr__(self) -> str:
        shape = f", {list(self.in_shape)}" if self.in_shape else ""
        return f"Blur(kernel {list(self.kernel.shape)}{shape})"


# --------------------------------------------------------------------------------------- super-resolution
class SuperResolution(_ImageOperator):
    """Average pooling over ``factor x factor`` blocks: ``[n, C, H, W] -> [n, C, H/f, W/f]``.

    Args:
        factor: the downsampling factor ``f >= 1``; ``H`` and ``W`` must be multiples of it.
        shape: the image shape ``(C, H, W)``; taken from the prior when the problem is built.

    Per channel ``Y = P_H X P_W^T`` with ``P_n = kron(I_{n/f}, 1_f^T / f)``, so the SVD is the
    Kronecker product of the SVDs of ``P_H`` and ``P_W`` (all singular values ``1/f``). The adjoint
    copies each low-resolution pixel into its block, divided by ``f^2``.
    """

    def __init__(self, factor: int, shape: tuple[int, ...] | None = None) -> None:
        check_positive_int(factor, "factor")
        self.factor = factor
        self._svd: _ChannelSVD | None = None
        self.in_shape = self._image_shape(shape)
        self.out_shape = None
        if self.in_shape is not None:
            C, H, W = self.in_shape
            if H % factor or W % factor:
                raise ValueError(
                    f"SuperResolution({factor}) needs H and W divisible by {factor}, got {H}x{W}"
                )
            self.out_shape = (C, H // factor, W // factor)

    def bind(self, event_shape: tuple[int, ...]) -> SuperResolution:
        if self.in_shape is None:
            return SuperResolution(self.factor, tuple(event_shape))
        return super().bind(event_shape)  # type: ignore[return-value]

    def A(self, x: Tensor) -> Tensor:
        self._check_x(x)
        f = self.factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"SuperResolution({f}) needs H and W divisible by {f}, got {list(x.shape[-2:])}")
        return F.avg_pool2d(x, f) if f > 1 else x

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / f**2

    def _row_col(self) -> tuple[Tensor, Tensor]:
        f = self.factor

        def pool(n: int) -> Tensor:
            return torch.kron(
                torch.eye(n // f, dtype=torch.float64), torch.full((1, f), 1.0 / f, dtype=torch.float64)
            )

        return pool(self.in_shape[1]), pool(self.in_shape[2])

    def _make_svd(self) -> _ChannelSVD:
        C, H, W = self.in_shape
        f = self.factor
        return _ChannelSVD(C, (H, W), (H // f, W // f), kron=self._row_col())

    def __repr__(self) -> str:
        shape = f", {list(self.in_shape)}" if self.in_shape else ""
        return f"SuperResolution({self.factor}{shape})"
