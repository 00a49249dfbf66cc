"""Comparison reports and figures (oracle test samplers: fast, deterministic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

import posterior as ps
from posterior.diagnostics import plots
from posterior.diagnostics.calibration import coverage, sbc_ranks, sbc_test
from posterior.diagnostics.report import MIN_COVERAGE_COORDS, Report, compare, evaluate, evidence_spread
from posterior.samplers.result import Result
from tests.cli._markdown import assert_tables_well_formed
from tests.diagnostics._samplers import oracle_samplers_registered


@pytest.fixture(autouse=True, scope="module")
def _test_samplers():
    with oracle_samplers_registered():
        yield


def test_evaluate_separates_exact_from_shrunk_draws() -> None:
    batch = ps.problems.simulate(*_demo_parts(), num_problems=40, seed=0)
    good = ps.sample(batch, "test_oracle", num_particles=128, num_steps=3, seed=0)
    bad = ps.sample(batch, "test_oracle", num_particles=128, num_steps=3, seed=0, shrink=0.4)
    mg, mb = evaluate(batch, good), evaluate(batch, bad)
    # exact draws sit at the exact-vs-exact floor; shrunk ones far above it
    assert mg["sw"] < 1.5 * mg["sw_floor"] and mb["sw"] > 2 * mb["sw_floor"]
    assert mg["coverage90"] > mb["coverage90"] + 0.2
    assert mg["sbc_p"] > 0.01 > mb["sbc_p"]
    assert mg["log_evidence_error"] < 1e-4  # the oracle reports the exact evidence
    assert mg["ess_min"] == 1.0 and mg["evals_per_sample"] == 3


def _demo_parts():
    p = ps.problems.gmm_demo()
    return p.prior, p.operator, p.noise_std


def test_compare_writes_folder_and_keeps_going_after_a_refusal(tmp_path: Path) -> None:
    linear = ps.problems.gmm_demo()
    nonlinear = ps.InverseProblem(
        linear.prior, ps.operators.Nonlinear(lambda x: x[:, :1] ** 3), linear.y, 0.5
    )
    report = compare(
        {"demo": linear, "cubic": nonlinear},
        ["test_oracle"],
        num_particles=64,
        num_steps=2,
        out=tmp_path,
    )
    rows = {(r["problem"], r["method"]): r for r in report.rows}
    assert "error" in rows[("cubic", "test_oracle")]  # no closed-form posterior: the sampler refuses
    assert "sw" in rows[("demo", "test_oracle")]
    md = (tmp_path / "report.md").read_text()
    assert "| demo | test_oracle |" in md and "| error |" in md
    assert_tables_well_formed(md)
    js = json.loads((tmp_path / "report.json").read_text())
    assert js["settings"]["num_particles"] == 64 and len(js["rows"]) == 2
    assert {p.name for p in report.figures} == {"demo_samples.png", "demo_traces.png"}
    for p in report.figures:
        assert p.stat().st_size > 5_000 and f"]({p.name})" in md
    with pytest.raises(ValueError, match="unknown method"):
        compare(linear, ["nope"])


@pytest.mark.parametrize(
    "rows",
    [
        [{"problem": "p", "method": "a", "error": "refused | for a reason"}],
        [{"problem": "p", "method": "a", "error": "no"}, {"problem": "p", "method": "b", "sw": 0.1}],
        [{"problem": "p", "method": "b", "sw": 0.1, "wall_time": 2.0}],
    ],
)
def test_markdown_table_has_one_cell_per_column(rows) -> None:
    md = Report(rows=rows, settings={"num_steps": 3}).to_markdown()
    assert_tables_well_formed(md)
    for r in rows:
        assert r.get("error", "").replace("|", "\\|") in md


def test_figures_build() -> None:
    gen = torch.Generator().manual_seed(0)
    ranks = torch.randint(0, 10, (60, 3), generator=gen)
    f1 = plots.plot_rank_histograms({"a": sbc_test(ranks, 9), "b": sbc_test(ranks.flip(0), 9)})
    cov = coverage(torch.randn(50, 32, 2, generator=gen), torch.randn(50, 2, generator=gen), [0.2, 0.5, 0.9])
    f2 = plots.plot_coverage({"a": cov})
    imgs = torch.rand(6, 1, 8, 8, generator=gen) * 2 - 1
    f3 = plots.plot_images({"m": imgs, "n": imgs.flip(0)}, truth=imgs[0], observation=imgs[1], num_samples=3)
    r = Result(
        samples=torch.randn(1, 16, 2),
        method="m",
        ess=torch.linspace(16, 4, 10)[None],
        resampled=(torch.arange(10) % 3 == 0)[None],
        log_weights=torch.randn(1, 16),
    )
    f4 = plots.plot_traces({"m": r, "plain": Result(samples=torch.randn(1, 16, 2), method="plain")})
    for f in (f1, f2, f3, f4):
        assert isinstance(f, Figure)
    assert len(f3.axes) == 3 * 5
    assert sbc_ranks(torch.zeros(2, 3, 1), torch.ones(2, 1)).tolist() == [[3], [3]]


def test_samples_2d_needs_vectors() -> None:
    p = ps.problems.gmm_demo()
    fig = plots.plot_samples_2d(p, {"exact": p.exact_posterior().sample(50)})
    assert isinstance(fig, Figure)
    img = ps.InverseProblem(
        _FlatImagePrior(), ps.operators.Identity(), torch.zeros(1, 2, 2), 0.1
    )  # an image-shaped problem
    with pytest.raises(ValueError, match="vector samples"):
        plots.plot_samples_2d(img, {})


class _FlatImagePrior(ps.DiffusionPrior):
    """A stand-in prior on ``[1, 2, 2]`` images (never evaluated)."""

    event_shape = (1, 2, 2)

    def __init__(self) -> None:
        super().__init__()
        self.schedule = ps.VPSchedule.linear()

    def model_output(self, x_t, t):  # pragma: no cover - not called
        return torch.zeros_like(x_t)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


def test_coverage_needs_enough_coordinates_to_discriminate() -> None:
    one = ps.problems.simulate(*_demo_parts(), num_problems=1, seed=0)  # 2 true coordinates
    result = ps.sample(one, "test_oracle", num_particles=64, num_steps=3, seed=0)
    assert "coverage90" not in evaluate(one, result) and "sw" in evaluate(one, result)
    many = ps.problems.simulate(*_demo_parts(), num_problems=MIN_COVERAGE_COORDS // 2, seed=0)
    assert "coverage90" in evaluate(many, ps.sample(many, "test_oracle", 64, 3, seed=0))


def _with_runs(run_log_z: list[float]) -> Result:
    R = len(run_log_z)
    z = torch.tensor([run_log_z], dtype=torch.float64)
    return Result(
        samples=torch.randn(1, 4 * R, 2),
        method="tds",
        log_evidence=torch.logsumexp(z, 1) - torch.log(torch.tensor(float(R))),
        options={"runs": R, "num_particles": 4 * R},
        stats={"run_log_evidence": z},
    )


def test_evidence_spread_between_runs_and_a_dominating_run() -> None:
    even = _with_runs([-10.0, -10.5, -9.5, -10.0])
    text = evidence_spread(even)
    assert "over 4 independent runs: sd 0.41 nats" in text and "range -10.50 to -9.50" in text
    assert "dominates" not in text  # the largest run holds 0.42 of the sum
    lopsided = _with_runs([-10.0, -30.0, -25.0, -12.0])
    text = evidence_spread(lopsided)
    share = torch.softmax(torch.tensor([-10.0, -30.0, -25.0, -12.0]), 0)[0]
    assert f"which run 0 dominates ({100 * float(share):.0f}% of the sum)" in text
    row = evaluate(ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0), lopsided)
    assert row["evidence_top_share"] == pytest.approx(float(share))
    assert row["log_evidence_run_sd"] == pytest.approx(
        float(torch.tensor([-10.0, -30.0, -25.0, -12.0]).std())
    )
    single = Result(samples=torch.randn(1, 8, 2), method="tds", log_evidence=torch.zeros(1))
    assert evidence_spread(single) == "" and "evidence_top_share" not in evaluate(
        ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0), single
    )
