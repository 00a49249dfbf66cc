"""ArviZ conversion: layout, stacking runs as chains, both arviz lines, every registered method."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import posterior as ps
from posterior.diagnostics.arviz import arviz_major_version, event_dims, run_chains, to_arviz
from posterior.samplers.result import Result
from tests.diagnostics._samplers import oracle_samplers_registered

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


@pytest.fixture(autouse=True, scope="module")
def _test_samplers():
    with oracle_samplers_registered():
        yield


def _groups(data) -> set[str]:
    """Group names: ``InferenceData.groups()`` (0.x) or the DataTree's children (1.x)."""
    return set(data.groups()) if callable(data.groups) else set(data.children)


def _group(data, name: str):
    """A group as an ``xarray.Dataset`` on either arviz line."""
    node = data[name]
    return node.to_dataset() if hasattr(node, "to_dataset") else node


@pytest.fixture(scope="module")
def problem() -> ps.InverseProblem:
    return ps.problems.gmm_benchmark(dim=4, obs_dim=2, seed=0)


def test_container_type_follows_arviz_line(problem) -> None:
    data = to_arviz(ps.sample(problem, "test_oracle", num_particles=64, num_steps=5, seed=0))
    if arviz_major_version() < 1:
        assert isinstance(data, az.InferenceData)
    else:
        import xarray as xr

        assert isinstance(data, xr.DataTree)


def test_single_result_layout_and_stats(problem) -> None:
    res = ps.sample(problem, "test_oracle", num_particles=64, num_steps=5, seed=0)
    data = to_arviz(res, problem=problem)
    assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= _groups(data)
    post = _group(data, "posterior")
    assert post["x"].dims == ("chain", "draw", "x_dim")
    assert post["x"].shape == (1, 64, 4)
    torch.testing.assert_close(torch.as_tensor(post["x"].values[0]), res.samples.double())
    stats = _group(data, "sample_stats")
    assert stats["ess"].dims == ("chain", "step") and stats["ess"].shape == (1, 5)
    assert stats["log_weight"].dims == ("chain", "particle")
    assert stats["resampled"].dtype == bool
    assert float(stats["log_evidence"][0]) == pytest.approx(float(res.log_evidence))
    assert float(stats["num_evals"].sum()) == res.num_evals  # one entry per chain (tds: per run)
    assert stats["step_size"].dims == ("chain", "step_size_dim_0")
    assert _group(data, "observed_data")["y"].shape == (2,)
    torch.testing.assert_close(
        torch.as_tensor(_group(data, "constant_data")["x_true"].values), problem.truth.double()
    )
    summary = az.summary(data)
    assert len(summary) == 4


def test_run_chains_stacks_independent_runs_for_rhat(problem) -> None:
    data = run_chains(problem, "test_oracle", num_chains=4, num_particles=200, num_steps=2, seed=0)
    post = _group(data, "posterior")
    assert post["x"].shape == (4, 200, 4)
    chains = torch.as_tensor(post["x"].values)
    assert not torch.equal(chains[0], chains[1])  # independent seeds
    rhat = torch.as_tensor(az.rhat(data)["x"].values)
    # exact iid draws: R-hat is 1 up to O(1/sqrt(draws)) noise
    assert (rhat < 1.02).all(), rhat
    ess = torch.as_tensor(az.ess(data)["x"].values)
    assert (ess > 0.5 * 800).all(), ess


def test_rhat_flags_runs_that_disagree(problem) -> None:
    """R-hat must expose runs that land in different places (a broken sampler)."""
    runs = run_chains(
        problem, "test_oracle", num_chains=4, num_particles=200, num_steps=2, seed=0, return_results=True
    )
    shifted = [
        Result(samples=r.samples + 2.0 * i, method=r.method, batched=False) for i, r in enumerate(runs)
    ]
    rhat = torch.as_tensor(az.rhat(to_arviz(shifted))["x"].values)
    assert (rhat > 1.3).all(), rhat


def test_same_seed_same_chains(problem) -> None:
    a = run_chains(
        problem, "test_oracle", num_chains=2, num_particles=16, num_steps=1, seed=3, return_results=True
    )
    b = run_chains(
        problem, "test_oracle", num_chains=2, num_particles=16, num_steps=1, seed=3, return_results=True
    )
    for ra, rb in zip(a, b, strict=True):
        assert torch.equal(ra.samples, rb.samples)


