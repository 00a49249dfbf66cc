"""Independent runs of a particle sampler (``runs=R``): one batch, merged per problem, R chains."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import posterior as ps
from posterior.samplers.exact.particle_sampler import auto_runs

METHODS = ("tds", "smc", "mcgdiff")


@pytest.fixture(scope="module")
def problem():
    return ps.problems.gmm_benchmark(4, 1, seed=0)


@pytest.mark.parametrize("method", METHODS)
def test_runs_are_the_rows_of_a_repeated_problem(problem, method):
    """``runs=R`` is the sampler on ``problem.repeat(R)`` with ``N / R`` particles; the merge
    weighs run ``r``'s particles by ``Z_r w_ri / sum Z`` and resamples them."""
    R, n = 4, 8
    merged = ps.sample(problem, method, R * n, 6, seed=1, runs=R)
    rows = ps.sample(problem.repeat(R), method, n, 6, seed=1, runs=1)
    assert merged.samples.shape == (R * n, 4) and merged.options["merge"] == "evidence"
    assert torch.equal(merged.stats["run_samples"], rows.samples.reshape(R * n, 4))
    assert torch.equal(merged.stats["run_log_evidence"], rows.log_evidence)
    expected = torch.logsumexp(rows.log_evidence, 0) - math.log(R)
    assert torch.allclose(merged.log_evidence, expected)
    assert torch.equal(merged.ess, rows.ess.amin(0))
    pooled = (rows.log_weights + torch.log_softmax(rows.log_evidence, 0)[:, None]).reshape(R * n)
    assert torch.allclose(merged.log_weights, pooled)
    assert torch.allclose(merged.log_weights.exp().sum(), torch.tensor(1.0))
    assert merged.stats["merge_ess"] == pytest.approx(float(1 / pooled.exp().pow(2).sum()), rel=1e-4)
    z = rows.log_evidence.exp()
    assert merged.stats["effective_runs"] == pytest.approx(float(z.sum() ** 2 / z.pow(2).sum()), rel=1e-4)


def test_equal_merge_keeps_each_runs_draws(problem):
    """``merge="equal"``: each run weighs ``1 / R``; the runs' own draws are kept."""
    R, n = 4, 8
    merged = ps.sample(problem, "smc", R * n, 6, seed=1, runs=R, merge="equal")
    rows = ps.sample(problem.repeat(R), "smc", n, 6, seed=1, runs=1)
    assert merged.options["merge"] == "equal"
    assert torch.allclose(merged.log_weights, (rows.log_weights - math.log(R)).reshape(R * n))
    assert torch.equal(merged.stats["run_samples"], rows.samples.reshape(R * n, 4))
    for r, part in enumerate(merged.split_runs()):
        assert torch.equal(part.samples, rows.samples[r])


def test_one_run_is_the_plain_sampler(problem):
    a = ps.sample(problem, "smc", 16, 6, seed=2)
    b = ps.sample(problem, "smc", 16, 6, seed=2, runs=1)
    assert torch.equal(a.samples, b.samples) and "run_log_evidence" not in b.stats


@pytest.mark.parametrize(
    ("num_particles", "runs"), [(4, 1), (7, 1), (8, 2), (64, 16), (128, 32), (2000, 25), (4096, 32)]
)
def test_auto_runs_are_bounded_and_at_least_four_particles(num_particles, runs):
    assert auto_runs(num_particles) == runs


def test_tds_runs_auto_by_default(problem):
    """tds's default ``runs="auto"`` is the same as the number of runs it resolves to, which the
    result's options record."""
    a = ps.sample(problem, "tds", 24, 6, seed=2)
    assert a.options["runs"] == auto_runs(24) == 6 and a.run_size == 4
    b = ps.sample(problem, "tds", 24, 6, seed=2, runs=6)
    assert torch.equal(a.samples, b.samples) and a.stats["run_log_evidence"].shape == (6,)


def test_tds_runs_auto_is_one_run_with_the_isotropic_twist(problem):
    """Runs pay only with the covariance twist: with the isotropic one (asked for, or where the
    covariance twist does not apply: non-Gaussian noise) ``"auto"`` is one run."""
    assert ps.sample(problem, "tds", 24, 6, seed=2, prior_var="auto").options["runs"] == 1
    laplace = ps.InverseProblem(problem.prior, problem.operator, problem.y, ps.noise.Laplace(0.5))
    assert ps.sample(laplace, "tds", 24, 6, seed=2).options["runs"] == 1


