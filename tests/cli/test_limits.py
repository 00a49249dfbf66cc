"""Sizes and places the machine cannot honour are refused before any sampling, in one line with
status 2: particle tensors beyond the available memory, a blur kernel wider than twice the image,
an ``--out`` that cannot be written; and a method's refusal does not suggest an option that
``posterior sample`` cannot pass."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posterior.cli import main
from posterior.cli._common import available_memory, particle_bytes


@pytest.fixture(scope="module")
def digit(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "zeros.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path


def _one_line_error(argv: list[str], capsys) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("posterior: error: "), err
    return lines[0]


def _sample(digit: Path, out: Path, *extra: str) -> list[str]:
    argv = ["sample", "--observation", str(digit), "--noise", "0.1", "--quiet", "--out", str(out)]
    return [*argv, "--particles", "4", "--steps", "3", *extra]


def test_particles_beyond_the_memory_are_refused_before_sampling(digit: Path, tmp_path: Path, capsys) -> None:
    free = available_memory("cpu")
    assert free is not None and free > 0
    too_many = str(int(2 * free / particle_bytes(28 * 28, 4)) + 1)  # twice what fits
    argv = _sample(digit, tmp_path / "out", "--operator", "denoise")
    line = _one_line_error([*argv, "--particles", too_many], capsys)
    assert "--particles" in line and "GiB" in line and "available" in line
    assert not (tmp_path / "out").exists()
    argv = ["compare", "--method", "tds", "--problem", "gmm:2:1", "--quiet", "--steps", "4"]
    too_many = str(int(2 * free / particle_bytes(2, 4)) + 1)
    line = _one_line_error([*argv, "--particles", too_many, "--out", str(tmp_path / "c")], capsys)
    assert "--particles" in line and "GiB" in line
    assert not (tmp_path / "c").exists()


def test_a_blur_kernel_wider_than_twice_the_image_is_refused(digit: Path, tmp_path: Path, capsys) -> None:
    line = _one_line_error([*_sample(digit, tmp_path / "out"), "--operator", "blur:gaussian:1e6"], capsys)
    assert "blur:gaussian:1e6" in line and "28x28" in line and "at most 9.33" in line
    assert not (tmp_path / "out").exists()


def test_an_out_that_cannot_be_written_is_refused_before_sampling(
    digit: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "out"
    line = _one_line_error([*_sample(digit, out), "--operator", "denoise"], capsys)
    assert "--out" in line and "is not a folder" in line
    argv = ["compare", "--method", "dps", "--problem", "gmm:2:1", "--quiet", "--steps", "2"]
    line = _one_line_error([*argv, "--particles", "2", "--out", str(out)], capsys)
    assert "--out" in line and "is not a folder" in line
    if sys.platform == "linux":  # /proc takes no new folders, even for root
        line = _one_line_error(
            [*_sample(digit, Path("/proc/posterior/out")), "--operator", "denoise"], capsys
        )
        assert "--out" in line and "cannot be written" in line


def test_a_refusal_does_not_suggest_an_option_sample_cannot_pass(digit: Path, tmp_path: Path, capsys) -> None:
    line = _one_line_error(
        [*_sample(digit, tmp_path / "out", "--method", "mala"), "--operator", "denoise"], capsys
    )
    assert "method 'mala' refuses this problem" in line and "no score at the clean level" in line
    assert "noise_level" not in line and "choose another --method" in line
