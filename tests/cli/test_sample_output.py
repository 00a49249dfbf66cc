"""The report of ``posterior sample`` in words: ESS steps as in ``result.ess`` and the engine's
warning, log-evidence only where the method has one, what an approximate method means."""

from __future__ import annotations

import torch

import posterior as ps
from posterior.cli.sample_output import grid_draws, sample_report
from tests.cli._markdown import assert_tables_well_formed

SETTINGS = {"prior": "p", "observation": "y.npy", "operator": "denoise", "noise": 0.1, "method": "tds"}
SETTINGS |= {"particles": 8, "steps": 6, "seed": 0}


def _problem() -> ps.InverseProblem:
    return ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)


def test_ess_steps_are_indices_of_result_ess() -> None:
    ess = torch.tensor([8.0, 7.5, 6.0, 1.5, 4.0, 8.0])
    r = ps.Result(samples=torch.randn(8, 2), method="tds", ess=ess, log_evidence=torch.tensor(-1.25))
    r.batched, r.num_evals = False, 48
    assert r.num_samples == 8
    md = sample_report(_problem(), r, SETTINGS, [], ["report.md"])
    assert_tables_well_formed(md)
    assert "The ESS fell to 1.5 of 8 particles (step 3)" in md
    assert "| step | 0 | 1 | 2 | 3 | 4 | 5 |" in md and "| ESS | 8.0 | 7.5 | 6.0 | 1.5 | 4.0 | 8.0 |" in md
    assert "log p(y) estimated at -1.250 nats" in md and "48 evaluations (6.0 per draw)" in md


def test_degeneracy_warning_is_quoted_and_approximate_methods_are_named() -> None:
    r = ps.Result(samples=torch.randn(8, 2), method="tds", ess=torch.full((6,), 8.0), batched=False)
    md = sample_report(_problem(), r, SETTINGS, ["tds: it fell below 2 at step 4"], ["report.md"])
    assert "**The particle system degenerated.** tds: it fell below 2 at step 4. The draws then" in md
    approx = ps.Result(samples=torch.randn(8, 2), method="dps", batched=False)
    md = sample_report(_problem(), approx, {**SETTINGS, "method": "dps"}, [], ["report.md"])
    assert "`dps` does not estimate it" in md and "approximate method" in md and "## ESS trace" not in md


def _runs_result(
    runs: int, size: int, draws_per_run: int | None = None, merge: str = "evidence"
) -> ps.Result:
    n = runs if draws_per_run == 1 else runs * size
    options = {"runs": runs, "num_particles": runs * size, "merge": merge}
    if draws_per_run == 1:
        options["draws_per_run"] = 1
    stats = {"run_log_evidence": torch.zeros(1, runs), "effective_runs": torch.tensor([3.25])}
    r = ps.Result(samples=torch.randn(n, 2), method="tds", options=options, stats=stats)
    r.batched = False
    return r


def test_samples_png_spreads_its_draws_and_says_where_they_come_from() -> None:
    idx, caption = grid_draws(_runs_result(32, 4))
    assert len(idx) == 16 and idx[0] == 0 and idx[-1] == 127  # not the first 16 (runs 0-3)
    assert len({i // 4 for i in idx}) == 16  # in run order: 16 different blocks of 4
    assert (
        caption == "16 of the 128 draws, spread evenly; in run order, 32 runs pooled by their evidence, "
        "about 3.2 runs carrying it"
    )
    _, caption = grid_draws(_runs_result(32, 4, merge="equal"))
    assert caption.endswith("32 runs pooled with equal weights")
    idx, caption = grid_draws(_runs_result(32, 4, draws_per_run=1))  # already one per run
    assert len(idx) == 16 and idx[-1] == 31 and caption.endswith("; one draw per run of 32")
    single = ps.Result(samples=torch.randn(256, 2), method="mcgdiff", batched=False)
    idx, caption = grid_draws(single)
    assert len(idx) == 16 and idx[-1] == 255 and caption == "16 of the 256 draws, spread evenly"
