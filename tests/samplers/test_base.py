"""ps.sample's universal options: the time grid every diffusion method walks."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.samplers.base import DEFAULT_TIME_GRID

#: methods that walk the diffusion grid through ``Sampler.time_pairs``
GRID_METHODS = ["dps", "pigdm", "ddrm", "mmps", "diffpir", "score_ald", "reddiff", "pnp_admm"]


def small_problem(schedule: ps.NoiseSchedule | None = None) -> ps.InverseProblem:
    return ps.problems.gmm_benchmark(4, 2, seed=0, schedule=schedule)


def record_times(problem: ps.InverseProblem) -> list[int]:
    """Patch the prior to record the time of every network call."""
    prior, seen = problem.prior, []
    model_output = prior.model_output

    def spy(x, t):
        seen.extend(t.unique().tolist())
        return model_output(x, t)

    prior.model_output = spy
    return seen


@pytest.mark.parametrize("method", GRID_METHODS)
def test_methods_walk_the_given_grid(method: str) -> None:
    problem = small_problem()
    seen = record_times(problem)
    grid = [900, 500, 120, 30, 3]
    res = ps.sample(problem, method, num_particles=8, time_grid=grid, seed=0)
    assert set(seen) <= set(grid) and 900 in seen, seen
    assert res.options["time_grid"] == grid and res.options["num_steps"] == 5


@pytest.mark.parametrize("grid", ["trailing", "logsnr"])
def test_named_grid_reaches_the_sampler(grid: str) -> None:
    problem = small_problem()
    seen = record_times(problem)
    ps.sample(problem, "dps", num_particles=4, num_steps=10, time_grid=grid, seed=0)
    expected = problem.prior.schedule.timesteps(10, grid).tolist()
    assert sorted(set(seen), reverse=True) == expected


def test_default_grid_and_bad_grids() -> None:
    problem = small_problem()
    res = ps.sample(problem, "dps", num_particles=4, num_steps=5, seed=0)
    assert res.options["time_grid"] == DEFAULT_TIME_GRID and res.options["num_steps"] == 5
    with pytest.raises(ValueError, match="time_grid must be one of"):
        ps.sample(problem, "dps", num_particles=4, num_steps=5, time_grid="cosine")
    with pytest.raises(ValueError, match=r"num_steps \(4\) must equal the length of time_grid \(3\)"):
        ps.sample(problem, "dps", num_particles=4, num_steps=4, time_grid=[9, 5, 1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        ps.sample(problem, "dps", num_particles=4, time_grid=[1, 5, 9])
    with pytest.raises(ValueError, match="beyond"):
        ps.sample(problem, "dps", num_particles=4, time_grid=[1000, 5])


@pytest.mark.filterwarnings("ignore::posterior.ParticleDegeneracyWarning")
@pytest.mark.parametrize("schedule", [ps.EDMSchedule(), ps.FlowSchedule()], ids=["edm", "flow"])
@pytest.mark.parametrize("method", sorted(ps.METHODS))
def test_every_method_runs_on_every_schedule(method: str, schedule: ps.NoiseSchedule) -> None:
    problem = small_problem(schedule)
    steps = 6 if ps.METHODS[method].exact and method in ("mala", "gibbs") else 10
    res = ps.sample(problem, method, num_particles=8, num_steps=steps, seed=0, time_grid="trailing")
    assert res.samples.shape == (8, 4) and torch.isfinite(res.samples).all()


@pytest.mark.parametrize("method", ["tds", "smc", "mcgdiff"])
def test_particle_samplers_walk_the_given_grid(method: str) -> None:
    problem = small_problem()
    seen = record_times(problem)
    grid = [900, 500, 120, 30, 3]
    ps.sample(problem, method, num_particles=8, time_grid=grid, seed=0)
    assert set(seen) <= set(grid), seen
