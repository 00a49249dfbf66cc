"""``--operator SPEC`` of ``posterior sample``: parsing (before any model is loaded) and building
the operator for the prior's image shape, and reading the observation in its output space."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posterior.cli._common import UsageError, first_line

__all__ = [
    "OPERATORS",
    "OperatorSpec",
    "build_operator",
    "load_observation",
    "parse_operator",
    "readable_file",
]

#: ``{spec: one-line description}``, shown by ``posterior sample --help``.
OPERATORS = {
    "inpaint:MASK": "observe the pixels where MASK (an image or .npy, [H, W] or [C, H, W]) is non-zero; "
    "observation: the full-size image",
    "sr:F": "super-resolution, the mean over FxF blocks; observation: the image at 1/F of the size",
    "blur:gaussian:S": "Gaussian blur of S pixels std (zero-padded); observation: the blurred image",
    "blur:gaussian:?": "Gaussian blur of unknown width, prior LogNormal(log 1.5, 0.4) pixels, sampled "
    "with the image by a joint method (pmmh by default)",
    "blur:KERNEL.npy": "blur with a 2-D kernel of odd sizes; observation: the blurred image",
    "denoise": "the identity; observation: the noisy image",
    "matrix:A.npy": "a matrix [m, C*H*W] on the row-major flattened image; observation: a .npy of m values",
    "cs:M[:SEED]": "M seeded random Gaussian measurements of the flattened image (A_ij ~ N(0, 1/M)); "
    "observation: a .npy of M values",
}

#: ``blur:gaussian:?``: the width's prior, ``LogNormal(log m, s)`` in pixels, as ``(m, s)``.
UNKNOWN_WIDTH = (1.5, 0.4)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}


@dataclass(frozen=True)
class OperatorSpec:
    """A parsed ``--operator``: ``kind`` in inpaint, sr, blur, denoise, matrix, cs."""

    text: str
    kind: str
    path: Path | None = None
    number: float = 0.0
    seed: int = 0
    unknown: bool = False  # blur:gaussian:? (the width is sampled)


def readable_file(text: str, what: str) -> Path:
    """``Path(text)`` if it is a readable file, else a :class:`UsageError` naming ``what``."""
    path = Path(text)
    if not path.exists():
        raise UsageError(f"{what}: no such file {text!r}")
    if not path.is_file():
        raise UsageError(f"{what}: {text!r} is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what}: {text!r} is not readable")
    return path


def _known() -> str:
    return ", ".join(OPERATORS)


def parse_operator(text: str) -> OperatorSpec:
    """Check the syntax of ``text`` and that the files it names are readable."""
    kind, _, rest = text.partition(":")
    bad = UsageError(f"unknown operator {text!r}; known operators: {_known()}")
    if kind == "denoise" and not rest:
        return OperatorSpec(text, "denoise")
    if kind == "inpaint" and rest:
        return OperatorSpec(text, "inpaint", path=readable_file(rest, "--operator inpaint mask"))
    if kind == "matrix" and rest:
        return OperatorSpec(text, "matrix", path=readable_file(rest, "--operator matrix"))
    if kind == "sr" and rest:
        try:
            factor = int(rest)
        except ValueError:
            factor = 0
        if factor < 1:
            raise UsageError(f"--operator {text!r}: the factor F of sr:F must be a positive integer")
        return OperatorSpec(text, "sr", number=factor)
    if kind == "blur" and rest:
        shape, _, sigma = rest.partition(":")
        if shape == "gaussian" and sigma == "?":
            return OperatorSpec(text, "blur", unknown=True)
        if shape == "gaussian":
            try:
                s = float(sigma)
            except ValueError:
                s = float("nan")
            if not 0 < s < float("inf"):
                raise UsageError(f"--operator {text!r}: S in blur:gaussian:S must be a number > 0")
            return OperatorSpec(text, "blur", number=s)
        return OperatorSpec(text, "blur", path=readable_file(rest, "--operator blur kernel"))
    if kind == "cs" and rest:
        m, _, seed = rest.partition(":")
        try:
            count, seed_value = int(m), int(seed or 0)
        except ValueError:
            count, seed_value = 0, 0
        if count < 1:
            raise UsageError(f"--operator {text!r}: expected cs:M or cs:M:SEED with integers M >= 1")
        return OperatorSpec(text, "cs", number=count, seed=seed_value)
    raise bad


def _load_npy(path: Path, what: str) -> Any:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise UsageError(f"{what}: cannot read {str(path)!r} as a .npy array: {first_line(err)}") from None
    if not isinstance(arr, np.ndarray) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise UsageError(f"{what}: {str(path)!r} does not hold a numeric array")
    if not np.isfinite(arr.astype(np.float64)).all():
        raise UsageError(f"{what}: {str(path)!r} contains NaN or inf")
    return arr


def _load_image(
    path: Path,
    what: str,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    notes: list[str] | None = None,
) -> Any:
    """The image at ``path`` in ``[-1, 1]``, converted to ``channels`` (colour <-> grayscale, as
    the prior draws) and resized to ``size`` ``(H, W)`` where given; each conversion is appended
    to ``notes`` in words."""
    import posterior as ps

    try:
        x = ps.io.load_image(path)
    except (ValueError, OSError) as err:
        raise UsageError(f"{what}: {first_line(err)}") from None
    c = x.shape[0] if channels is None else channels
    hw = tuple(x.shape[1:]) if size is None else tuple(size)
    if (c, *hw) != tuple(x.shape):
        if notes is not None and c != x.shape[0]:
            kind = "grayscale (luminance, ITU-R 601-2)" if c == 1 else "RGB (the gray value repeated)"
            notes.append(
                f"{what}: {str(path)!r} has {x.shape[0]} channels and the prior draws {c}; "
                f"it was converted to {kind}"
            )
        if notes is not None and hw != tuple(x.shape[1:]):
            notes.append(f"{what}: {str(path)!r} was resized from {_size(x.shape)} to {_size(hw)} (--resize)")
        x = ps.io.load_image(path, shape=(c, *hw))
    return x


def _size(shape: Any) -> str:
    return "x".join(str(s) for s in tuple(shape)[-2:])


def _check_blur_width(spec: OperatorSpec, shape: tuple[int, ...]) -> None:
    """A :class:`UsageError` if ``blur:gaussian:S`` gives a kernel (``2 ceil(3 S) + 1`` pixels wide)
    wider than twice the image ``[C, H, W]``: its outer taps would touch no pixel (and a kernel of
    millions of pixels squared cannot be allocated)."""
    import math

    side = max(shape[1:])
    size = 2 * math.ceil(3 * spec.number) + 1
    if size > 2 * side + 1:
        raise UsageError(
            f"--operator {spec.text!r}: S = {spec.number:g} pixels gives a {size}-pixel kernel, wider than "
            f"twice the {shape[1]}x{shape[2]} image; S must be at most {side / 3:.2f} here"
        )


def build_operator(
    spec: OperatorSpec, prior: Any, resize: bool = False, notes: list[str] | None = None
) -> Any:
    """The operator of ``spec`` bound to the prior's draws (images ``[C, H, W]``); ``resize``: an
    image mask of another size is resized to the prior's (noted in ``notes``)."""
    import torch

    import posterior as ps

    ops = ps.operators
    shape = tuple(prior.event_shape)
    dev, dtype = prior.device, prior.dtype
    image = len(shape) == 3
    if spec.kind in ("inpaint", "sr", "blur", "denoise") and not image:
        raise UsageError(f"--operator {spec.text!r} needs an image prior; this one draws {list(shape)}")
    try:
        if spec.kind == "denoise":
            return ops.Identity().bind(shape)
        if spec.kind == "sr":
            return ops.SuperResolution(int(spec.number)).bind(shape)
        if spec.kind == "blur" and spec.unknown:
            import math

            import pyro.distributions as dist

            width = ps.Unknown(dist.LogNormal(math.log(UNKNOWN_WIDTH[0]), UNKNOWN_WIDTH[1]), name="width")
            return ops.Blur.gaussian(width, shape=shape, dtype=dtype, device=dev)
        if spec.kind == "blur":
            if spec.path is None:
                _check_blur_width(spec, shape)
                kernel = ops.gaussian_kernel(spec.number, dtype=dtype, device=dev)
            else:
                kernel = torch.as_tensor(
                    _load_npy(spec.path, "--operator blur kernel"), dtype=dtype, device=dev
                )
            return ops.Blur(kernel).bind(shape)
        if spec.kind == "inpaint":
            if spec.path.suffix.lower() == ".npy":
                mask = torch.as_tensor(_load_npy(spec.path, "--operator inpaint mask") != 0)
            else:  # an 8-bit value >= 1 in any channel is observed
                size = shape[1:] if resize else None
                mask = _load_image(spec.path, "--operator inpaint mask", size=size, notes=notes)
                mask = mask.amax(0) > -1 + 0.5 / 127.5
            if mask.dim() == 3 and mask.shape[0] == 1:
                mask = mask[0]
            if tuple(mask.shape[-2:]) != shape[1:]:
                raise UsageError(
                    f"--operator {spec.text!r}: the mask is {_size(mask.shape)} but the prior draws "
                    f"{_size(shape)} images (pass --resize to resize an image mask)"
                )
            return ops.Inpainting(mask.to(dev)).bind(shape)
        d = int(torch.tensor(shape).prod())
        if spec.kind == "cs":
            return ops.CompressedSensing(int(spec.number), d, seed=spec.seed, dtype=dtype).bind(shape)
        A = _load_npy(spec.path, "--operator matrix")
        if A.ndim != 2 or A.shape[1] != d:
            raise UsageError(
                f"--operator {spec.text!r}: the matrix has shape {list(A.shape)}; the prior draws "
                f"{list(shape)}, so it must be [m, {d}]"
            )
        return ops.Matrix(torch.as_tensor(A, dtype=dtype, device=dev)).bind(shape)
    except ValueError as err:
        raise UsageError(f"--operator {spec.text!r}: {first_line(err)}") from None


