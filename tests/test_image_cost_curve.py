"""``benchmarks/image_cost_curve.py``: the pilot-run time grid, the needed-budget interpolation and
the recorded log-weight increment variances."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
image_cost_curve = pytest.importorskip("image_cost_curve")

import posterior as ps  # noqa: E402
from posterior.problems_image import gmm_image  # noqa: E402


def test_pilot_grid_keeps_a_flat_profile_and_moves_steps_to_a_peak() -> None:
    times = [999, 977, 953, 928, 902, 874, 843, 811, 775, 736, 694, 646, 593]
    times += [533, 464, 386, 301, 216, 142, 86, 47, 24, 10, 3, 0]
    assert image_cost_curve.pilot_grid(times, [1.0] * 25) == times
    profile = [0.1] * 25
    profile[12] = 100.0  # the step 593 -> 533
    grid = image_cost_curve.pilot_grid(times, profile)
    assert len(grid) == 25 and grid[0] == 999 and grid[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(grid))
    inside = sum(533 <= t <= 593 for t in grid)
    assert inside >= 10  # two of the pilot's times were there


def test_needed_interpolates_and_bounds() -> None:
    cells = [
        {"particles": n, "calls_per_draw": n / 64, "err": e} for n, e in [(64, 8.0), (128, 4.0), (256, 2.0)]
    ]
    kind, calls = image_cost_curve.needed(cells, "err", 3.0)
    # log-linear between (2 calls, 4.0) and (4 calls, 2.0): 3.0 at 2 * 2^log2(4/3)
    assert kind == "=" and calls == pytest.approx(2 * 4 / 3, rel=1e-12)
    assert image_cost_curve.needed(cells, "err", 1.0) == (">", 4.0)
    assert image_cost_curve.needed(cells, "err", 9.0) == ("<=", 1.0)
    # a rung that meets the target but is followed by one that does not: not settled there
    cells[1]["err"] = 2.5
    cells[2]["err"] = 3.5
    assert image_cost_curve.needed(cells, "err", 3.0) == (">", 4.0)


def test_recorded_variance_is_the_weighted_increment_variance() -> None:
    torch.manual_seed(0)
    problem = gmm_image((1, 4, 4), "inpaint", 0.1, 2, 0)
    r = ps.sample(problem, image_cost_curve.RecordingTDS, 32, 6, seed=0, progress=False, runs=1)
    trace = image_cost_curve.RecordingTDS.recorded.trace
    assert [t for t, _, _ in trace] == [t for t, _ in problem.prior.schedule.time_pairs(6, "auto")]
    weighted = torch.stack([v for _, v, _ in trace], -1)
    plain = torch.stack([v for _, _, v in trace], -1)
    assert weighted.shape == plain.shape == (2, 6)
    assert (weighted >= 0).all() and (plain >= 0).all() and weighted.sum() > 0
    assert r.ess.shape == (2, 6)
