"""Images in and out: files (PNG, JPEG, ... through Pillow) to ``Tensor[C, H, W]`` in ``[-1, 1]``,
the range the image priors draw in, and back.

>>> x = ps.io.load_image("photo.png")                    # Tensor[C, H, W], as stored
>>> x = ps.io.load_image("photo.png", shape=(1, 28, 28))  # grayscale, resized to 28 x 28
>>> ps.io.save_image(result.mean(), "mean.png")

Pixel ``v`` of an 8-bit image maps to ``v / 127.5 - 1`` (16-bit: ``v / 32767.5 - 1``; 32-bit
integers, e.g. TIFF: ``2 v / (2^31 - 1) - 1``), so that ``0`` is ``-1`` and the brightest value is
``1``; :func:`save_image` rounds back to 8 bits, and an 8-bit image read, saved and read again is
unchanged. A file's EXIF orientation (phone photos) is applied, so the image reads as displayed.
"""

from __future__ import annotations

import operator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_image", "save_image"]

# Pillow modes read as one channel, and the largest value of the integer ones.
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
#: the largest 32-bit integer pixel (Pillow's mode "I" holds signed 32-bit integers)
_INT32_MAX = 2**31 - 1


def _shape(shape: tuple[int, ...] | None) -> tuple[int | None, tuple[int, int] | None]:
    """``(channels or None, (H, W) or None)`` from ``None``, ``(H, W)`` or ``(C, H, W)``."""
    if shape is None:
        return None, None
    bad = ValueError(f"shape must be (H, W) or (C, H, W) of positive integers, got {shape!r}")
    try:  # integers only: 4.5 (or True) is not a size
        dims = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise bad from None
    if any(isinstance(s, bool) for s in shape):
        raise bad
    if len(dims) not in (2, 3) or any(s < 1 for s in dims):
        raise bad
    if len(dims) == 3:
        if dims[0] not in (1, 3):
            raise ValueError(f"shape: images have 1 (grayscale) or 3 (RGB) channels, got {dims[0]}")
        return dims[0], dims[1:]
    return None, dims  # type: ignore[return-value]


def load_image(path: str | Path, shape: tuple[int, ...] | None = None) -> Tensor:
    """Read an image file as ``Tensor[C, H, W]`` (float32) in ``[-1, 1]``.

    Args:
        path: any format Pillow reads (PNG, JPEG, BMP, TIFF, ...); 8- or 16-bit.
        shape: ``None`` keeps the file as it is: grayscale gives ``C = 1``, colour ``C = 3`` (an
            alpha channel is dropped). ``(H, W)`` resizes to ``H x W`` (bicubic; only when the size
            differs); ``(C, H, W)`` also converts to ``C`` channels (1: luminance ITU-R 601-2, the
            weights Pillow uses; 3: RGB, grayscale repeated).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an image Pillow can read, or ``shape`` is malformed.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    channels, size = _shape(shape)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {str(path)!r}")
    try:
        with Image.open(path) as img:
            img.load()
            fmt, img = img.format, ImageOps.exif_transpose(img)  # as displayed
            mode = img.mode
            if mode in _SIXTEEN_BIT or (mode == "I" and fmt == "PNG"):  # older Pillow: 16-bit PNG as "I"
                arr = np.asarray(img, dtype=np.float64) / 65535.0  # [H, W]
            elif mode == "I":
                arr = np.asarray(img, dtype=np.float64)
                if arr.min() < 0:
                    raise ValueError(f"{str(path)!r} holds negative 32-bit pixels, of unknown range")
                arr = arr / _INT32_MAX
            elif mode == "F":
                raise ValueError(f"{str(path)!r} holds floating-point pixels of unknown range")
            else:
                rgb = img.convert("L" if mode in _GRAY_MODES else "RGB")
                arr = np.asarray(rgb, dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as err:  # Pillow's errors for a bad file
        raise ValueError(f"cannot read {str(path)!r} as an image: {err}") from None
    x = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)  # [C, H, W] in [0, 1]
    if channels == 1 and x.shape[0] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype)[:, None, None]).sum(0, keepdim=True)
    elif channels == 3 and x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    if size is not None and tuple(x.shape[1:]) != size:
        # per channel, in float: no rounding to 8 bits before the resize
        x = torch.stack(
            [
                torch.from_numpy(
                    np.asarray(
                        Image.fromarray(c.float().numpy()).resize(
                            (size[1], size[0]), Image.Resampling.BICUBIC
                        )
                    ).astype(np.float64)
                )
                for c in x
            ]
        ).clamp(0, 1)
    return (x * 2 - 1).float().contiguous()


def save_image(x: Tensor, path: str | Path) -> Path:
    """Write ``x`` (values in ``[-1, 1]``, clipped) as an 8-bit image; the format follows the suffix.

    Args:
        x: ``Tensor[C, H, W]`` with ``C`` 1 (grayscale) or 3 (RGB), or ``Tensor[H, W]``; numpy
            arrays are accepted too.
        path: e.g. ``"mean.png"``; its folder must exist.

    Returns:
        the path written.
    """
    from PIL import Image

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a Tensor[C, H, W], got {type(x).__name__}")
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"x must be Tensor[C, H, W] with C = 1 or 3 (or Tensor[H, W]), got {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must hold floating-point values in [-1, 1], got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    path = Path(path)
    v = ((x.detach().double().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = v[0].numpy() if v.shape[0] == 1 else v.permute(1, 2, 0).contiguous().numpy()
    try:
        Image.fromarray(arr).save(path)  # uint8 [H, W]: "L", [H, W, 3]: "RGB"
    except (KeyError, ValueError) as err:  # unknown format for the suffix
        raise ValueError(f"cannot write an image to {str(path)!r}: {err}") from None
    return path