def test_split_runs_and_arviz_chains(problem):
    pytest.importorskip("arviz")
    R, n = 3, 5
    res = ps.sample(problem, "mcgdiff", R * n, 6, seed=0, runs=R)
    parts = res.split_runs()
    assert len(parts) == R
    for r, part in enumerate(parts):
        assert torch.equal(part.samples, res.stats["run_samples"][r * n : (r + 1) * n])
        assert torch.equal(part.log_evidence, res.stats["run_log_evidence"][r])
        assert torch.allclose(part.log_weights.exp().sum(), torch.tensor(1.0))
    data = res.to_arviz(one_per_run=False)  # each run a chain of its particles
    x = data["posterior"]["x"]
    assert x.sizes["chain"] == R and x.sizes["draw"] == n
    assert data["sample_stats"]["log_evidence"].sizes["chain"] == R
    data = res.to_arviz()  # the default: one chain, one draw per run, the runs' log Z per draw
    assert data["posterior"]["x"].sizes["chain"] == 1 and data["posterior"]["x"].sizes["draw"] == R
    assert data["sample_stats"]["log_evidence"].sizes["draw"] == R
    assert ps.sample(problem, "mcgdiff", 6, 6, seed=0).split_runs()[0].samples.shape == (6, 4)


def test_batched_problems_keep_their_runs_apart(problem):
    y = torch.stack([problem.y, problem.y + 3.0])
    batch = ps.InverseProblem(problem.prior, problem.operator, y, problem.noise_std)
    res = ps.sample(batch, "smc", 12, 6, seed=0, runs=3)
    assert res.samples.shape == (2, 12, 4) and res.stats["run_log_evidence"].shape == (2, 3)
    single = ps.sample(batch.select(1, 2), "smc", 12, 6, seed=0, runs=3)
    assert single.stats["run_log_evidence"].shape == (1, 3)


@pytest.mark.parametrize("runs", [0, -1, 2.5, True, "many"])
def test_bad_runs_are_named(problem, runs):
    with pytest.raises(ValueError, match="runs"):
        ps.sample(problem, "tds", 8, 4, runs=runs)


def test_runs_must_divide_the_particles(problem):
    with pytest.raises(ValueError, match="runs=3 must divide num_particles=8"):
        ps.sample(problem, "smc", 8, 4, runs=3)


def test_one_per_run_keeps_one_particle_of_each_run(problem):
    R, n = 5, 4
    res = ps.sample(problem, "tds", R * n, 6, seed=0, runs=R)
    one = res.one_per_run(seed=3)
    assert one.samples.shape == (R, 4) and one.options["draws_per_run"] == 1
    for r in range(R):  # each draw is a particle of its own run
        block = res.stats["run_samples"][r * n : (r + 1) * n]
        assert (block == one.samples[r]).all(-1).any()
    assert torch.equal(one.samples, res.one_per_run(seed=3).samples)
    assert torch.equal(one.stats["run_log_evidence"], res.stats["run_log_evidence"])
    assert one.num_evals == res.num_evals and len(one.split_runs()) == 1  # independent draws


def test_one_per_run_of_batched_problems(problem):
    y = torch.stack([problem.y, problem.y + 3.0])
    batch = ps.InverseProblem(problem.prior, problem.operator, y, problem.noise_std)
    one = ps.sample(batch, "mcgdiff", 12, 6, seed=0, runs=3).one_per_run()
    assert one.samples.shape == (2, 3, 4) and one.log_weights.shape == (2, 3)


def test_one_per_run_needs_runs(problem):
    with pytest.raises(ValueError, match="runs > 1"):
        ps.sample(problem, "tds", 8, 4, runs=1).one_per_run()


def test_run_size_is_the_scale_of_the_ess(problem):
    """``ess`` of a result of runs is the smallest run's, so reports divide it by the run size."""
    from posterior.diagnostics.report import evaluate

    R, n = 4, 6
    res = ps.sample(problem, "tds", R * n, 6, seed=0, runs=R)
    assert res.run_size == n and res.one_per_run().run_size == n
    assert ps.sample(problem, "tds", 10, 6, seed=0, runs=1).run_size == 10
    row = evaluate(problem, res)
    assert row["ess_min"] == pytest.approx(float(res.ess.min()) / n)
    assert 0 < row["ess_min"] <= 1


def test_report_figures_show_draws_of_different_runs(problem):
    """The first draws of a result of runs, as figures show them, are the runs' first particles."""
    from posterior.diagnostics.report import _interleave_runs

    R, n = 3, 4
    res = ps.sample(problem, "mcgdiff", R * n, 6, seed=0, runs=R)
    shown = _interleave_runs(res)
    assert torch.equal(shown[:R], res.samples[::n])
    assert torch.equal(shown.sort(0).values, res.samples.sort(0).values)  # the same draws
    one = res.one_per_run()
    assert torch.equal(_interleave_runs(one), one.samples)


