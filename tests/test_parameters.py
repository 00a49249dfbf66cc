"""ps.Unknown and a problem's registry of unknowns (posterior.parameters)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

import posterior as ps
from posterior.parameters import Parameters
from posterior.samplers.joint._inner import draw_one


def _base() -> ps.InverseProblem:
    return ps.problems.gmm_benchmark(4, 2, seed=0)


def _unknown_noise(batch: int = 1) -> ps.InverseProblem:
    base = _base()
    y = base.y_batch.expand(batch, -1).clone() if batch > 1 else base.y
    return ps.InverseProblem(
        base.prior, base.operator, y, ps.noise.Gaussian(ps.Unknown(dist.LogNormal(-1.0, 0.5)))
    )


def test_unknown_refuses_bad_priors_in_one_line() -> None:
    for bad, match in (
        (1.0, "distribution"),
        (dist.Normal(torch.zeros(2), 1.0), "scalar"),
        (dist.Poisson(3.0), "continuous"),
    ):
        with pytest.raises((TypeError, ValueError), match=match) as err:
            ps.Unknown(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"Gaussian: std.*\[0, inf\)"):
        ps.noise.Gaussian(ps.Unknown(dist.Normal(0.0, 1.0)))
    with pytest.raises(ValueError, match=r"Poisson: gain"):
        ps.noise.Poisson(ps.Unknown(dist.Normal(0.0, 1.0)))
    with pytest.raises(ValueError, match="name"):
        ps.Unknown(dist.LogNormal(0.0, 1.0), name="not a name")


def test_registry_names_transforms_and_log_jacobian() -> None:
    problem = _unknown_noise()
    params = Parameters(problem)
    assert params.names == ["std"] and params.size == 1 and params
    gen = torch.Generator().manual_seed(0)
    values = params.sample_prior((3, 5), gen)
    assert values["std"].shape == (3, 5) and (values["std"] > 0).all()
    u = params.to_unconstrained(values)
    back, _ = params.from_unconstrained(u)
    torch.testing.assert_close(back["std"], values["std"])
    # the log-density of u = log std under LogNormal(-1, 0.5) is the Normal(-1, 0.5) density
    _, log_u = params.log_density_unconstrained(u)
    torch.testing.assert_close(
        log_u, dist.Normal(-1.0, 0.5).log_prob(u[..., 0].float()).double(), atol=1e-5, rtol=0
    )
    assert torch.isinf(params.log_prior({"std": torch.tensor([-1.0], dtype=torch.float64)})).all()
    assert not Parameters(_base())  # nothing unknown


def test_closed_forms_refuse_unknowns() -> None:
    problem = _unknown_noise()
    assert not problem.has_exact_posterior
    with pytest.raises(ValueError, match="unknown std"):
        problem.exact_log_evidence()


def test_known_samplers_refuse_a_problem_with_unknowns() -> None:
    with pytest.raises(ValueError, match=r"'tds' needs every parameter known.*unknown std.*pmmh") as err:
        ps.sample(_unknown_noise(), "tds", 4, 4)
    assert "\n" not in str(err.value)


def test_instantiate_noise_rows_and_operator_families() -> None:
    problem = _unknown_noise(batch=2)
    params = Parameters(problem)
    values = {"std": torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)}
    (at,) = params.instantiate(problem, values)
    assert at.batch_size == 6 and not Parameters(at)
    torch.testing.assert_close(at.sigma, values["std"].reshape(-1).float())
    torch.testing.assert_close(at.y_batch, problem.y_batch.repeat_interleave(3, 0))
    # a Gaussian blur of unknown width and a user operator A(x, gain): one problem per value
    blur = ps.operators.Blur.gaussian(ps.Unknown(dist.Uniform(0.5, 2.0)), shape=(1, 2, 2))
    assert blur.unknowns["width"].prior.low == 0.5
    member = blur.at(width=1.5)
    assert isinstance(member, ps.operators.Blur)
    torch.testing.assert_close(member.kernel, ps.operators.gaussian_kernel(1.5))
    user = ps.operators.Parametric(lambda x, gain: gain * x[:, :2], gain=ps.Unknown(dist.Gamma(4.0, 4.0)))
    y = torch.zeros(2)
    p2 = ps.InverseProblem(_base().prior, user, y, ps.noise.Gaussian(ps.Unknown(dist.LogNormal(-1.0, 0.5))))
    reg = Parameters(p2)
    assert reg.names == ["std", "gain"] and reg.operator_unknown
    rows = reg.instantiate(p2, {"std": torch.tensor([[0.1, 0.2]]), "gain": torch.tensor([[2.0, 3.0]])})
    assert len(rows) == 2
    x = torch.ones(1, 4)
    torch.testing.assert_close(rows[1].operator.A(x), torch.full((1, 2), 3.0))
    torch.testing.assert_close(rows[1].sigma, torch.tensor([0.2]))
    with pytest.raises(ValueError, match="named 'std'"):
        Parameters(
            ps.InverseProblem(
                _base().prior,
                ps.operators.Parametric(lambda x, std: std * x[:, :2], std=ps.Unknown(dist.Gamma(2.0, 2.0))),
                y,
                ps.noise.Gaussian(ps.Unknown(dist.LogNormal(0.0, 1.0))),
            )
        )


def test_draw_one_picks_a_run_in_proportion_to_its_evidence() -> None:
    """Three runs of two particles each with evidences 1 : 2 : 7 (equal-weight merge): the
    run of the draw has those frequencies (within 4 standard errors over 20,000 draws)."""
    samples = torch.arange(6.0).reshape(1, 6, 1).expand(20_000, 6, 1)
    log_z = torch.tensor([1.0, 2.0, 7.0]).log().expand(20_000, 3)
    result = ps.Result(samples=samples, method="tds", stats={"run_log_evidence": log_z}, options={"runs": 3})
    run = (draw_one(result, torch.Generator().manual_seed(0))[:, 0] // 2).long()
    freq = torch.bincount(run, minlength=3).double() / 20_000
    expected = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)
    assert ((freq - expected).abs() < 4 * (expected * (1 - expected) / 20_000).sqrt()).all(), freq
    merged = ps.Result(
        samples=samples,
        method="tds",
        stats={"run_log_evidence": log_z},
        options={"runs": 3, "merge": "evidence"},
    )
    freq = (
        torch.bincount((draw_one(merged, torch.Generator().manual_seed(0))[:, 0] // 2).long(), minlength=3)
        / 20_000
    )
    assert (freq - 1 / 3).abs().max() < 4 * math.sqrt(2 / 9 / 20_000), freq  # already merged: uniform


def test_pmmh_result_parameters_shapes_save_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problem = _unknown_noise(batch=2)
    r = ps.sample(problem, "pmmh", num_particles=6, num_steps=3, seed=0, particles=4, iterations=5, burn_in=2)
    assert r.samples.shape == (2, 6, 4) and r.parameters["std"].shape == (2, 6)
    assert r.stats["chain.std"].shape == (2, 2, 3) and r.acceptance.shape == (2, 5)
    torch.testing.assert_close(r.parameters["std"], r.stats["chain.std"].reshape(2, 6))
    data = r.to_arviz()  # the unknowns are posterior variables with the chains of x
    assert data["posterior"]["std"].shape == (2, 3, 2) and data["posterior"]["x"].shape[:3] == (2, 3, 2)
    torch.testing.assert_close(
        torch.as_tensor(data["posterior"]["std"].values[..., 1]), r.stats["chain.std"][1].double()
    )
    back = ps.Result.load(r.save(tmp_path / "r.safetensors"))
    torch.testing.assert_close(back.parameters["std"], r.parameters["std"])
    one = ps.sample(
        _unknown_noise(), "pmmh", num_particles=3, num_steps=3, seed=0, particles=4, iterations=4, burn_in=1
    )
    assert one.parameters["std"].shape == (3,) and one.samples.shape == (3, 4)
    for options, match in (
        ({"inner": "dps"}, "inner"),
        ({"inner_options": {"bogus": 1}}, "bogus"),
        ({"scale": 0.0}, "scale"),
        ({"target_acceptance": 1.0}, "target_acceptance"),
    ):
        with pytest.raises(ValueError, match=match):
            ps.sample(problem, "pmmh", 2, 2, **options)


def test_pmmh_on_an_unknown_poisson_gain() -> None:
    """Counts through a non-negative intensity: the gain's draws stay positive, one per draw."""
    base = _base()
    op = ps.operators.Nonlinear(lambda x: (x[:, :2] / 8).exp())
    counts = torch.tensor([3.0, 0.0])
    noise = ps.noise.Poisson(ps.Unknown(dist.Gamma(20.0, 2.0)))
    problem = ps.InverseProblem(base.prior, op, counts, noise)
    r = ps.sample(problem, "pmmh", 4, 3, seed=0, particles=4, iterations=4, burn_in=2)
    assert r.parameters["gain"].shape == (4,) and (r.parameters["gain"] > 0).all()
