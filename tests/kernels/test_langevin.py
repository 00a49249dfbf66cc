"""ULA / MALA kernels: exactness on Gaussians, the ULA bias, adaptation, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import posterior as ps
from posterior.kernels import MALA, ULA, AdaptiveMALA, DualAveraging, FunctionTarget, PosteriorTarget
from posterior.priors.base import DiffusionPrior
from posterior.schedule import VPSchedule


def _std_normal() -> FunctionTarget:
    return FunctionTarget(lambda x: -0.5 * x.pow(2).sum(-1))


def _run(kernel: MALA, x: torch.Tensor, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    state = kernel.init(x)
    for _ in range(steps):
        state, _ = kernel.step(gen, state)
    return state.x


def test_mala_keeps_gaussian_and_ula_is_biased_at_large_step() -> None:
    # Target N(0, I). ULA with step h has the AR(1) stationary variance 1 / (1 - h / 2): at h = 1
    # it is 2, not 1. MALA at the same step stays exact. N chains started from the target.
    B, N, d, h = 2, 4000, 2, 1.0
    x0 = torch.randn(B, N, d, generator=torch.Generator().manual_seed(1))
    mala = _run(MALA(_std_normal(), h), x0, 30)
    ula = _run(ULA(_std_normal(), h), x0, 30)
    se = math.sqrt(2 / (B * N * d))  # std error of a variance estimate of a unit normal (upper bound)
    assert abs(mala.var().item() - 1) < 4 * se * 1.5  # MALA keeps the law (chains correlated over time only)
    assert abs(ula.var().item() - 1 / (1 - h / 2)) < 4 * 2 * se * 1.5
    assert abs(mala.mean().item()) < 4 * math.sqrt(1 / (B * N * d))
    # small step: the ULA bias vanishes like O(h)
    ula_small = _run(ULA(_std_normal(), 0.05), x0, 30)
    assert abs(ula_small.var().item() - 1 / (1 - 0.025)) < 4 * se * 1.5


def test_mala_acceptance_and_detailed_balance_on_correlated_gaussian() -> None:
    # correlated 2-d Gaussian; start in the target; after many steps the covariance is preserved
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    prec = torch.linalg.inv(cov)
    target = FunctionTarget(lambda x: -0.5 * torch.einsum("bni,ij,bnj->bn", x, prec, x))
    L = torch.linalg.cholesky(cov)
    x0 = torch.randn(1, 8000, 2, generator=torch.Generator().manual_seed(2)) @ L.T
    x = _run(MALA(target, 0.8), x0, 20)[0]
    emp = torch.cov(x.T)
    assert torch.allclose(emp, cov, atol=4 * math.sqrt(2 / 8000) * 1.5)


def test_dual_averaging_reaches_target_acceptance() -> None:
    k = AdaptiveMALA(_std_normal(), step_size=10.0, target_accept=0.574)
    gen = torch.Generator().manual_seed(0)
    state = k.init(torch.randn(3, 500, 5, generator=gen), warmup_steps=100)
    accs = []
    for i in range(200):
        state, info = k.step(gen, state)
        if i >= 100:
            accs.append(info.acceptance.mean(1))
    acc = torch.stack(accs).mean(0)  # [B]
    assert torch.allclose(acc, torch.full_like(acc, 0.574), atol=0.04), acc
    assert state.step_size.shape == (3,) and state.iteration == 200


def test_step_size_per_problem_and_nan_proposals_rejected() -> None:
    # log density NaN beyond |x| > 3: those proposals count as divergent and are rejected
    def lp(x: torch.Tensor) -> torch.Tensor:
        v = -0.5 * x.pow(2).sum(-1)
        return torch.where(x.abs().amax(-1) > 3, torch.full_like(v, math.nan), v)

    k = MALA(FunctionTarget(lp), torch.tensor([0.5, 4.0]))
    gen = torch.Generator().manual_seed(0)
    state = k.init(torch.zeros(2, 200, 1))
    div = torch.zeros(2)
    for _ in range(20):
        state, info = k.step(gen, state)
        div += info.divergent.float().sum(1)
    assert torch.isfinite(state.x).all() and (state.x.abs() <= 3).all()
    assert div[1] > div[0]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="step_size"):
        MALA(_std_normal(), 0.0)
    with pytest.raises(ValueError, match="step_size"):
        MALA(_std_normal(), -1.0)
    with pytest.raises(ValueError, match="step_size"):
        MALA(_std_normal(), float("nan"))
    grad_only = FunctionTarget(grad_fn=lambda x: -x)
    with pytest.raises(ValueError, match="log density"):
        MALA(grad_only, 0.1)
    ULA(grad_only, 0.1)  # allowed, and documented as biased
    with pytest.raises(ValueError, match="target_accept"):
        DualAveraging(1.5)
    with pytest.raises(ValueError, match="differentiabl"):
        MALA(FunctionTarget(lambda x: x.detach().sum(-1)), 0.1).init(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"^metropolis must be True or False"):
        MALA(_std_normal(), 0.1, metropolis="False")
    with pytest.raises(ValueError, match=r"^adapt must be True or False"):
        AdaptiveMALA(_std_normal(), 0.1, adapt="False")
    with pytest.raises(ValueError, match=r"^likelihood must be True or False"):
        PosteriorTarget(ps.problems.gmm_benchmark(2, 1, seed=0), likelihood="False")


class _ScoreOnlyPrior(DiffusionPrior):
    """A prior with a denoiser (score at t >= 0) but no density: like a network prior."""

    def __init__(self) -> None:
        super().__init__()
        self.schedule = VPSchedule.linear(100)
        self.event_shape = (2,)

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.schedule.alpha_bar(t, like=x_t)[:, None]
        return (1 - a).sqrt() * x_t  # exact eps of N(0, I)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


def test_prior_without_density_or_score() -> None:
    problem = ps.InverseProblem(_ScoreOnlyPrior(), torch.eye(2), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="no score at the clean level"):
        PosteriorTarget(problem, noise_level=-1)
    target = PosteriorTarget(problem, noise_level=0)
    with pytest.raises(ValueError, match="Metropolis-Hastings correction needs"):
        MALA(target, 0.1)
    with pytest.raises(ValueError, match="noise_level"):
        PosteriorTarget(problem, noise_level=100)
    # the registered sampler says the same; ULA on the smoothed target runs
    with pytest.raises(ValueError, match="Metropolis-Hastings correction needs"):
        ps.sample(problem, "mala", 16, 4, noise_level=0, init="prior")
    r = ps.sample(problem, "mala", 16, 4, noise_level=0, metropolis=False, init="prior")
    assert r.samples.shape == (16, 2) and r.num_evals > 0

    problem.prior.score = None  # an object whose score is missing
    with pytest.raises(ValueError, match="has no score"):
        PosteriorTarget(problem, noise_level=0)


def test_posterior_target_gradient_matches_closed_form() -> None:
    problem = ps.problems.gmm_benchmark(4, 2, seed=3)
    x = torch.randn(1, 5, 4)
    tv = PosteriorTarget(problem)(x)
    post = problem.exact_posterior()
    # log p(x | y) = log p(x) + log p(y | x) - log p(y): same gradient, values differ by log p(y)
    assert torch.allclose(tv.grad[0], post.score(x[0]), atol=1e-3, rtol=1e-3)
    diff = tv.log_prob[0] - post.log_prob(x[0])
    assert torch.allclose(diff, problem.exact_log_evidence().expand(5).float(), atol=1e-3)


def test_kernel_objects_hold_no_run_state() -> None:
    # all adaptation lives in the state: one kernel object gives the same run twice
    k = AdaptiveMALA(_std_normal(), step_size=2.0)
    x0 = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(0))

    def run() -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        state = k.init(x0, warmup_steps=5)
        for _ in range(8):
            state, _ = k.step(gen, state)
        return torch.cat([state.x.flatten(), state.step_size])

    assert torch.equal(run(), run())
    with pytest.raises(ValueError, match="warmup_steps"):
        k.init(x0, warmup_steps=-1)
