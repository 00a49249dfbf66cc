"""The contract every registered method honours, checked on each one through one harness.

Registration (name, one-line summary, options stored under their names), batched and single
shapes, finite output in the problem's dtype, the same draws for a seed and other draws for
another, the network-call counters, one-line ``ValueError``s naming a bad option, and a
``FloatingPointError`` naming the method when the prior turns NaN. Statistical checks of each
method live in its own test file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import posterior as ps
from tests.samplers.approximate._linear_gaussian import NaNPrior, gaussian_problem

B, N, K = 3, 5, 4  # problems, particles (chains, draws), steps


@dataclass(frozen=True)
class Case:
    """What the harness needs to know of one method."""

    #: bad options, each with a regex its ``ValueError`` must match
    bad: tuple[tuple[dict[str, Any], str], ...]
    #: network evaluations and VJPs of a run on :func:`_problem` (a mixture prior), ``(B, N, K) -> int``
    evals: Callable[[int, int, int], int]
    vjps: Callable[[int, int, int], int] = lambda b, n, k: 0
    #: options for the NaN-prior run (a method that refuses such a prior at the clean level)
    nan_options: dict[str, Any] = field(default_factory=dict)


def _per_step(calls: int = 1) -> Callable[[int, int, int], int]:
    return lambda b, n, k: calls * b * n * k


_PARTICLE = (
    ({"threshold": 2.0}, "threshold"),
    ({"resampling": "bogus"}, "resampling"),
    ({"eta": 0.0}, "eta"),
)
_CHAINS = (({"thin": 0}, "thin"), ({"burn_in": -1}, "burn_in"), ({"init": "nope"}, "init"))

CASES: dict[str, Case] = {
    "smc": Case(_PARTICLE, _per_step()),
    "tds": Case((*_PARTICLE, ({"twist_scale": -1.0}, "twist_scale")), _per_step(), _per_step()),
    "mcgdiff": Case(_PARTICLE, _per_step()),
    "pgas": Case(
        (
            ({"particles": 1}, "particles"),
            ({"burn_in": 8}, "burn_in"),
            ({"sweeps": 0}, "sweeps"),
            ({"threshold": 0.0}, "threshold"),
            ({"twist_scale": -1.0}, "twist_scale"),
            ({"eta": 0.0}, "eta"),
        ),
        # ceil(N / 4) chains, each 1 + 8 sweeps of 16 particles: one evaluation and one VJP per step
        lambda b, n, k: b * -(-n // 4) * 9 * 16 * k,
        lambda b, n, k: b * -(-n // 4) * 9 * 16 * k,
    ),
    "mala": Case(
        (
            *_CHAINS,
            ({"step_size": 0.0}, "step_size"),
            ({"target_accept": 1.0}, "target_accept"),
            ({"noise_level": -2}, "noise_level"),
            ({"adapt": "yes"}, "adapt"),
        ),
        lambda b, n, k: 0,  # the mixture's score and density are closed forms, not network calls
        nan_options={"noise_level": 0, "metropolis": False, "init": "prior"},
    ),
    "gibbs": Case(
        (
            *_CHAINS,
            ({"rho_floor": 0.0}, "rho_floor"),
            ({"rho_decay": 1.0}, "rho_decay"),
            ({"prior_steps": 0}, "prior_steps"),
            ({"z_steps": 1.5}, "z_steps"),
        ),
        lambda b, n, k: 0,  # the mixture draws p(x | z) exactly
        nan_options={"init": "prior"},
    ),
    "dps": Case(
        (({"zeta": -1.0}, "zeta"), ({"variant": "linear"}, "variant"), ({"eta": 2.0}, "eta")),
        _per_step(),
        _per_step(),
    ),
    "pigdm": Case(
        (({"eta": 1.5}, "eta"), ({"guidance_scale": -1.0}, "guidance_scale")), _per_step(), _per_step()
    ),
    "ddrm": Case((({"eta": 1.5}, "eta"), ({"eta_b": -0.1}, "eta_b")), _per_step()),
    "sdedit": Case(
        (({"t0": 0.0}, "t0"), ({"t0": 1.5}, "t0"), ({"init": "zeros"}, "init"), ({"eta": -1.0}, "eta")),
        _per_step(),
    ),
    "score_ald": Case(
        (
            ({"steps_per_level": 0}, "steps_per_level"),
            ({"steps_per_level": 1.5}, "steps_per_level"),
            ({"step_size": 0.0}, "step_size"),
            ({"gamma_scale": -1.0}, "gamma_scale"),
        ),
        _per_step(3),  # steps_per_level = 3
    ),
    "diffpir": Case(
        (({"lam": 0.0}, "lam"), ({"zeta": 1.5}, "zeta"), ({"cg_iters": 0}, "cg_iters")), _per_step()
    ),
    "mmps": Case((({"cg_iters": 0}, "cg_iters"), ({"eta": 2.0}, "eta")), _per_step(), _per_step(2)),
    "pnp_admm": Case((({"lam": -1.0}, "lam"), ({"cg_iters": 0}, "cg_iters")), _per_step()),
    "reddiff": Case(
        (
            ({"lam": -1.0}, "lam"),
            ({"lr": 0.0}, "lr"),
            ({"time_sampling": "up"}, "time_sampling"),
            ({"init": "zeros"}, "init"),
        ),
        _per_step(),
    ),
    "csgm": Case(
        (({"ddim_steps": 0}, "ddim_steps"), ({"lr": 0.0}, "lr"), ({"latent_weight": -1.0}, "latent")),
        lambda b, n, k: b * n * (k * 3 * 2 + 3),  # per iteration a forward and a VJP pass of 3 DDIM steps
        lambda b, n, k: b * n * k * 3,
    ),
    "pmmh": Case(
        (
            ({"particles": 0}, "particles"),
            ({"burn_in": 60}, "burn_in"),
            ({"inner": "dps"}, "inner"),
            ({"target_acceptance": 1.0}, "target_acceptance"),
            ({"scale": -1.0}, "scale"),
        ),
        # on a problem without unknowns, particle independent MH: ceil(N / 30) chains, each 1 + 60
        # inner TDS runs of 32 particles, one evaluation and one VJP per particle and step
        lambda b, n, k: b * -(-n // 30) * 61 * 32 * k,
        lambda b, n, k: b * -(-n // 30) * 61 * 32 * k,
    ),
    "pgibbs": Case(
        (
            ({"particles": 1}, "particles"),
            ({"burn_in": 40}, "burn_in"),
            ({"theta_steps": 0}, "theta_steps"),
            ({"threshold": 0.0}, "threshold"),
            ({"scale": 0.0}, "scale"),
        ),
        # on a problem without unknowns, pgas's chain: ceil(N / 20) chains, each 1 + 40 sweeps of 16
        # particles, one evaluation and one VJP per particle and step
        lambda b, n, k: b * -(-n // 20) * 41 * 16 * k,
        lambda b, n, k: b * -(-n // 20) * 41 * 16 * k,
    ),
}
METHODS = sorted(CASES)


def _problem(batch: int = B) -> ps.InverseProblem:
    """``batch`` simulated problems: the 4-D mixture benchmark's prior, ``A: [2, 4]``, noise 0.3."""
    base = ps.problems.gmm_benchmark(4, 2, seed=0)
    return ps.problems.simulate(base.prior, base.operator, 0.3, batch, seed=0)


