"""The Feynman-Kac engine on a linear-Gaussian state-space model with a Kalman-filter oracle."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from posterior.particles import Extras, FeynmanKacModel, ParticleDegeneracyWarning, run_smc

OBS = torch.tensor([0.5, -1.0, 2.0, 0.3, 1.2, -0.4, 0.8, 0.0])  # y_1 .. y_K
Q, R = 0.5, 0.3  # transition and observation variances


class RandomWalk(FeynmanKacModel):
    """``x_0 ~ N(0, 1)``, ``x_k = x_{k-1} + N(0, Q)``, ``y_k ~ N(x_k, R)``: bootstrap filter."""

    name = "walk"

    def __init__(self, nan_at: int | None = None) -> None:
        self.nan_at = nan_at

    def init(self, B: int, N: int, generator: torch.Generator, shared: torch.Generator) -> tuple:
        return torch.randn(B, N, 1, generator=generator, dtype=torch.float64), {}, None

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple:
        k = step_index(s)
        x = x + Q**0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        log_g = -0.5 * (OBS[k] - x[..., 0]) ** 2 / R - 0.5 * math.log(2 * math.pi * R)
        if k == self.nan_at:
            log_g = torch.full_like(log_g, math.nan)
        return x, extras, log_g

    def refresh(self, s: int, x: Tensor, extras: Extras) -> Extras:
        return extras  # no extras


def step_index(s: int) -> int:
    """The step ``k`` whose pair ends at ``s`` (see ``PAIRS``)."""
    return len(OBS) - 1 - s


def kalman_log_evidence() -> float:
    m, v, out = 0.0, 1.0, 0.0
    for y in OBS.tolist():
        v = v + Q
        out += -0.5 * (y - m) ** 2 / (v + R) - 0.5 * math.log(2 * math.pi * (v + R))
        gain = v / (v + R)
        m, v = m + gain * (y - m), (1 - gain) * v
    return out


def kalman_final() -> tuple[float, float]:
    m, v = 0.0, 1.0
    for y in OBS.tolist():
        v = v + Q
        gain = v / (v + R)
        m, v = m + gain * (y - m), (1 - gain) * v
    return m, v


PAIRS = [(k + 1, k) for k in range(len(OBS))][::-1]  # any K pairs: the toy ignores the times


@pytest.mark.parametrize("threshold", [0.5, "always", "never"])
@pytest.mark.parametrize("resampling", ["systematic", "multinomial", "stratified", "residual"])
def test_evidence_and_filter_match_kalman(threshold: float | str, resampling: str) -> None:
    """``Z`` is unbiased: the mean of ``Z_hat / Z`` over ``B`` runs is 1 within 4 standard errors;
    the filtering mean matches Kalman's within 4 standard errors."""
    B, N = 400, 64
    out = run_smc(
        RandomWalk(),
        PAIRS,
        B,
        N,
        torch.Generator().manual_seed(0),
        resampling=resampling,
        threshold=threshold,
    )
    ratio = torch.exp(out.log_evidence - kalman_log_evidence())
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / B**0.5
    m, v = kalman_final()
    est = (out.log_weights.exp() * out.particles[..., 0]).sum(-1)  # [B] weighted means
    assert abs(est.mean().item() - m) < 4 * est.std().item() / B**0.5 + 0.02 * v**0.5
    assert out.ess.shape == (B, len(OBS)) and out.resampled.shape == (B, len(OBS))
    if threshold == "never":
        assert not out.resampled[:, :-1].any()
    if threshold == "always":
        assert out.resampled.all()


def test_evidence_check_has_power() -> None:
    """A potential off by a constant factor fails the evidence check above."""

    class Off(RandomWalk):
        def step(self, t, s, x, extras, log_weights, generator):  # type: ignore[no-untyped-def]
            x, extras, log_g = super().step(t, s, x, extras, log_weights, generator)
            return x, extras, log_g + 0.05

    B, N = 400, 64
    out = run_smc(Off(), PAIRS, B, N, torch.Generator().manual_seed(0))
    ratio = torch.exp(out.log_evidence - kalman_log_evidence())
    assert abs(ratio.mean().item() - 1) > 4 * ratio.std().item() / B**0.5


def test_nan_weights_raise_naming_method_and_step() -> None:
    with pytest.raises(FloatingPointError, match=r"walk: step 3 \(t=5\)"):
        run_smc(RandomWalk(nan_at=3), PAIRS, 2, 16, torch.Generator().manual_seed(0))