def test_batched_results_keep_a_problem_dim(problem) -> None:
    batch = ps.problems.simulate(problem.prior, problem.operator, problem.noise_std, 3, seed=0)
    res = ps.sample(batch, "test_oracle", num_particles=32, num_steps=4, seed=0)
    data = to_arviz(res, problem=batch)
    post = _group(data, "posterior")
    assert post["x"].dims == ("chain", "draw", "problem", "x_dim")
    assert post["x"].shape == (1, 32, 3, 4)
    torch.testing.assert_close(torch.as_tensor(post["x"].values[0, :, 1]), res.samples[1].double())
    assert _group(data, "sample_stats")["ess"].dims == ("chain", "problem", "step")
    assert _group(data, "observed_data")["y"].shape == (3, 2)
    assert len(az.summary(data)) == 3 * 4
    one = to_arviz(res, problem=batch, problem_index=2)
    x = _group(one, "posterior")["x"]
    assert x.dims == ("chain", "draw", "x_dim")
    torch.testing.assert_close(torch.as_tensor(x.values[0]), res.samples[2].double())


def test_images_keep_channel_row_col() -> None:
    samples = torch.randn(10, 1, 4, 5)
    data = to_arviz(
        [
            Result(samples=samples, method="m", batched=False),
            Result(samples=samples + 1, method="m", batched=False),
        ]
    )
    x = _group(data, "posterior")["x"]
    assert x.dims == ("chain", "draw", "channel", "row", "col")
    assert x.shape == (2, 10, 1, 4, 5)
    assert len(az.summary(data)) == 20
    assert event_dims((3,)) == ("x_dim",)
    assert event_dims((2, 2)) == ("x_dim_0", "x_dim_1")


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="Result"):
        to_arviz([])
    a = Result(samples=torch.randn(5, 2), method="m", batched=False)
    b = Result(samples=torch.randn(6, 2), method="m", batched=False)
    with pytest.raises(ValueError, match="equal sample shapes"):
        to_arviz([a, b])
    c = Result(samples=torch.randn(2, 5, 2), method="m")
    with pytest.raises(ValueError, match="problem_index"):
        to_arviz(c, problem_index=2)
    with pytest.raises(ValueError, match="num_chains"):
        run_chains(ps.problems.gmm_demo(), "test_oracle", num_chains=0)


# Every registered method (the real samplers as they land), tiny runs: to_arviz + az.summary.
_REAL = sorted(m for m in ps.METHODS if not m.startswith("test_"))


@pytest.mark.parametrize("method", _REAL)
def test_every_method_converts_and_summarises(method: str) -> None:
    problem = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)
    res = ps.sample(problem, method, num_particles=16, num_steps=8, seed=0)
    data = to_arviz(res, problem=problem)
    summary = az.summary(data)
    assert len(summary) == 2
    assert np.isfinite(summary.iloc[:, 0].to_numpy(dtype=float)).all()
    stats = _group(data, "sample_stats")
    assert float(stats["num_evals"].sum()) == res.num_evals  # one entry per chain (tds: per run)
    if res.ess is not None:
        assert stats["ess"].shape[-1] == res.ess.shape[-1]
    if res.log_evidence is not None:
        assert "log_evidence" in stats


@pytest.mark.skipif("mala" not in ps.METHODS, reason="mala not registered")
def test_mcmc_chains_become_arviz_chains() -> None:
    problem = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)
    res = ps.sample(problem, "mala", num_particles=4, num_steps=60, seed=0, keep_chain=True)
    draws = res.stats["chain"]  # [N, D, d]
    data = to_arviz([res, res], problem=problem)
    x = _group(data, "posterior")["x"]
    assert x.shape == (8, draws.shape[1], 2)
    torch.testing.assert_close(torch.as_tensor(x.values[:4]), draws.double())
    stats = _group(data, "sample_stats")
    assert stats["acceptance"].dims == ("run", "step") and "chain" not in stats
    assert len(az.summary(data)) == 2
    plain = _group(to_arviz(res, use_mcmc_chains=False), "posterior")["x"]
    assert plain.shape == (1, 4, 2)