def test_every_registered_method_runs_the_contract() -> None:
    registered = {m for m in ps.METHODS if not m.startswith("test_")}
    assert registered == set(CASES), (
        "a registered method without a contract case (or a case without a method)"
    )


@pytest.mark.parametrize("method", METHODS)
def test_registration_and_options(method: str) -> None:
    cls = ps.METHODS[method]
    assert cls.name == method and isinstance(cls.exact, bool)
    assert cls.summary and "\n" not in cls.summary and len(cls.summary) < 120
    sampler = cls()  # every default is valid
    assert set(sampler.options()) == set(cls.option_names())  # each option stored under its name
    with pytest.raises(TypeError, match="has no option"):
        ps.sample(_problem(1), method, num_particles=2, num_steps=2, bogus_option=1)
    for value in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_particles must be a positive integer"):
            ps.sample(_problem(1), method, num_particles=value, num_steps=2)


@pytest.mark.parametrize("method", METHODS)
def test_shapes_batching_and_counters(method: str) -> None:
    cls, case = ps.METHODS[method], CASES[method]
    problem = _problem()
    r = ps.sample(problem, method, num_particles=N, num_steps=K, seed=1)
    assert r.method == method and r.batched and r.samples.shape == (B, N, 4)
    assert torch.isfinite(r.samples).all() and r.samples.dtype == problem.prior.dtype
    assert r.options["num_particles"] == N and r.options["num_steps"] == K
    assert r.num_evals == case.evals(B, N, K) and r.num_vjps == case.vjps(B, N, K)
    assert r.wall_time is not None and r.wall_time > 0
    if cls.interacting:  # particle samplers: evidence and ESS per problem
        assert r.log_evidence.shape == (B,) and r.ess.shape == (B, K)
    elif method == "pmmh":  # Metropolis-Hastings chains: acceptance per iteration, x per kept one
        assert r.acceptance.shape == (B, 60) and r.stats["chain"].shape == (B, 1, 30, 4)
    elif method == "pgibbs":  # Gibbs chains: the x sweeps' ESS, x per kept sweep
        assert r.ess.shape == (B, K) and r.stats["chain"].shape == (B, 1, 20, 4)
    elif method == "pgas":  # chains of conditional SMC sweeps: the particle ESS and the moves
        assert r.ess.shape == (B, K) and r.stats["moved"].shape == (B, 4)
        assert r.stats["chain"].shape == (B, 2, 4, 4)
    elif cls.exact:  # chains: acceptance per problem and iteration
        assert r.acceptance.shape == (B, K) and r.stats["divergences"].shape == (B, K)
    else:
        assert r.log_evidence is None and r.ess is None
    single = ps.sample(_problem(1).to(), method, num_particles=N, num_steps=K, seed=1)
    assert single.batched and single.samples.shape == (1, N, 4)
    one = ps.InverseProblem(problem.prior, problem.operator, problem.y_batch[0], 0.3)
    assert ps.sample(one, method, num_particles=N, num_steps=K, seed=1).samples.shape == (N, 4)