def load_observation(
    path: Path,
    spec: OperatorSpec,
    operator: Any,
    prior: Any,
    resize: bool = False,
    notes: list[str] | None = None,
) -> Any:
    """``y`` in the operator's output space: from an image (the operator's image-shaped output,
    or, for inpainting, the full-size image whose observed pixels are kept) or from a ``.npy``
    holding ``y`` itself (its shape, or flat with as many values). An RGB image for a grayscale
    prior is converted to its luminance (and the other way round), and with ``resize`` an image of
    another size is resized to what the operator observes; both are appended to ``notes``."""
    import torch

    shape = tuple(prior.event_shape)
    out_shape = tuple(operator.out_shape)
    placed = {"dtype": prior.dtype, "device": prior.device}
    if path.suffix.lower() == ".npy":
        y = torch.as_tensor(_load_npy(path, "--observation")).to(**placed)
        if tuple(y.shape) != out_shape:
            if y.numel() != operator.out_dim:
                raise UsageError(
                    f"--observation: {str(path)!r} has shape {list(y.shape)} but the operator's "
                    f"output has shape {list(out_shape)}"
                )
            y = y.reshape(out_shape)
        return y
    inpainting = spec.kind == "inpaint"
    image_shape = shape if inpainting else out_shape
    if len(image_shape) != 3:
        raise UsageError(
            f"--observation: the operator's output has shape {list(out_shape)}, not an image; pass "
            "the observation as a .npy array"
        )
    if path.suffix.lower() not in _IMAGE_SUFFIXES:
        raise UsageError(
            f"--observation: {str(path)!r} is neither an image ({', '.join(sorted(_IMAGE_SUFFIXES))}) "
            "nor a .npy array"
        )
    size = image_shape[1:] if resize else None
    x = _load_image(path, "--observation", channels=image_shape[0], size=size, notes=notes)
    x = x.to(**placed)
    if tuple(x.shape) != image_shape:
        prior_size = f"; the prior draws {_size(shape)} images" if image_shape != shape else ""
        raise UsageError(
            f"--observation: the image is {_size(x.shape)} but this operator's observation is "
            f"{_size(image_shape)}{prior_size} (pass --resize to resize it)"
        )
    return operator.A(x[None])[0] if inpainting else x