def test_a_problem_whose_weights_all_vanish_fails_alone() -> None:
    """Every weight of problem 1 becomes zero at step 2: the others go on, problem 1 is marked
    failed (NaN samples, log-evidence -inf) and a warning names it."""

    class Zero(RandomWalk):
        def step(self, t, s, x, extras, log_weights, generator):  # type: ignore[no-untyped-def]
            x, extras, log_g = super().step(t, s, x, extras, log_weights, generator)
            if step_index(s) == 2:
                log_g = log_g.clone()
                log_g[1] = -math.inf
            return x, extras, log_g

    match = r"walk: every particle's weight became zero in 1 of 3 problem\(s\) \(\[1\]\)"
    with pytest.warns(ParticleDegeneracyWarning, match=match):
        out = run_smc(Zero(), PAIRS, 3, 16, torch.Generator().manual_seed(0))
    assert out.failed is not None and out.failed.tolist() == [False, True, False]
    assert out.samples[1].isnan().all() and torch.isfinite(out.samples[[0, 2]]).all()
    assert out.log_evidence[1] == -math.inf and torch.isfinite(out.log_evidence[[0, 2]]).all()


def test_same_seed_same_output_and_genealogy() -> None:
    a = run_smc(RandomWalk(), PAIRS, 3, 32, torch.Generator().manual_seed(7), genealogy=True)
    b = run_smc(RandomWalk(), PAIRS, 3, 32, torch.Generator().manual_seed(7), genealogy=True)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.log_evidence, b.log_evidence)
    assert a.genealogy is not None and a.genealogy.shape == (3, len(OBS), 32)
    assert a.state is not None and torch.equal(a.state.ancestors, a.genealogy[:, -1])
    assert torch.equal(a.samples, torch.gather(a.state.particles, 1, a.state.ancestors[..., None]))


def test_move_hook_is_called_and_acceptance_recorded() -> None:
    calls = []

    def move(x: Tensor, log_target, generator):  # type: ignore[no-untyped-def]
        calls.append(x.shape)
        return x, torch.full((x.shape[0],), 0.5, dtype=x.dtype)

    out = run_smc(RandomWalk(), PAIRS, 2, 16, torch.Generator().manual_seed(0), threshold="always", move=move)
    assert len(calls) == len(OBS) - 1
    assert out.acceptance is not None
    assert torch.all(out.acceptance[:, :-1] == 0.5) and torch.isnan(out.acceptance[:, -1]).all()


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="resampling"):
        run_smc(RandomWalk(), PAIRS, 1, 8, torch.Generator(), resampling="bogus")
    with pytest.raises(ValueError, match="threshold"):
        run_smc(RandomWalk(), PAIRS, 1, 8, torch.Generator(), threshold=1.5)


class Sharp(RandomWalk):
    """The random walk observed with a tiny variance at one step: the weights collapse there."""

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple:
        x, extras, log_g = super().step(t, s, x, extras, log_weights, generator)
        return x, extras, log_g * (1e7 if step_index(s) == 3 else 1.0)


def test_collapse_warns_once_for_the_batch_and_healthy_runs_do_not() -> None:
    import warnings

    from posterior.particles import ParticleDegeneracyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ParticleDegeneracyWarning)
        out = run_smc(RandomWalk(), PAIRS, 3, 500, torch.Generator().manual_seed(0))
    assert out.ess.min() > 2
    with pytest.warns(
        ParticleDegeneracyWarning, match=r"walk: .* in 3 of 3 problem\(s\) .* first at step 3"
    ) as rec:
        out = run_smc(Sharp(), PAIRS, 3, 500, torch.Generator().manual_seed(0))
    assert len(rec) == 1 and out.ess[:, 3].max() < 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParticleDegeneracyWarning)
        run_smc(Sharp(), PAIRS, 3, 500, torch.Generator().manual_seed(0), warn_degenerate=False)


class FarOff(RandomWalk):
    """The random walk with particle 0 of every problem thrown far off at step 2 (weight zero
    after it) and, where it still is far off at step 3, turned into NaN, as a gradient-shifted
    proposal can do."""

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple:
        k = step_index(s)
        if k in (2, 3):
            x = x.clone()
            x[:, 0] = 1e6 if k == 2 else torch.where(x[:, 0].abs() > 1e5, math.nan, x[:, 0])
        return super().step(t, s, x, extras, log_weights, generator)