@pytest.mark.parametrize("method", METHODS)
def test_seeds_and_dtype(method: str) -> None:
    problem = _problem(2)
    a = ps.sample(problem, method, num_particles=N, num_steps=K, seed=1).samples
    b = ps.sample(problem, method, num_particles=N, num_steps=K, seed=1).samples
    c = ps.sample(problem, method, num_particles=N, num_steps=K, seed=2).samples
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = torch.Generator(device=problem.prior.device).manual_seed(1)
    assert torch.equal(ps.sample(problem, method, num_particles=N, num_steps=K, seed=gen).samples, a)
    double = ps.sample(problem.to(dtype=torch.float64), method, num_particles=N, num_steps=K, seed=1)
    assert double.samples.dtype == torch.float64 and torch.isfinite(double.samples).all()


@pytest.mark.parametrize("method", METHODS)
def test_bad_options_are_one_line_errors_naming_the_option(method: str) -> None:
    problem = _problem(1)
    for options, match in CASES[method].bad:
        with pytest.raises(ValueError, match=match) as err:
            ps.sample(problem, method, num_particles=2, num_steps=2, **options)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", METHODS)
def test_nan_prior_is_a_floating_point_error_naming_the_method(method: str) -> None:
    g = gaussian_problem()
    bad = ps.InverseProblem(NaNPrior(g.prior, t_nan=500), g.operator, g.y_batch, 0.5)
    with pytest.raises(FloatingPointError, match=rf"^{method}: "):
        ps.sample(bad, method, num_particles=4, num_steps=6, seed=0, **CASES[method].nan_options)


@pytest.mark.parametrize("method", METHODS)
def test_boolean_options_refuse_strings_and_store_the_bool(method: str) -> None:
    import inspect

    cls = ps.METHODS[method]
    flags = [
        name for name, p in inspect.signature(cls.__init__).parameters.items() if isinstance(p.default, bool)
    ]
    for name in flags:
        for text in ("False", "true"):
            with pytest.raises(ValueError, match=rf"^{name} must be True or False") as err:
                cls(**{name: text})
            assert "\n" not in str(err.value)
        assert cls(**{name: False}).options()[name] is False
