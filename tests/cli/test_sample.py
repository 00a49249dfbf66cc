"""``posterior sample`` end to end on image files written here with Pillow: the files it writes,
read back, and every bad input (one line on stderr, status 2, the output folder untouched)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image

import posterior as ps
from posterior.cli import main
from tests.cli._markdown import assert_tables_well_formed

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

FAST = ["--method", "mcgdiff", "--particles", "4", "--steps", "3", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A held-out digit (8-bit, as the file stores it), a mask hiding its bottom half, the digit
    averaged over 4x4 blocks, and a few bad inputs."""
    d = tmp_path_factory.mktemp("inputs")
    x, _ = ps.priors.mnist_heldout(7)
    digit = ((x[0, 0] + 1) * 127.5).round().to(torch.uint8).numpy()  # [28, 28]
    Image.fromarray(digit).save(d / "digit.png")
    mask = np.zeros((28, 28), np.uint8)
    mask[:14] = 255  # top half observed
    Image.fromarray(mask).save(d / "mask.png")
    low = digit.astype(np.float64).reshape(7, 4, 7, 4).mean((1, 3)).round().astype(np.uint8)
    Image.fromarray(low).save(d / "low.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "big.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(d / "big_mask.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(d / "empty_mask.png")
    (d / "junk.png").write_text("not an image")
    np.save(d / "A.npy", np.random.default_rng(0).standard_normal((20, 784)).astype(np.float32) / 28)
    np.save(d / "y20.npy", np.random.default_rng(1).standard_normal(20).astype(np.float32))
    np.save(d / "y7.npy", np.zeros(7, np.float32))
    return {p.stem: p for p in d.iterdir()}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def _sample(files, out: Path, obs: str, op: str, capsys, *extra: str) -> tuple[int, str, str]:
    argv = ["sample", "--observation", str(files[obs]), "--operator", op, "--noise", "0.1"]
    return _run([*argv, *FAST, "--out", str(out), *extra], capsys)


def _pixels(path: Path) -> torch.Tensor:
    """8-bit grayscale file -> [-1, 1], independently of ps.io."""
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float64) / 127.5 - 1)


def _dataset(node):
    return node.to_dataset() if hasattr(node, "to_dataset") else node


