"""The ``posterior`` command: bad input gives one line and status 2; commands write their output."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import posterior as ps
from posterior.cli import make_problem
from posterior.cli.methods import option_help
from tests.cli._run import run_cli
from tests.diagnostics._samplers import oracle_samplers_registered


@pytest.fixture(autouse=True, scope="module")
def _test_samplers():
    with oracle_samplers_registered():
        yield


_run = run_cli


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["compare", "--method", "no_such_method"], "unknown method 'no_such_method'; known methods:"),
        (["compare", "--particles", "0"], "--particles: expected a positive integer, got '0'"),
        (["compare", "--steps", "-3"], "--steps: expected a positive integer"),
        (["compare", "--particles", "many"], "expected a positive integer, got 'many'"),
        (["compare", "--problem", "mnist-inpaint", "--prior", "/no/such/folder"], "does not exist"),
        (["compare", "--problem", "nonsense"], "unknown problem 'nonsense'"),
        (["compare", "--problem", "gmm:3:1"], "dim must be an even number"),
        (["compare", "--problem", "gmm:8"], "expected gmm:DIM:OBS"),
        (["calibrate", "--draws", "0"], "--draws"),
        (["calibrate", "--method", "nope"], "unknown method"),
        (["demo", "--device", "nodev"], "unknown device 'nodev'"),
        (["frobnicate"], "invalid choice"),
        ([], "missing command"),
        (["compare", "--bogus-flag"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_one_line_status_2(argv, needle, capsys) -> None:
    status, _, err = _run(argv, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("posterior: error: ")
    assert needle in lines[0]
    assert "Traceback" not in err


def test_unreadable_prior_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.txt").write_text("not a model")
    status, _, err = _run(["compare", "--problem", "mnist-inpaint", "--prior", str(tmp_path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "cannot load a diffusers prior" in err


def test_methods_lists_every_method_with_its_summary(capsys) -> None:
    status, out, _ = _run(["methods"], capsys)
    assert status == 0
    listing, footer = out.strip().split("\n\n")
    lines = listing.splitlines()
    assert len(lines) == len(ps.METHODS)
    for name, cls in ps.METHODS.items():
        line = next(ln for ln in lines if ln.split()[0] == name)
        assert cls.summary in line
        assert ("exact" if cls.exact else "approx") in line
    assert "posterior methods NAME" in footer


@pytest.mark.parametrize("name", ["tds", "mcgdiff", "dps"])
def test_methods_name_prints_every_option_with_its_default_and_help(name: str, capsys) -> None:
    status, out, _ = _run(["methods", name], capsys)
    assert status == 0
    cls = ps.METHODS[name]
    assert out.startswith(f"{name} (") and cls.summary in out
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    assert params
    helps = option_help(cls)
    assert {"dps": 3, "tds": 10, "mcgdiff": 6}[name] <= len(helps)
    for p in params:  # each option and its default, then its description where the docstring has one
        head = f"  {p.name} = {p.default!r}\n"
        assert head in out
        if p.name in helps:
            assert out.split(head, 1)[1].startswith("      " + helps[p.name][:20]), p.name


def test_methods_unknown_name_is_one_line(capsys) -> None:
    status, _, err = _run(["methods", "no_such_method"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "unknown method 'no_such_method'" in err


def test_compare_writes_report(tmp_path: Path, capsys) -> None:
    argv = ["compare", "--method", "test_oracle", "--method", "test_oracle_approx", "--problem", "gmm:4:2"]
    argv += ["--particles", "64", "--steps", "3", "--quiet", "--out", str(tmp_path)]
    status, out, err = _run(argv, capsys)
    assert status == 0, err
    assert err == ""  # --quiet
    assert str(tmp_path / "report.md") in out
    data = json.loads((tmp_path / "report.json").read_text())
    rows = {(r["problem"], r["method"]): r for r in data["rows"]}
    assert set(rows) == {("gmm:4:2", "test_oracle"), ("gmm:4:2", "test_oracle_approx")}
    assert rows[("gmm:4:2", "test_oracle")]["sw"] >= 0
    assert (tmp_path / "gmm_4_2_samples.png").stat().st_size > 10_000
    assert "| gmm:4:2 | test_oracle |" in (tmp_path / "report.md").read_text()


def test_calibrate_writes_figures(tmp_path: Path, capsys) -> None:
    argv = [
        "calibrate",
        "--method",
        "test_oracle",
        "--problem",
        "gmm:2:1",
        "--num-problems",
        "60",
        "--draws",
        "9",
    ]
    argv += ["--particles", "16", "--steps", "1", "--quiet", "--out", str(tmp_path)]
    status, _, err = _run(argv, capsys)
    assert status == 0, err
    data = json.loads((tmp_path / "report.json").read_text())
    row = data["rows"][0]
    assert row["method"] == "test_oracle" and row["sbc"]["num_problems"] == 60
    assert (tmp_path / "ranks.png").exists() and (tmp_path / "coverage.png").exists()
    assert (tmp_path / "report.md").read_text().startswith("# posterior calibration")


@pytest.mark.parametrize("command", ["compare", "calibrate"])
def test_rerun_into_non_empty_out_refuses_unless_overwrite(command: str, tmp_path: Path, capsys) -> None:
    argv = [command, "--method", "test_oracle", "--problem", "gmm:2:1", "--particles", "8", "--steps", "1"]
    argv += ["--quiet", "--out", str(tmp_path)]
    if command == "calibrate":
        argv += ["--num-problems", "20", "--draws", "3"]
    (tmp_path / "keep.txt").write_text("from before")
    status, _, err = _run(argv, capsys)
    assert (
        status == 2
        and err.strip()
        == f"posterior: error: --out {str(tmp_path)!r} is not empty; pass --overwrite to write into it"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    status, _, err = _run([*argv, "--overwrite"], capsys)
    assert status == 0, err
    assert (tmp_path / "report.md").exists() and (tmp_path / "keep.txt").exists()


def test_make_problem_batches_with_truth() -> None:
    p = make_problem("gmm:4:2", num_problems=5, seed=1)
    assert p.batch_size == 5 and p.truth.shape == (5, 4)
    q = make_problem("gmm-demo")
    assert not q.batched and q.event_shape == (2,)


@pytest.mark.slow
def test_console_script_demo(tmp_path: Path) -> None:
    """The installed entry point, end to end, on the shipped demo (small run)."""
    cmd = [sys.executable, "-m", "posterior.cli", "demo", "--particles", "64", "--steps", "10", "--no-image"]
    proc = subprocess.run(
        [*cmd, "--quiet", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "report written to" in proc.stdout
    assert (tmp_path / "demo_samples.png").exists() and (tmp_path / "report.json").exists()
    methods = {r["method"] for r in json.loads((tmp_path / "report.json").read_text())["rows"]}
    assert methods == {m for m in ("smc", "tds", "mcgdiff", "dps") if m in ps.METHODS}
    bad = subprocess.run(
        [*cmd[:3], "compare", "--method", "nope"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_console_script_demo_runs_its_image_part(tmp_path: Path) -> None:
    """The README's main job with its image part: the shipped MNIST prior's report lands in
    OUT/mnist with one row per image-demo method and a PSNR for each."""
    cmd = [sys.executable, "-m", "posterior.cli", "demo", "--particles", "32", "--steps", "10"]
    proc = subprocess.run(
        [*cmd, "--quiet", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "image report written to" in proc.stdout
    report = json.loads((tmp_path / "mnist" / "report.json").read_text())
    rows = report["rows"]
    assert [r["method"] for r in rows] == ["tds", "mcgdiff", "dps"]
    assert report["settings"]["options"]["mcgdiff"]["runs"] == 32  # 32 runs of 4 particles
    text = (tmp_path / "mnist" / "report.md").read_text()
    assert "tds (merge='equal')" in text and "mcgdiff (runs=32, merge='equal')" in text  # labelled
    assert rows[0]["runs"] == "32x4"  # tds's defaults: 32 runs of 4 particles
    assert all(math.isfinite(r["psnr"]) for r in rows)
    assert (tmp_path / "mnist" / "mnist-inpaint_images.png").exists()
