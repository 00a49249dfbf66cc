"""``posterior compare``: a method that refuses the problem is an error on stderr (``--quiet`` or
not) with exit status 2, and the report's tables are well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli._markdown import assert_tables_well_formed
from tests.cli._run import run_cli
from tests.diagnostics._samplers import oracle_samplers_registered


@pytest.fixture(autouse=True, scope="module")
def _test_samplers():
    with oracle_samplers_registered():
        yield


_run = run_cli


@pytest.mark.parametrize("quiet", [True, False])
def test_steps_beyond_the_schedule_is_one_line_and_status_2(tmp_path: Path, quiet: bool, capsys) -> None:
    argv = ["compare", "--method", "tds", "--method", "mcgdiff", "--problem", "gmm:2:1"]
    argv += ["--particles", "8", "--steps", "2000", "--out", str(tmp_path / "out")]
    status, out, err = _run(argv + (["--quiet"] if quiet else []), capsys)
    assert status == 2
    errors = [ln for ln in err.splitlines() if ln.startswith("posterior: error: ")]
    assert len(errors) == 1, err  # the same refusal by both methods is one line
    assert "num_steps must be in 1..1000, got 2000" in errors[0] and "tds" in errors[0]
    assert "Traceback" not in err and "report written" not in out
    assert not (tmp_path / "out").exists()  # no method ran: nothing written


def test_a_refusal_next_to_a_run_is_reported_and_the_report_is_well_formed(tmp_path: Path, capsys) -> None:
    """The oracle ignores the schedule and runs; tds refuses: stderr names it (with --quiet),
    status 2, and the report (written for the method that ran) has one cell per column."""
    argv = ["compare", "--method", "test_oracle", "--method", "tds", "--problem", "gmm:2:1"]
    argv += ["--particles", "16", "--steps", "2000", "--quiet", "--out", str(tmp_path)]
    status, out, err = _run(argv, capsys)
    assert status == 2
    assert err.strip().splitlines() == [
        "posterior: error: gmm:2:1 / tds: num_steps must be in 1..1000, got 2000"
    ]
    assert str(tmp_path / "report.md") in out
    md = (tmp_path / "report.md").read_text()
    assert_tables_well_formed(md)
    assert "| gmm:2:1 | tds |" in md and "num_steps must be in 1..1000" in md
    rows = {r["method"]: r for r in json.loads((tmp_path / "report.json").read_text())["rows"]}
    assert "sw" in rows["test_oracle"] and "error" in rows["tds"]


def test_calibrate_refusal_reaches_stderr_with_quiet(tmp_path: Path, capsys) -> None:
    argv = ["calibrate", "--method", "tds", "--problem", "gmm:2:1", "--num-problems", "4", "--draws", "3"]
    argv += ["--particles", "4", "--steps", "2000", "--quiet", "--out", str(tmp_path / "cal")]
    status, _, err = _run(argv, capsys)
    assert status == 2
    assert err.strip().splitlines() == ["posterior: error: tds: num_steps must be in 1..1000, got 2000"]
    assert not (tmp_path / "cal").exists()


def test_method_options_reach_the_sampler_and_the_report(tmp_path: Path, capsys) -> None:
    """``--option tds:runs=4`` runs tds as 4 runs (its ESS then scales by the run size) and the
    report says so; another method keeps its defaults."""
    argv = ["compare", "--method", "tds", "--method", "mcgdiff", "--problem", "gmm:2:1", "--quiet"]
    argv += ["--particles", "16", "--steps", "5", "--out", str(tmp_path), "--option", "tds:runs=4"]
    status, _, err = _run(argv, capsys)
    assert status == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["options"] == {"tds": {"runs": 4}}
    assert "options: tds (runs=4)" in (tmp_path / "report.md").read_text()


def test_calibrate_passes_method_options(tmp_path: Path, capsys) -> None:
    argv = ["calibrate", "--method", "tds", "--problem", "gmm:2:1", "--num-problems", "20", "--draws", "3"]
    argv += ["--particles", "4", "--steps", "4", "--quiet", "--out", str(tmp_path)]
    status, _, err = _run([*argv, "--option", "tds:twist_scale=0.5"], capsys)
    assert status == 0, err
    settings = json.loads((tmp_path / "report.json").read_text())["settings"]
    assert settings["options"] == {"tds": {"twist_scale": 0.5}}
    status, _, err = _run(
        [*argv, "--option", "tds:twist_scale=-1", "--overwrite"], capsys
    )  # reaches the sampler
    assert status == 2 and "twist_scale must be a finite number >= 0" in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("tds", "--option 'tds' must look like METHOD:KEY=VALUE"),
        ("tds:runs", "--option 'tds:runs' must look like METHOD:KEY=VALUE"),
        ("smc:runs=2", "names 'smc', which is not among the methods run"),
        ("dps:runs=2", "'dps' has no option 'runs'; its options are:"),
    ],
)
def test_bad_method_options_are_one_line(option: str, message: str, tmp_path: Path, capsys) -> None:
    argv = ["compare", "--method", "tds", "--method", "dps", "--problem", "gmm:2:1", "--quiet"]
    argv += ["--particles", "8", "--steps", "4", "--out", str(tmp_path / "out"), "--option", option]
    status, _, err = _run(argv, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_option_values_read_as_json_or_python_literals(tmp_path: Path, capsys) -> None:
    from posterior.cli._common import method_options

    items = ["tds:exact_start=False", "tds:runs=4", "tds:tempering=None", "tds:prior_var=auto"]
    assert method_options(items, ["tds"]) == {
        "tds": {"exact_start": False, "runs": 4, "tempering": None, "prior_var": "auto"}
    }
    argv = ["compare", "--method", "smc", "--problem", "gmm:2:1", "--quiet", "--particles", "8"]
    argv += ["--steps", "4", "--out", str(tmp_path / "out"), "--option", "smc:exact_start=no"]
    status, _, err = _run(argv, capsys)  # a string reaches the sampler, which refuses it
    assert status == 2 and err.strip().splitlines() == [
        "posterior: error: gmm:2:1 / smc: exact_start must be True or False, got 'no' (a string, not a bool)"
    ]