def _check_outputs(out: Path, shape: tuple[int, ...], y_expected: torch.Tensor) -> None:
    draws = np.load(out / "samples.npy")
    assert draws.dtype == np.float32 and draws.shape == (4, *shape)
    result = ps.Result.load(out / "result.safetensors")
    assert torch.equal(result.samples, torch.from_numpy(draws)) and result.method == "mcgdiff"
    mean = _pixels(out / "mean.png")  # the mean, at the prior's resolution, rounded to 8 bits
    assert mean.shape == shape[1:]
    assert (mean - result.mean()[0].double().clamp(-1, 1)).abs().max() <= 0.5 / 127.5 + 1e-6
    for name in ("std.png", "samples.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 100
    # the NetCDF file: the draws and the observation as read from the input file
    # (arviz.from_netcdf gives InferenceData on arviz 0.x and a DataTree on 1.x)
    data = az.from_netcdf(out / "posterior.nc")
    tree = xr.open_datatree(out / "posterior.nc")
    for post in (_dataset(data["posterior"]), tree["posterior"].to_dataset()):
        assert post["x"].dims == ("chain", "draw", "channel", "row", "col")
        np.testing.assert_array_equal(post["x"].values[0], draws.astype(np.float64))
    y = torch.from_numpy(tree["observed_data"].to_dataset()["y"].values)
    assert torch.allclose(y, y_expected.to(y.dtype), atol=1e-6)
    tree.close()
    report = (out / "report.md").read_text()
    assert_tables_well_formed(report)
    for needle in ("log-evidence", "network calls", "## ESS trace", "## Degeneracy", "posterior.nc"):
        assert needle in report
    assert f"{result.num_evals:,} evaluations" in report


def test_inpainting_end_to_end(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "inpaint"
    status, stdout, err = _sample(files, out, "digit", f"inpaint:{files['mask']}", capsys)
    assert status == 0, err
    assert all(ln.startswith("posterior: warning:") for ln in err.splitlines()), err
    assert str(out) in stdout
    observed = _pixels(files["digit"])[:14].reshape(-1)  # the top half, row by row
    _check_outputs(out, (1, 28, 28), observed)


def test_super_resolution_end_to_end(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sr"
    status, _, err = _sample(files, out, "low", "sr:4", capsys)
    assert status == 0, err
    _check_outputs(out, (1, 28, 28), _pixels(files["low"])[None])


def test_time_grid_option(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid"
    status, _, err = _sample(files, out, "low", "sr:4", capsys, "--time-grid", "trailing")
    assert status == 0, err
    assert ps.Result.load(out / "result.safetensors").options["time_grid"] == "trailing"


def test_runs_are_merged_as_the_method_merges_them(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    status, _, err = _sample(files, out, "low", "sr:4", capsys, "--particles", "8", "--runs", "4")
    assert status == 0, err
    draws = np.load(out / "samples.npy")
    result = ps.Result.load(out / "result.safetensors")
    assert draws.shape == (8, 1, 28, 28) and result.options["runs"] == 4  # the runs merged, all draws
    assert result.stats["run_log_evidence"].shape == (4,) and "draws_per_run" not in result.options
    report = (out / "report.md").read_text()
    assert_tables_well_formed(report)
    assert "--particles 8 --runs 4" in report and "8 in 4 runs of 2, all their draws" in report
    assert "| ESS / run size |" in report
    tree = xr.open_datatree(out / "posterior.nc")
    assert tree["posterior"].to_dataset()["x"].shape == (1, 4, 1, 28, 28)  # ArviZ: one draw per run
    assert tree["sample_stats"].to_dataset()["log_evidence"].shape == (1, 4)
    tree.close()


def test_matrix_on_the_flattened_image(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "matrix"
    status, _, err = _sample(files, out, "y20", f"matrix:{files['A']}", capsys)
    assert status == 0, err
    _check_outputs(out, (1, 28, 28), torch.from_numpy(np.load(files["y20"])))


@pytest.mark.parametrize(
    ("obs", "op", "extra", "needle"),
    [
        ("missing", "denoise", [], "--observation: no such file"),
        ("junk", "denoise", [], "cannot read"),
        ("big", "denoise", [], "the image is 32x32 but this operator's observation is 28x28 (pass --resize"),
        ("digit", "sr:4", [], "this operator's observation is 7x7"),
        ("digit", "inpaint:BIG_MASK", [], "the mask is 32x32 but the prior draws 28x28 images"),
        ("digit", "inpaint:EMPTY_MASK", [], "observes no pixel"),
        ("digit", "inpaint:/no/such/mask.png", [], "inpaint mask: no such file"),
        ("digit", "fft:3", [], "unknown operator 'fft:3'; known operators: inpaint:MASK"),
        ("digit", "sr:0", [], "must be a positive integer"),
        ("digit", "blur:gaussian:-1", [], "must be a number > 0"),
        ("y7", "matrix:A", [], "has shape [7] but the operator's output has shape [20]"),
        ("digit", "matrix:A", [], "pass the observation as a .npy array"),
        ("digit", "denoise", ["--steps", "2000"], "method 'mcgdiff' refuses this problem: num_steps"),
        ("digit", "denoise", ["--method", "nope"], "unknown method 'nope'"),
        ("digit", "denoise", ["--runs", "3"], "--runs 3 must divide --particles 4"),
        ("digit", "denoise", ["--runs", "0"], "expected a positive integer"),
        ("digit", "denoise", ["--runs", "2", "--method", "dps"], "'dps' has no option runs"),
        ("digit", "denoise", ["--prior", "/no/such/folder"], "does not exist"),
    ],
)
def test_bad_input_one_line_status_2_nothing_written(files, tmp_path, obs, op, extra, needle, capsys) -> None:
    for key in ("BIG_MASK", "EMPTY_MASK"):
        op = op.replace(key, str(files[key.lower()]))
    op = op.replace("matrix:A", f"matrix:{files['A']}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("from before")
    obs_path = files.get(obs, tmp_path / "missing.png")
    argv = ["sample", "--observation", str(obs_path), "--operator", op, "--noise", "0.1"]
    status, _, err = _run([*argv, *FAST, *extra, "--out", str(out), "--overwrite"], capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("posterior: error: "), err
    assert needle in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder beside it
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_help_describes_every_operator(capsys) -> None:
    from posterior.cli.operator_spec import OPERATORS

    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for spec, description in OPERATORS.items():
        assert spec in text and " ".join(description.split())[:30] in text


def test_default_method_is_tds() -> None:
    from posterior.cli import build_parser

    args = build_parser().parse_args(
        ["sample", "--observation", "y.png", "--operator", "denoise", "--noise", "0.1"]
    )
    assert args.method == "tds"


def test_rerun_into_a_non_empty_out_refuses_unless_overwrite(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again"
    status, _, err = _sample(files, out, "low", "sr:4", capsys)
    assert status == 0, err
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    status, _, err = _sample(files, out, "low", "sr:4", capsys, "--seed", "1")
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "is not empty; pass --overwrite" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    status, _, err = _sample(files, out, "low", "sr:4", capsys, "--seed", "1", "--overwrite")
    assert status == 0, err
    assert "--seed 1" in (out / "report.md").read_text()
    # every file is written with the same permissions (safetensors alone would make its file 0600)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_resize_and_rgb_are_done_and_reported(files, tmp_path: Path, capsys) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[8:24, 12:20] = (255, 128, 0)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = tmp_path / "resized"
    argv = ["sample", "--observation", str(tmp_path / "rgb.png"), "--operator", "denoise", "--noise", "0.1"]
    status, _, err = _run([*argv, *FAST, "--out", str(out), "--resize"], capsys)
    assert status == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("posterior: note: ")]
    assert len(notes) == 2 and "converted to grayscale" in notes[0] and "from 32x32 to 28x28" in notes[1]
    report = (out / "report.md").read_text()
    assert "**Inputs converted:**" in report and "converted to grayscale" in report and "--resize" in report
    # the observation is the resized luminance of the file (Pillow, independently of ps.io; 8 bits)
    expected = np.asarray(Image.open(tmp_path / "rgb.png").convert("L").resize((28, 28), Image.BICUBIC))
    tree = xr.open_datatree(out / "posterior.nc")
    y = tree["observed_data"].to_dataset()["y"].values
    tree.close()
    np.testing.assert_allclose(y[0], expected / 127.5 - 1, atol=1.5 / 127.5)  # 8-bit rounding
