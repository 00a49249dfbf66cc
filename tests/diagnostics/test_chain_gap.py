import pytest
import torch

import posterior as ps
from posterior.diagnostics.chain_gap import chain_gap
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.diagnostics.oracles import chain_posterior
from posterior.diagnostics.report import compare, evaluate


def test_chain_gap_reruns_the_same_method_with_twice_the_steps():
    problem = ps.problems.gmm_benchmark(2, 1, 0)
    res = ps.sample(problem, "mcgdiff", 200, 5, seed=0, time_grid="trailing")
    gap = chain_gap(problem, res, seed=7, floor=True)
    fine = ps.sample(problem, "mcgdiff", 200, 10, seed=7, time_grid="trailing")
    coarse = ps.sample(problem, "mcgdiff", 200, 5, seed=7, time_grid="trailing")
    assert gap.num_steps == 5
    assert torch.allclose(gap.sw, sliced_wasserstein(res.samples[None], fine.samples[None]))
    assert torch.allclose(gap.sw_floor, sliced_wasserstein(res.samples[None], coarse.samples[None]))
    assert torch.allclose(gap.log_evidence_shift, (fine.log_evidence - res.log_evidence)[None])
    row = evaluate(problem, res)
    assert row["chain_gap_sw"] == pytest.approx(float(gap.sw[0]))
    assert row["chain_gap_log_evidence"] == pytest.approx(float(gap.log_evidence_shift[0]))
    assert "2 vs" not in gap.summary() and "5 vs 10 steps" in gap.summary()


def test_chain_gap_log_evidence_shift_matches_the_chains():
    """At K = 2 the 2- and 4-step chains' evidences differ by about 0.76 nats (importance sampling
    of 10^5 chain draws each); smc's estimate of the shift, averaged over 3 seeds (sd of one about
    0.1 at 4000 particles), is within 0.25 of it. A rerun at K steps instead would give 0."""
    problem = ps.problems.gmm_benchmark(2, 1, 3)
    grid = "leading"
    ref = [chain_posterior(problem, k, 10**5, seed=5, time_grid=grid).log_evidence for k in (2, 4)]
    expected = float(ref[1] - ref[0])
    assert abs(expected) > 0.5
    shifts = []
    for seed in range(3):
        res = ps.sample(problem, "smc", 4000, 2, seed=seed, time_grid=grid)
        shifts.append(float(chain_gap(problem, res, seed=100 + seed).log_evidence_shift[0]))
    assert sum(shifts) / 3 == pytest.approx(expected, abs=0.25)


def test_chain_gap_bad_inputs():
    problem = ps.problems.gmm_benchmark(2, 1, 0)
    res = ps.sample(problem, "mcgdiff", 50, 3, time_grid=[900, 400, 10])
    with pytest.raises(ValueError, match="named time_grid"):
        chain_gap(problem, res)
    res = ps.sample(problem, "mcgdiff", 50, 600)
    with pytest.raises(ValueError, match="num_steps 600"):
        chain_gap(problem, res)
    with pytest.raises(ValueError, match="floor"):
        chain_gap(problem, ps.sample(problem, "mcgdiff", 50, 3), floor="no")


def test_compare_prints_the_chain_gap_only_when_asked():
    problem = ps.problems.gmm_benchmark(2, 1, 0)
    plain = compare({"g": problem}, ["mcgdiff"], num_particles=50, num_steps=3, figures=False)
    assert "SW K vs 2K" not in plain.to_markdown() and "chain_gap_sw" not in plain.rows[0]
    asked = compare({"g": problem}, ["mcgdiff"], num_particles=50, num_steps=3, figures=False, chain_gap=True)
    assert "SW K vs 2K" in asked.to_markdown() and asked.rows[0]["chain_gap_sw_floor"] > 0