def test_a_degenerate_run_of_many_particles_warns_naming_the_run():
    """Runs of 4 are meant to end on one particle and stay silent about their ESS; a run of 32
    whose ESS falls below 2 warns, naming a run and its problem (the DPS-like twist collapses on
    this problem: median ESS 1.5-2 of 512 in one run). The runs' evidences then spread so far that
    the merge rests on one run, which warns too."""
    base = ps.problems.gmm_benchmark(2, 1, seed=1)
    problem = ps.problems.simulate(base.prior, base.operator, float(base.sigma[0]), 4, seed=3)
    options = {"num_steps": 20, "seed": 0, "twist_scale": 0.0, "prior_var": "auto"}
    with pytest.warns(ps.particles.ParticleDegeneracyWarning, match=r"of 16 runs \(run \d+ of problem \d+"):
        ps.sample(problem, "tds", 128, runs=4, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps.sample(problem, "tds", 128, runs=32, **options)
    degenerate = ps.particles.ParticleDegeneracyWarning
    messages = [str(w.message) for w in caught if issubclass(w.category, degenerate)]
    assert not [m for m in messages if "effective sample size" in m], messages
    assert [m for m in messages if "effective runs of 32" in m], messages


@pytest.mark.slow
def test_evidence_merge_converges_as_runs_grow_at_a_fixed_run_size():
    """Runs of 4 particles on a two-mode 1-D mixture (weights 0.9 / 0.1 at -2 / +2): weighting
    each run by its evidence converges to the chain's posterior mean as the runs grow in number;
    equal weights keep the bias of one run of 4 however many runs there are (measured,
    ``benchmarks/runs_merge.py``: 0.10 at 16 and 128 runs, where the chain's is 0.62; evidence
    weights 0.59 +- 0.02 and 0.61 +- 0.01). Oracle: the 20-step chain's posterior by
    importance sampling (:func:`chain_posterior`), its error from its ESS."""
    from posterior.diagnostics.oracles import chain_posterior

    K, B, n = 20, 100, 4
    prior = ps.GaussianMixturePrior(
        torch.tensor([0.9, 0.1]), torch.tensor([[-2.0], [2.0]]), torch.full((2, 1), 0.25)
    )
    problem = ps.InverseProblem(prior, torch.eye(1), torch.full((B, 1), 1.0), 1.0)
    ref = chain_posterior(problem.select(0, 1), K, num_draws=400_000, num_samples=400_000, seed=1)
    target = float(ref.samples.mean())
    ref_se = float(ref.samples.std()) / float(ref.ess[0]) ** 0.5

    def mean_and_se(runs: int, merge: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ps.particles.ParticleDegeneracyWarning)
            res = ps.sample(problem, "tds", runs * n, K, seed=0, runs=runs, merge=merge)
        per_problem = res.samples.mean((1, 2))  # [B]
        return float(per_problem.mean()), (float(per_problem.var()) / B + ref_se**2) ** 0.5

    for runs in (16, 128):
        mean, se = mean_and_se(runs, "evidence")
        assert abs(mean - target) < 4 * se, (runs, mean, target, se)
        mean, se = mean_and_se(runs, "equal")
        assert mean < target - 8 * se, (runs, mean, target, se)  # the runs' own bias, > 8 standard errors


def test_runs_of_one_particle_need_the_evidence_merge(problem):
    """Runs of one particle merged equally would be the proposal itself; merged by evidence they
    are importance sampling over the runs."""
    with pytest.raises(ValueError, match="runs=8 with merge='equal' leaves one particle per run"):
        ps.sample(problem, "tds", 8, 4, runs=8, merge="equal")
    res = ps.sample(problem, "smc", 8, 4, runs=8)
    assert res.options["merge"] == "evidence" and res.samples.shape == (8, 4)


@pytest.mark.parametrize("merge", ["mean", 1, None])
def test_bad_merge_is_named(problem, merge):
    with pytest.raises(ValueError, match="merge must be one of"):
        ps.sample(problem, "tds", 8, 4, merge=merge)


def test_a_failed_run_weighs_nothing_and_its_problem_goes_on():
    """Three runs of 4 of one problem, run 1 failed (``Z_1 = 0``): the evidence merge weighs the
    others 1 : 3 by their ``Z``, the equal merge 1 : 1; no draw comes from the failed run and the
    problem is not failed; ``log_evidence`` is the log of the mean of the three ``Z``."""
    from posterior.particles.engine import SMCOutput
    from posterior.samplers.exact.particle_sampler import merge_runs

    R, n = 3, 4
    particles = torch.arange(R * n, dtype=torch.float64).reshape(R, n, 1)
    samples = particles.clone()
    samples[1] = math.nan
    out = SMCOutput(
        samples=samples,
        log_weights=torch.full((R, n), -math.log(n), dtype=torch.float64),
        particles=particles,
        ess=torch.full((R, 2), float(n), dtype=torch.float64),
        resampled=torch.zeros(R, 2, dtype=torch.bool),
        log_evidence=torch.tensor([0.0, -math.inf, math.log(3.0)], dtype=torch.float64),
        failed=torch.tensor([False, True, False]),
    )
    for merge, share in (("evidence", [0.25, 0.0, 0.75]), ("equal", [0.5, 0.0, 0.5])):
        res = merge_runs(out, "x", R, merge, generator=torch.Generator().manual_seed(0))
        weights = res.log_weights.exp().reshape(R, n).sum(1)
        assert torch.allclose(weights, torch.tensor(share, dtype=torch.float64)), (merge, weights)
        assert "failed" not in res.stats and torch.isfinite(res.samples).all()
        assert not ((res.samples >= n) & (res.samples < 2 * n)).any()  # none of the failed run's
        assert torch.allclose(res.log_evidence, torch.tensor([math.log(4.0 / 3.0)], dtype=torch.float64))
