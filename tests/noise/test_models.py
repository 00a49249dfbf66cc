"""Noise models: densities against torch.distributions, batching, validation, sampling, twists."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td

import posterior as ps
from posterior.noise import Gaussian, Laplace, Poisson, StudentT

CPU = torch.device("cpu")


def bound(model: ps.noise.NoiseModel, B: int = 2, obs_ndim: int = 1) -> ps.noise.NoiseModel:
    return model.bind(B, obs_ndim, torch.float64, CPU)


def reference(model: ps.noise.NoiseModel, mean: torch.Tensor) -> td.Distribution:
    """The same observation law built with torch.distributions, parameters ``[B, 1, 1]``."""
    p = {k: v.reshape(-1, 1, 1) for k, v in model.params.items()}
    if isinstance(model, Gaussian):
        return td.Normal(mean, p["std"])
    if isinstance(model, Poisson):
        return td.Poisson(p["gain"] * mean + p["background"])
    if isinstance(model, StudentT):
        return td.StudentT(p["df"], mean, p["scale"])
    return td.Laplace(mean, p["scale"])


MODELS = [
    Gaussian(torch.tensor([0.3, 1.5])),
    Poisson(torch.tensor([2.0, 30.0]), background=torch.tensor([0.0, 1.5])),
    StudentT(torch.tensor([1.0, 6.0]), 0.7),
    Laplace(torch.tensor([0.2, 2.0])),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_log_prob_matches_torch_distributions_per_problem(model: ps.noise.NoiseModel) -> None:
    """``[B, N, m]`` means with per-problem parameters: the sum over the observation dim of the
    torch.distributions density with the parameters of problem ``b``."""
    gen = torch.Generator().manual_seed(0)
    nm = bound(model)
    mean = torch.rand(2, 5, 3, generator=gen, dtype=torch.float64) * 3 + 0.1  # positive for Poisson
    y = torch.poisson(torch.full((2, 1, 3), 2.0, dtype=torch.float64), generator=gen)  # counts (zeros too)
    expected = reference(nm, mean).log_prob(y.expand_as(mean)).sum(-1)
    got = nm.log_prob(y, mean)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(nm.log_prob_elementwise(y, mean).sum(-1), expected)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_select_lines_up_with_flat_particles(model: ps.noise.NoiseModel) -> None:
    """``select(arange(B).repeat_interleave(N))`` on flat rows gives the batched values."""
    nm = bound(model)
    mean = torch.rand(2, 4, 3, dtype=torch.float64) + 0.5
    y = torch.tensor([[[1.0, 0.0, 2.0]], [[3.0, 1.0, 0.0]]], dtype=torch.float64)
    rows = nm.select(torch.arange(2).repeat_interleave(4))
    flat = rows.log_prob(y.expand(2, 4, 3).reshape(8, 3), mean.reshape(8, 3))
    torch.testing.assert_close(flat.reshape(2, 4), nm.log_prob(y, mean))
    torch.testing.assert_close(rows.select(slice(4, 8)).log_prob(y[1], mean[1]), nm.log_prob(y, mean)[1])


def test_log_prob_sums_over_every_observation_dim() -> None:
    nm = Laplace(0.5).bind(1, 2, torch.float64, CPU)
    y, mean = torch.zeros(1, 3, 4, 5, dtype=torch.float64), torch.ones(1, 3, 4, 5, dtype=torch.float64)
    assert nm.log_prob(y, mean).shape == (1, 3)
    # 20 entries of log Laplace(0; 1, 0.5) = -|0 - 1| / 0.5 - log(2 * 0.5) = -2
    torch.testing.assert_close(nm.log_prob(y, mean), torch.full((1, 3), -40.0, dtype=torch.float64))


def test_poisson_impossible_means_have_zero_likelihood_and_finite_gradient() -> None:
    """A negative rate, or rate 0 with a positive count: ``-inf``, gradient 0 (not NaN); rate 0
    with count 0: probability 1."""
    nm = bound(Poisson(2.0), B=1)
    mean = torch.tensor([[[-0.5, 0.0, 0.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    lp = nm.log_prob_elementwise(y, mean)
    assert lp[0, 0, 0] == -math.inf and lp[0, 0, 1] == -math.inf and lp[0, 0, 2] == 0
    assert lp[0, 0, 3].item() == pytest.approx(-2.0)
    (grad,) = torch.autograd.grad(nm.log_prob(y, mean).sum(), mean)
    assert torch.isfinite(grad).all() and grad[0, 0, 0] == 0


@pytest.mark.parametrize(
    ("y", "match"),
    [([1.0, -1.0], "counts >= 0"), ([1.0, 2.5], "integer counts")],
)
def test_poisson_validates_counts(y: list[float], match: str) -> None:
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    with pytest.raises(ValueError, match=match):
        ps.InverseProblem(prior, torch.eye(2), torch.tensor(y), ps.noise.Poisson(3.0))


def test_poisson_counts_off_by_float_rounding_are_accepted_and_rounded() -> None:
    """Counts that went through float arithmetic (``0.1 * 30``, ``3.0000002``) are integers within
    ``1e-4 max(1, |y|)``; they are accepted and rounded, so the likelihood is that of the count."""
    prior = ps.problems.gmm_benchmark(2, 1, 0).prior
    y = torch.tensor([[3.0000002, 0.1 * 30], [1e6 + 0.01, 0.0]])
    problem = ps.InverseProblem(prior, torch.eye(2), y, ps.noise.Poisson(3.0))
    assert torch.equal(problem.y, torch.tensor([[3.0, 3.0], [1e6, 0.0]]))
    assert torch.equal(problem.y_batch, problem.y)
    single = ps.InverseProblem(prior, torch.eye(2), y[0], ps.noise.Poisson(3.0))
    assert torch.equal(single.y, torch.tensor([3.0, 3.0])) and single.y_batch.shape == (1, 2)
    with pytest.raises(ValueError, match=r"integer counts, got 3\.001"):
        ps.InverseProblem(prior, torch.eye(2), torch.tensor([3.001, 1.0]), ps.noise.Poisson(3.0))


@pytest.mark.parametrize(
    ("make", "match", "error"),
    [
        (lambda: Gaussian(-0.1), "^Gaussian: std must be >= 0", ValueError),
        (lambda: Gaussian(None), "^Gaussian: std must be a real number", TypeError),
        (lambda: Poisson(0.0), "^Poisson: gain must be > 0", ValueError),
        (lambda: Poisson("2"), "^Poisson: gain must be a real number", TypeError),
        (lambda: Poisson(1.0, background=-0.1), "^Poisson: background must be >= 0", ValueError),
        (lambda: StudentT(0.0, 1.0), "^StudentT: df must be > 0", ValueError),
        (lambda: StudentT(3.0, math.inf), "^StudentT: scale must be finite", ValueError),
        (lambda: Laplace(torch.ones(2, 2)), "^Laplace: scale must be a scalar or a Tensor", ValueError),
        (lambda: Laplace(True), "^Laplace: scale must be a real number", TypeError),
    ],
)
def test_bad_parameters_name_the_model_and_parameter(make, match: str, error: type) -> None:
    with pytest.raises(error, match=match):
        make()


def test_parameter_per_problem_must_match_the_batch() -> None:
    problem = ps.problems.gmm_benchmark(2, 1, 0)
    with pytest.raises(ValueError, match=r"StudentT: scale must be a scalar or a Tensor\[1\]"):
        ps.InverseProblem(problem.prior, problem.operator, problem.y, StudentT(3.0, torch.ones(3)))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_samples_have_the_model_mean_and_variance(model: ps.noise.NoiseModel) -> None:
    """20,000 draws per problem: mean and variance within 5 standard errors (Cauchy: median)."""
    nm = bound(model)
    n = 20_000
    mean = torch.full((2, n), 1.5, dtype=torch.float64)
    draws = nm.sample(mean, torch.Generator().manual_seed(1))
    ref = reference(nm, mean.unsqueeze(-1))
    for b in range(2):
        d = draws[b]
        if isinstance(nm, StudentT) and nm.params["df"][b] <= 2:  # no variance: compare medians
            assert abs(d.median().item() - 1.5) < 0.05
            continue
        mu, var = ref.mean[b, 0, 0].item(), ref.variance[b, 0, 0].item()
        assert abs(d.mean().item() - mu) < 5 * math.sqrt(var / n)
        assert abs(d.var().item() / var - 1) < 0.1
    again = nm.sample(mean, torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)


def test_sampling_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    mean = torch.zeros(2, 10, dtype=torch.float64)
    bound(StudentT(3.0, 1.0)).sample(mean, torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.random.get_rng_state())


def test_gaussian_twist_is_the_exact_convolution() -> None:
    nm = bound(Gaussian(torch.tensor([0.3, 2.0])))
    y, mean = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    want = td.Normal(mean, (nm.params["std"].reshape(2, 1, 1) ** 2 + 0.5).sqrt()).log_prob(y).sum(-1)
    torch.testing.assert_close(nm.twist_log_prob(y, mean, 0.5), want)
    torch.testing.assert_close(nm.misfit(y, mean), (y - mean).pow(2).sum(-1))


@pytest.mark.parametrize("model", MODELS[1:], ids=lambda m: type(m).__name__)
def test_tempered_twist_ends_at_the_likelihood_and_flattens_early(model: ps.noise.NoiseModel) -> None:
    nm = bound(model)
    y = torch.tensor([[[0.0, 3.0]], [[5.0, 1.0]]], dtype=torch.float64)
    mean = torch.rand(2, 6, 2, dtype=torch.float64) + 0.2
    torch.testing.assert_close(nm.twist_log_prob(y, mean, 0.0), nm.log_prob(y, mean))
    flat = nm.twist_log_prob(y, mean, 1e8)
    assert flat.abs().max() < 1e-4 * nm.log_prob(y, mean).abs().max() + 1e-6
    mid = nm.twist_log_prob(y, mean, 1.0)
    v = nm.variance(y, mean)
    at = mean
    if isinstance(model, Poisson):  # at the smoothed rate E[max(rate + s e, 0)], s = gain * 1
        gain, bg = (nm.params[k].reshape(-1, 1, 1).to(mean) for k in ("gain", "background"))
        z = (gain * mean + bg) / gain
        smooth = gain * (z * td.Normal(0.0, 1.0).cdf(z) + td.Normal(0.0, 1.0).log_prob(z).exp())
        at = (smooth - bg) / gain
    want = (v / (v + 1.0) * nm.log_prob_elementwise(y, at)).sum(-1)
    torch.testing.assert_close(mid, want)


def test_poisson_misfit_is_the_variance_weighted_deviance() -> None:
    """Near the saturated mean the misfit (deviance times ``Var(y / g) ~ y / g^2``) is close to the
    squared residual ``(y / g - m)^2`` on the intensity scale, and it is 0 at ``m = y / g``."""
    nm = bound(Poisson(10.0), B=1)
    y = torch.tensor([[[20.0, 50.0]]], dtype=torch.float64)
    m = y / 10 + torch.tensor([0.05, -0.1], dtype=torch.float64)
    approx = (y / 10 - m).pow(2).sum(-1)
    torch.testing.assert_close(nm.misfit(y, m), approx, rtol=0.05, atol=0)
    assert nm.misfit(y, y / 10).abs().max() < 1e-12


def test_unbound_models_say_so() -> None:
    with pytest.raises(ValueError, match="not bound to a problem"):
        Laplace(1.0).log_prob(torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize("model", MODELS[1:], ids=lambda m: type(m).__name__)
def test_deviance_is_the_log_density_gap_to_the_saturated_mean(model: ps.noise.NoiseModel) -> None:
    """The closed forms equal ``2 [log p(y | saturated) - log p(y | mean)]`` (float64), and stay
    >= 0 (no cancellation) in float32 right at the saturated mean."""
    nm = bound(model)
    y = torch.tensor([[[0.0, 3.0, 7.0]], [[5.0, 1.0, 0.0]]], dtype=torch.float64)
    mean = torch.rand(2, 6, 3, dtype=torch.float64) + 0.2
    yb = y.expand_as(mean)
    gap = 2 * (nm.log_prob_elementwise(yb, nm.saturated_mean(yb)) - nm.log_prob_elementwise(yb, mean))
    torch.testing.assert_close(nm.deviance_elementwise(yb, mean), gap)
    nm32 = model.bind(2, 1, torch.float32, CPU)
    y32 = torch.tensor([[[0.0, 3.0, 7.0]], [[5.0, 1.0, 0.0]]]).expand(2, 6, 3)
    near = nm32.saturated_mean(y32) * (1 + 1e-7 * torch.randn(2, 6, 3))
    assert (nm32.deviance_elementwise(y32, near) >= 0).all()
    # finite gradients everywhere, zero counts included (guidance differentiates the misfit)
    m = (torch.rand(2, 6, 3, dtype=torch.float64) + 0.2).requires_grad_(True)
    (g,) = torch.autograd.grad(nm.misfit(y, m).sum(), m)
    assert torch.isfinite(g).all()


def test_poisson_twist_is_smooth_where_an_estimated_rate_is_negative() -> None:
    """The twist at an (estimated) mean is the tempered likelihood at the smoothed rate
    ``s h(rate / s)``: finite, with a finite gradient, at negative means, falling off as
    ``-y z^2 / 2`` far below 0 rather than staying flat at a floor, and continuous through 0."""
    nm = bound(Poisson(4.0), B=1)
    y = torch.tensor([[[3.0]]], dtype=torch.float64)
    mean = torch.linspace(-5.0, 1.0, 601, dtype=torch.float64).reshape(1, -1, 1).requires_grad_(True)
    tw = nm.twist_log_prob(y, mean, 0.25)  # s = gain * 0.5 = 2
    (grad,) = torch.autograd.grad(tw.sum(), mean)
    assert torch.isfinite(tw).all() and torch.isfinite(grad).all()
    assert (grad[:, :500] > 0).all()  # below a rate of y: up towards it
    assert (tw.diff(dim=1).abs() < 0.5).all()  # no jump between neighbouring means 0.01 apart
    lam = (3 / 16) / (3 / 16 + 0.25)  # v / (v + extra): v = y / gain^2
    z = 4.0 * mean.detach() / 2.0  # rate / s, down to -10
    # log h(z) = log int_0^inf u phi(u - z) du by quadrature, in log space (no cancellation)
    u = torch.linspace(0.0, 12.0, 24_001, dtype=torch.float64)[1:]
    log_terms = u.log() - 0.5 * (u - z.reshape(-1, 1)) ** 2 - 0.5 * math.log(2 * math.pi)
    log_smooth = math.log(2.0) + torch.logsumexp(log_terms, 1) + math.log(float(u[1] - u[0]))
    want = lam * (3.0 * log_smooth - log_smooth.exp() - math.lgamma(4.0))
    torch.testing.assert_close(tw, want.reshape(1, -1), rtol=1e-4, atol=0)
    assert tw[0, 0] < lam * 3.0 * -0.5 * 10.0**2  # -y z^2 / 2 and below at z = -10, not a floor
    far = nm.twist_log_prob(y, torch.full((1, 1, 1), 50.0, dtype=torch.float64), 0.25)
    want = lam * nm.log_prob(y, torch.full((1, 1, 1), 50.0, dtype=torch.float64))
    torch.testing.assert_close(far, want, rtol=1e-6, atol=0)  # many s above 0: the rate itself
    assert nm.log_prob(y, mean.detach())[0, 0] == -math.inf  # the likelihood itself stays exact
