"""Image operators on ``[C, H, W]`` tensors: masks and inpainting (blur and super-resolution are in
:mod:`posterior.operators.separable`).

All act on a leading batch dimension (``op.A(x[None])`` for one image) and carry an exact adjoint
and a singular value decomposition applied as functions, so that SVD-based samplers (MCGdiff,
DDRM, PiGDM; Kawar et al., 2022, "Denoising Diffusion Restoration Models") never form a dense
``m x d`` matrix:

- :class:`Inpainting` keeps the observed pixels: ``U = I``, ``S = 1``, ``V`` a permutation.
- :class:`~posterior.operators.separable.Blur` (zero-padded 'same' convolution) and
  :class:`~posterior.operators.separable.SuperResolution` (average pooling) act on each channel
  as ``Y = K_r X K_c^T`` (see that module).

Denoising is :class:`~posterior.operators.linear.Identity`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from posterior._utils import check_device
from posterior.operators.base import LinearOperator

__all__ = ["Inpainting", "box_mask", "half_mask", "random_mask"]


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


# --------------------------------------------------------------------------------------- masks
def _mask_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(f"a mask shape is (H, W) or (C, H, W) with positive sizes, got {shape}")
    return shape


def box_mask(
    shape: tuple[int, ...],
    top: int,
    left: int,
    height: int,
    width: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """A ``BoolTensor[*shape]`` observing every pixel but the box ``[top:top+height, left:left+width]``.

    ``shape`` is ``(H, W)`` or ``(C, H, W)`` (the box is hidden in every channel).
    """
    shape = _mask_shape(shape)
    H, W = shape[-2:]
    if height < 1 or width < 1 or not (0 <= top and top + height <= H and 0 <= left and left + width <= W):
        raise ValueError(
            f"the box top={top}, left={left}, height={height}, width={width} must lie inside {H}x{W}"
        )
    mask = torch.ones(shape, dtype=torch.bool, device=check_device(device))
    mask[..., top : top + height, left : left + width] = False
    return mask


def half_mask(
    shape: tuple[int, ...], hide: str = "bottom", device: torch.device | str | None = None
) -> Tensor:
    """A ``BoolTensor[*shape]`` observing one half of the image; ``hide`` in top/bottom/left/right."""
    shape = _mask_shape(shape)
    H, W = shape[-2:]
    boxes = {
        "bottom": (H // 2, 0, H - H // 2, W),
        "top": (0, 0, H // 2, W),
        "right": (0, W // 2, H, W - W // 2),
        "left": (0, 0, H, W // 2),
    }
    if hide not in boxes:
        raise ValueError(f"hide must be one of {sorted(boxes)}, got {hide!r}")
    return box_mask(shape, *boxes[hide], device=device)


def random_mask(
    shape: tuple[int, ...],
    observed_fraction: float,
    seed: int | torch.Generator = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """A ``BoolTensor[*shape]`` observing ``round(observed_fraction * numel)`` pixels drawn at random.

    With ``shape = (H, W)`` the same pixels are observed in every channel. Reproducible by ``seed``.
    """
    shape = _mask_shape(shape)
    device = check_device(device)
    if not 0 < observed_fraction <= 1:
        raise ValueError(f"observed_fraction must be in (0, 1], got {observed_fraction}")
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    n = math.prod(shape)
    k = max(1, round(observed_fraction * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:k]] = True
    return mask.reshape(shape).to(device)


# --------------------------------------------------------------------------------------- inpainting
class Inpainting(LinearOperator):
    """Observe the pixels where ``mask`` is true: ``A(x) = x[mask]``, a vector ``[m]``.

    Args:
        mask: ``[C, H, W]`` or ``[H, W]`` (shared by all channels), bool or 0/1 values.

    ``A: [n, C, H, W] -> [n, m]`` with the observed pixels in flat (channel, row, column) order;
    the adjoint scatters them back into a zero image. SVD: ``U = I_m``, ``S = 1``, ``V^T`` the
    permutation listing the observed pixels first, then the hidden ones.
    """

    def __init__(self, mask: Tensor) -> None:
        mask = torch.as_tensor(mask)
        if mask.dim() not in (2, 3):
            raise ValueError(f"an inpainting mask has shape [H, W] or [C, H, W], got {list(mask.shape)}")
        if mask.dtype != torch.bool:
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("an inpainting mask must be boolean or hold only 0 and 1")
            mask = mask != 0
        if not mask.any():
            raise ValueError("the inpainting mask observes no pixel")
        self.mask = mask
        if mask.dim() == 3:
            self.in_shape = tuple(mask.shape)
            flat = mask.reshape(-1)
            self.observed = flat.nonzero().squeeze(1)  # LongTensor[m]
            # observed pixels first, then hidden ones: the right singular basis
            self.perm = torch.cat([self.observed, (~flat).nonzero().squeeze(1)])
            self.inv_perm = torch.argsort(self.perm)
            self.out_shape = (self.observed.numel(),)
        else:  # [H, W]: the channel count is learnt from the prior (bind)
            self.in_shape = self.out_shape = None

    def bind(self, event_shape: tuple[int, ...]) -> Inpainting:
        event_shape = tuple(event_shape)
        if self.in_shape is None:
            if len(event_shape) != 3 or event_shape[1:] != tuple(self.mask.shape):
                raise ValueError(
                    f"an inpainting mask of shape {list(self.mask.shape)} needs images [C, "
                    f"{_dims(self.mask.shape)}], the prior draws {list(event_shape)}"
                )
            return Inpainting(self.mask.expand(event_shape))
        if event_shape != self.in_shape:
            raise ValueError(
                f"the inpainting mask has shape {list(self.in_shape)} but the prior draws images of shape "
                f"{list(event_shape)}"
            )
        return self

    def _check(self, x: Tensor) -> None:
        self._require_bound()
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"Inpainting expects x of shape [n, {_dims(self.in_shape)}], got {list(x.shape)}"
            )

    def A(self, x: Tensor) -> Tensor:
        if self.in_shape is None:  # unbound [H, W] mask: observe the same pixels in every channel
            if tuple(x.shape[-2:]) != tuple(self.mask.shape) or x.dim() != 4:
                raise ValueError(
                    f"Inpainting expects x of shape [n, C, {_dims(self.mask.shape)}], got {list(x.shape)}"
                )
            return self.bind(tuple(x.shape[1:])).A(x)
        self._check(x)
        return x.reshape(x.shape[0], -1).index_select(1, self.observed.to(x.device))

    def A_adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        out = y.new_zeros(y.shape[0], self.in_dim)
        return out.index_copy(1, self.observed.to(y.device), y).reshape(y.shape[0], *self.in_shape)

    def _check_y(self, y: Tensor) -> None:
        self._require_bound()
        if tuple(y.shape[1:]) != self.out_shape:
            raise ValueError(f"Inpainting expects y of shape [n, {self.out_shape[0]}], got {list(y.shape)}")

    def _require_bound(self) -> None:
        if self.in_shape is None:
            raise ValueError("bind the [H, W] mask to an image shape first: op.bind((C, H, W))")

    @property
    def singular_values(self) -> Tensor:
        self._require_bound()
        return torch.ones(self.out_shape[0], device=self.mask.device)

    def V_adjoint(self, x: Tensor) -> Tensor:
        self._check(x)
        return x.reshape(x.shape[0], -1).index_select(1, self.perm.to(x.device))

    def V(self, z: Tensor) -> Tensor:
        self._require_bound()
        if z.dim() != 2 or z.shape[1] != self.in_dim:
            raise ValueError(f"Inpainting.V expects z of shape [n, {self.in_dim}], got {list(z.shape)}")
        return z.index_select(1, self.inv_perm.to(z.device)).reshape(z.shape[0], *self.in_shape)

    def U_adjoint(self, y: Tensor) -> Tensor:
        self._check_y(y)
        return y

    def U(self, z: Tensor) -> Tensor:
        return z

    def A_pinv(self, y: Tensor) -> Tensor:
        """``A^+ = A^T`` (the observed pixels put back, zeros elsewhere)."""
        return self.A_adjoint(y)

    def kronecker_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Row selections ``(S_C, S_H, S_W)`` when the mask is a product of a channel, a row and a
        column mask (e.g. a half of the image hidden); ``None`` otherwise (e.g. random pixels)."""
        if self.in_shape is None or len(self.in_shape) != 3:
            return None
        mask = self.mask.cpu()
        picks = [mask.any(dims) for dims in ((1, 2), (0, 2), (0, 1))]
        if not torch.equal(picks[0][:, None, None] & picks[1][None, :, None] & picks[2][None, None, :], mask):
            return None
        return tuple(torch.eye(p.numel(), dtype=torch.float64)[p] for p in picks)  # type: ignore[return-value]

    def __repr__(self) -> str:
        if self.in_shape is None:
            return f"Inpainting(mask {list(self.mask.shape)}, {int(self.mask.sum())} observed per channel)"
        return f"Inpainting({self.out_shape[0]} of {self.in_dim} pixels observed)"