def test_netcdf_round_trip_on_either_arviz_line(problem, tmp_path) -> None:
    import xarray as xr

    from posterior.diagnostics.arviz import save_netcdf

    result = ps.sample(problem, "test_oracle", num_particles=32, num_steps=4, seed=0)
    data = to_arviz(result, problem=problem)
    path = save_netcdf(data, tmp_path / "post.nc")
    for back in (az.from_netcdf(path), xr.open_datatree(path)):
        assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= _groups(back)
        for group in ("posterior", "sample_stats", "observed_data"):
            got, want = _group(back, group), _group(data, group)
            for name in want.data_vars:
                assert got[name].dtype == want[name].dtype, name  # booleans stay booleans
                np.testing.assert_array_equal(got[name].values, want[name].values)
    with pytest.raises(TypeError, match="to_arviz"):
        save_netcdf(result, tmp_path / "x.nc")


def _runs_result(R: int, n: int, shift: float = 0.0, copies: bool = False, seed: int = 0) -> Result:
    """A result of ``R`` independent runs of ``n`` particles of N(shift, 1) in 3-D, laid out as a
    particle sampler's (``stats["run_samples"]`` run by run, per-run log Z and ESS). ``copies``:
    every particle of a run is one draw repeated (a run that ended on one ancestor)."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randn(R, 1 if copies else n, 3, generator=gen).expand(R, n, 3) + shift
    draws = draws.reshape(1, R * n, 3)
    stats = {
        "run_samples": draws.clone(),
        "run_log_evidence": torch.randn(1, R, generator=gen),
        "run_ess": torch.full((1, R, 5), float(n)),
    }
    return Result(
        samples=draws.clone(),
        method="tds",
        log_evidence=torch.zeros(1),
        log_weights=torch.full((1, R * n), -math.log(R * n)),
        options={"runs": R, "num_particles": R * n},
        stats=stats,
    )


def test_runs_are_one_chain_of_one_draw_per_run_with_per_run_stats() -> None:
    R, n = 64, 4
    res = _runs_result(R, n, copies=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shape warning, no NaN
        data = to_arviz(res, problem_index=0)
    x = _group(data, "posterior")["x"]
    assert x.dims == ("chain", "draw", "x_dim") and x.shape == (1, R, 3)
    runs = res.stats["run_samples"][0].reshape(R, n, 3)
    assert torch.equal(torch.as_tensor(x.values[0]).float(), runs[:, 0])  # each run's (only) draw
    stats = _group(data, "sample_stats")
    assert stats["log_evidence"].dims == ("chain", "draw") and stats["ess"].dims == ("chain", "draw", "step")
    torch.testing.assert_close(
        torch.as_tensor(stats["log_evidence"].values[0]), res.stats["run_log_evidence"][0].double()
    )
    assert stats["log_weight"].shape == (1, R, n)
    torch.testing.assert_close(
        torch.as_tensor(stats["log_weight"].values).exp().sum(-1), torch.ones(1, R, dtype=torch.float64)
    )
    # independent draws: arviz counts about R of them (the particles' copies are not counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one chain: arviz warns that R-hat needs two
        ess = torch.as_tensor(az.ess(data)["x"].values)
    assert ((ess > 0.5 * R) & (ess < 2 * R)).all(), ess


def test_rhat_is_one_for_identical_runs_and_large_for_a_shifted_one() -> None:
    """Four results of 64 independent runs each: R-hat over the four chains is 1 up to
    O(1/sqrt(256)) noise when they share a distribution, and far above the usual 1.01 mark when one
    is shifted by 3 standard deviations (about 1.8 on the raw draws; arviz's rank-normalised R-hat
    saturates near 1.5 once the shifted chain holds all the top ranks)."""
    same = [_runs_result(64, 4, copies=True, seed=s) for s in range(4)]
    rhat = torch.as_tensor(az.rhat(to_arviz(same))["x"].values)
    assert (rhat < 1.05).all(), rhat
    shifted = [*same[:3], _runs_result(64, 4, shift=3.0, copies=True, seed=3)]
    rhat = torch.as_tensor(az.rhat(to_arviz(shifted))["x"].values)
    assert (rhat > 1.3).all(), rhat
    # all particles of each run as its chain: copies make identical runs look unconverged
    rhat = torch.as_tensor(az.rhat(to_arviz(same[0], one_per_run=False))["x"].values)
    assert (rhat > 1.5).all(), rhat