def test_zero_weight_particles_that_turn_nan_are_retired() -> None:
    """A particle of weight zero that turns NaN is retired (weight zero, finite value), never an
    abort; ``Z_hat`` stays unbiased (losing one particle of 64 costs ``1/64`` of one step's mass,
    about 0.016, inside the tolerance's 4 standard errors), and NaN in a weighted particle raises."""
    B, N = 400, 64
    out = run_smc(FarOff(), PAIRS, B, N, torch.Generator().manual_seed(0), threshold="never")
    assert torch.isfinite(out.samples).all() and torch.isfinite(out.log_evidence).all()
    assert out.log_weights[:, 0].eq(-math.inf).all()
    ratio = torch.exp(out.log_evidence - kalman_log_evidence())
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / B**0.5 + 1 / N
    with pytest.raises(FloatingPointError, match="walk: step 2"):
        run_smc(NaNWeighted(), PAIRS, 2, 16, torch.Generator().manual_seed(0))


class NaNWeighted(RandomWalk):
    """Particle 1, of positive weight, turns NaN at step 2."""

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple:
        x, extras, log_g = super().step(t, s, x, extras, log_weights, generator)
        if step_index(s) == 2:
            x = x.clone()
            x[:, 1] = math.nan
        return x, extras, log_g


def test_a_few_particles_out_of_thousands_warn() -> None:
    """An ESS of about 5 of 2000 particles (above 2, below 1% of them) is degenerate too."""
    import warnings

    class Few(RandomWalk):
        def step(self, t, s, x, extras, log_weights, generator):  # type: ignore[no-untyped-def]
            x, extras, log_g = super().step(t, s, x, extras, log_weights, generator)
            if step_index(s) != 3:
                return x, extras, log_g
            keep = torch.arange(log_g.shape[1]) < 5  # five particles carry the weight
            return x, extras, torch.where(keep, torch.zeros_like(log_g), torch.full_like(log_g, -40.0))

    with pytest.warns(ParticleDegeneracyWarning, match=r"fell below 20 of 2000 particles .* minimum 5\.00"):
        out = run_smc(Few(), PAIRS, 2, 2000, torch.Generator().manual_seed(0))
    assert 2 < out.ess[:, 3].min() < 20
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParticleDegeneracyWarning)
        run_smc(Few(), PAIRS, 2, 400, torch.Generator().manual_seed(0))  # 5 of 400: above 1%


class Funnel(RandomWalk):
    """The random walk whose potential, from step 4 on, keeps only the highest 2% of the
    particles (weight one, the rest zero): resampling at every step, each step's ESS is N / 50,
    but four such selections funnel the draws into a handful of the particles alive before step 4
    (path degeneracy)."""

    def step(
        self, t: int, s: int, x: Tensor, extras: Extras, log_weights: Tensor, generator: torch.Generator
    ) -> tuple:
        x, extras, log_g = super().step(t, s, x, extras, log_weights, generator)
        if step_index(s) >= 4:
            top = x[..., 0] >= x[..., 0].quantile(0.98, dim=-1, keepdim=True)
            log_g = torch.zeros_like(log_g).masked_fill(~top, -math.inf)
        return x, extras, log_g


def _traced_lineages(genealogy: Tensor) -> list[int]:
    """Distinct ancestors before step ``K // 2`` of the final draws, traced back through the
    genealogy ``[B, K, N]`` (the last entry is the final resampling)."""
    B, K, N = genealogy.shape
    idx = torch.arange(N).expand(B, N)
    for k in range(K - 1, K // 2 - 1, -1):
        idx = torch.gather(genealogy[:, k], 1, idx)
    return [len(torch.unique(row)) for row in idx]


@pytest.mark.parametrize("model", [RandomWalk(), Funnel()], ids=["walk", "funnel"])
def test_lineages_count_the_half_way_ancestors_of_the_draws(model: RandomWalk) -> None:
    out = run_smc(
        model,
        PAIRS,
        3,
        300,
        torch.Generator().manual_seed(1),
        threshold="always",
        genealogy=True,
        warn_degenerate=False,
    )
    assert out.lineages.tolist() == _traced_lineages(out.genealogy)


def test_path_degeneracy_warns_while_the_ess_looks_healthy() -> None:
    import warnings

    with pytest.warns(ParticleDegeneracyWarning, match=r"descend from fewer than 10 of 500 particles") as rec:
        out = run_smc(Funnel(), PAIRS, 3, 500, torch.Generator().manual_seed(0), threshold="always")
    assert len(rec) == 1 and "effective sample size" not in str(rec[0].message)
    assert out.ess.min() >= 0.01 * 500 and out.lineages.max() < 10
    with warnings.catch_warnings():  # the healthy walk keeps many lineages
        warnings.simplefilter("error", ParticleDegeneracyWarning)
        out = run_smc(RandomWalk(), PAIRS, 3, 500, torch.Generator().manual_seed(0), threshold="always")
    assert out.lineages.min() >= 10
