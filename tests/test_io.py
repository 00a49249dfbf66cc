"""``ps.io``: image files to ``[C, H, W]`` in ``[-1, 1]`` and back (files written with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import posterior as ps


def _pixels(shape: tuple[int, ...], seed: int = 0, dtype=np.uint8) -> np.ndarray:
    high = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, high + 1, size=shape, dtype=dtype)


def test_grayscale_8bit_reads_exactly_and_round_trips(tmp_path: Path) -> None:
    u = _pixels((7, 5))
    u[0, 0], u[0, 1] = 0, 255
    Image.fromarray(u).save(tmp_path / "g.png")
    x = ps.io.load_image(tmp_path / "g.png")
    assert x.shape == (1, 7, 5) and x.dtype == torch.float32
    expected = torch.from_numpy(u.astype(np.float64) / 127.5 - 1)
    assert torch.allclose(x.double()[0], expected, atol=1e-6, rtol=0)
    assert x.min() == -1 and x.max() == 1
    ps.io.save_image(x, tmp_path / "again.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), u)


def test_rgb_keeps_channels_and_drops_alpha(tmp_path: Path) -> None:
    u = _pixels((4, 6, 4), seed=1)
    Image.fromarray(u).save(tmp_path / "rgba.png")
    x = ps.io.load_image(tmp_path / "rgba.png")
    assert x.shape == (3, 4, 6)
    assert torch.allclose(x.double(), torch.from_numpy(u[..., :3] / 127.5 - 1).permute(2, 0, 1), atol=1e-6)
    ps.io.save_image(x, tmp_path / "rgb.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), u[..., :3])


def test_channel_conversion_only_when_asked(tmp_path: Path) -> None:
    u = _pixels((4, 6, 3), seed=2)
    Image.fromarray(u).save(tmp_path / "rgb.png")
    gray = ps.io.load_image(tmp_path / "rgb.png", shape=(1, 4, 6))
    # Pillow's own luminance (ITU-R 601-2, rounded to 8 bits) agrees to within one level
    pil = np.asarray(Image.open(tmp_path / "rgb.png").convert("L"), dtype=np.float64) / 127.5 - 1
    assert gray.shape == (1, 4, 6) and (gray.double()[0] - torch.from_numpy(pil)).abs().max() <= 1 / 127.5
    Image.fromarray(u[..., 0]).save(tmp_path / "g.png")
    rgb = ps.io.load_image(tmp_path / "g.png", shape=(3, 4, 6))
    assert rgb.shape == (3, 4, 6) and torch.equal(rgb[0], rgb[2])


def test_sixteen_bit(tmp_path: Path) -> None:
    u = _pixels((3, 4), seed=3, dtype=np.uint16)
    Image.fromarray(u).save(tmp_path / "g16.png")
    x = ps.io.load_image(tmp_path / "g16.png")
    assert torch.allclose(x.double()[0], torch.from_numpy(u / 32767.5 - 1), atol=1e-6)


def test_resize_only_when_asked(tmp_path: Path) -> None:
    u = np.full((8, 8), 200, dtype=np.uint8)
    Image.fromarray(u).save(tmp_path / "g.png")
    assert ps.io.load_image(tmp_path / "g.png").shape == (1, 8, 8)
    small = ps.io.load_image(tmp_path / "g.png", shape=(4, 2))
    assert small.shape == (1, 4, 2)
    # a flat image stays flat
    assert torch.allclose(small, torch.full_like(small, 200 / 127.5 - 1), atol=1e-5)
    same = ps.io.load_image(tmp_path / "g.png", shape=(1, 8, 8))
    assert torch.equal(same, ps.io.load_image(tmp_path / "g.png"))


def test_save_clips_and_checks(tmp_path: Path) -> None:
    ps.io.save_image(torch.tensor([[-3.0, 0.0, 2.0]]), tmp_path / "c.png")
    assert np.asarray(Image.open(tmp_path / "c.png")).tolist() == [[0, 128, 255]]
    with pytest.raises(ValueError, match=r"Tensor\[C, H, W\]"):
        ps.io.save_image(torch.zeros(2, 3, 3), tmp_path / "x.png")
    with pytest.raises(TypeError, match="Tensor"):
        ps.io.save_image([[0.0]], tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        ps.io.save_image(torch.full((1, 2, 2), float("nan")), tmp_path / "x.png")
    with pytest.raises(ValueError, match="cannot write"):
        ps.io.save_image(torch.zeros(1, 2, 2), tmp_path / "x.unknownformat")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no image file"):
        ps.io.load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        ps.io.load_image(tmp_path / "junk.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(ValueError, match="shape"):
        ps.io.load_image(tmp_path / "g.png", shape=(2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        ps.io.load_image(tmp_path / "g.png", shape=(0, 4))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stores its pixels sideways with EXIF orientation 6 ("rotate 90 degrees
    clockwise to display"): the stored left columns are the displayed top rows."""
    stored = np.zeros((8, 16), np.uint8)
    stored[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    x = ps.io.load_image(tmp_path / "phone.jpg")
    assert x.shape == (1, 16, 8)
    assert x[0, :6].min() > 0.9 and x[0, 10:].max() < -0.9  # top half white, bottom half black


def test_thirty_two_bit_integers_are_scaled_by_their_range(tmp_path: Path) -> None:
    u = np.array([[0, 2**16, 2**30], [2**31 - 1, 12345678, 2**20]], dtype=np.int32)
    Image.fromarray(u).save(tmp_path / "g32.tif")
    x = ps.io.load_image(tmp_path / "g32.tif")
    assert torch.allclose(x.double()[0], torch.from_numpy(u / (2**31 - 1) * 2 - 1), atol=1e-6)
    assert len(torch.unique(x)) == 6  # nothing clipped to the same value
    Image.fromarray(-u).save(tmp_path / "neg.tif")
    with pytest.raises(ValueError, match=r"neg\.tif.*negative 32-bit pixels"):
        ps.io.load_image(tmp_path / "neg.tif")


@pytest.mark.parametrize("shape", [(4.5, 4), (4, 4.0), (True, 4, 4), ("4", 4)])
def test_shape_must_hold_integers(tmp_path: Path, shape: tuple) -> None:
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(ValueError, match=r"^shape must be \(H, W\) or \(C, H, W\) of positive integers"):
        ps.io.load_image(tmp_path / "g.png", shape=shape)
    assert ps.io.load_image(tmp_path / "g.png", shape=(np.int64(3), 3)).shape == (1, 3, 3)
