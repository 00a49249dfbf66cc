"""InverseProblem: validation, likelihood, and the closed-form posterior and evidence."""

import math

import pytest
import torch

import posterior as ps


def _problem(seed=0, batch=False, noise=0.7):
    gen = torch.Generator().manual_seed(seed)
    K, d, m = 3, 2, 1
    w = torch.rand(K, generator=gen, dtype=torch.float64) + 0.3
    means = 3 * torch.randn(K, d, generator=gen, dtype=torch.float64)
    B_ = torch.randn(K, d, d, generator=gen, dtype=torch.float64)
    covs = B_ @ B_.transpose(-1, -2) / d + 0.2 * torch.eye(d, dtype=torch.float64)
    prior = ps.GaussianMixturePrior(w / w.sum(), means, covs)
    A = torch.randn(m, d, generator=gen, dtype=torch.float64)
    y = (
        torch.randn(3, m, generator=gen, dtype=torch.float64)
        if batch
        else torch.tensor([0.8], dtype=torch.float64)
    )
    return ps.InverseProblem(prior, A, y, noise)


def test_exact_posterior_matches_importance_sampling():
    """Self-normalised importance sampling from the prior with 10^6 draws (d = 2)."""
    problem = _problem()
    post = problem.exact_posterior()
    x = problem.prior.sample(1_000_000, generator=1)
    logw = problem.log_likelihood(x[None])[0]
    w = torch.softmax(logw, 0)
    ess = 1 / (w**2).sum()
    assert ess > 10_000
    for f in (lambda v: v, lambda v: v**2, lambda v: v[:, :1] * v[:, 1:]):
        fx = f(x)
        est = (w[:, None] * fx).sum(0)
        se = ((w[:, None] ** 2) * (fx - est) ** 2).sum(0).sqrt()  # delta-method standard error
        exact = f(post.sample(2_000_000, generator=2)).mean(0)
        se_exact = f(post.sample(2_000_000, generator=2)).std(0) / 2_000_000**0.5
        assert ((est - exact).abs() < 5 * (se**2 + se_exact**2).sqrt()).all()
    # and the density: exact posterior log_prob = log prior + log lik - log evidence
    xs = torch.randn(5, 2, dtype=torch.float64)
    lhs = post.log_prob(xs)
    rhs = problem.prior.log_prob(xs) + problem.log_likelihood(xs[None])[0] - problem.exact_log_evidence()
    assert torch.allclose(lhs, rhs, atol=1e-9)


def test_exact_log_evidence_matches_monte_carlo():
    problem = _problem(seed=3)
    x = problem.prior.sample(1_000_000, generator=4)
    lik = problem.log_likelihood(x[None])[0].exp()
    mc, se = lik.mean(), lik.std() / lik.numel() ** 0.5
    exact = problem.exact_log_evidence()
    assert abs(mc.log() - exact) < 5 * se / mc


def test_batched_problems_agree_with_single_ones():
    problem = _problem(batch=True)
    post, logz = problem.exact_posterior(), problem.exact_log_evidence()
    assert post.batch_shape == (3,) and logz.shape == (3,)
    for b in range(3):
        single = ps.InverseProblem(problem.prior, problem.operator, problem.y[b], problem.noise_std)
        assert torch.allclose(single.exact_posterior().mean, post.mean[b])
        assert torch.allclose(single.exact_log_evidence(), logz[b])
    # one noise level per problem
    varied = ps.InverseProblem(
        problem.prior, problem.operator, problem.y, torch.tensor([0.5, 0.7, 0.9]).double()
    )
    single = ps.InverseProblem(problem.prior, problem.operator, problem.y[2], 0.9)
    assert torch.allclose(varied.exact_log_evidence()[2], single.exact_log_evidence())
    assert torch.allclose(varied.exact_posterior().mean[2], single.exact_posterior().mean)


def test_log_likelihood_formula():
    problem = _problem()
    x = torch.randn(1, 4, 2, dtype=torch.float64)
    r = problem.y - x[0] @ problem.operator.matrix().T
    want = -0.5 * (r**2).sum(-1) / 0.49 - 0.5 * math.log(2 * math.pi * 0.49)
    assert torch.allclose(problem.log_likelihood(x)[0], want)


def test_gmm_benchmark_is_reproducible_and_shaped():
    a, b = ps.problems.gmm_benchmark(8, 2, seed=5), ps.problems.gmm_benchmark(8, 2, seed=5)
    assert torch.equal(a.y, b.y) and torch.equal(a.operator.matrix(), b.operator.matrix())
    assert a.prior.distribution.num_components == 25 and a.obs_shape == (2,)
    s = a.operator.singular_values
    assert (s <= 1).all() and (s[:-1] >= s[1:]).all()
    assert 0 <= a.noise_std <= s.max()
    assert not torch.equal(a.y, ps.problems.gmm_benchmark(8, 2, seed=6).y)


def test_bad_inputs_are_named():
    p = _problem()
    prior, A = p.prior, p.operator
    y = torch.tensor([0.8], dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        ps.InverseProblem(prior, A, torch.zeros(2, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        ps.InverseProblem(prior, A, torch.tensor([float("nan")], dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="inf"):
        ps.InverseProblem(prior, A, torch.tensor([float("inf")], dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        ps.InverseProblem(prior, A, y, -1.0)
    assert ps.InverseProblem(prior, A, y.float(), 0.1).y.dtype == torch.float64  # converted
    with pytest.raises(ValueError, match="operator holds a tensor"):
        ps.InverseProblem(prior, ps.operators.Matrix(torch.ones(1, 2)), y, 0.1)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        ps.InverseProblem(prior, torch.ones(1, 3, dtype=torch.float64), y, 0.1)
    zero_noise = ps.InverseProblem(prior, A, y, 0.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        zero_noise.require_noise("tds")
    nonlinear = ps.InverseProblem(prior, lambda x: x.pow(2).sum(-1, keepdim=True), y, 0.1)
    with pytest.raises(ValueError, match="linear operator"):
        nonlinear.require_linear("mcgdiff")
    with pytest.raises(ValueError, match="closed form"):
        nonlinear.exact_posterior()


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_operator_that_is_not_per_sample_is_refused():
    p = _problem()
    y = torch.tensor([0.8], dtype=torch.float64)
    for bad in (lambda x: x.sum(), lambda x: x.sum(0), lambda x: x - x.mean(0)):
        with pytest.raises(ValueError, match=r"operator .* must act per sample") as err:
            ps.InverseProblem(p.prior, bad, y, 0.1)
        _one_line(err)
    with pytest.raises(ValueError, match="floating-point Tensor"):
        ps.InverseProblem(p.prior, lambda x: x.numpy(), y, 0.1)
    with pytest.raises(ValueError, match="failed on a batch"):
        ps.InverseProblem(p.prior, lambda x: x @ torch.ones(3, 1, dtype=x.dtype), y, 0.1)
    # per-sample callables (and ones giving NaN) pass, on the prior's dtype
    ok = ps.InverseProblem(p.prior, lambda x: x[:, :1] ** 3, y, 0.1)
    assert ok.obs_shape == (1,)
    ps.InverseProblem(p.prior, lambda x: x[:, :1] * math.nan, y, 0.1)


def test_non_differentiable_operator_is_named_by_the_method():
    import numpy as np

    p = _problem()
    y = torch.tensor([0.8], dtype=torch.float64)

    def no_grad(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return x[:, :1] ** 2

    for fn in (
        no_grad,
        lambda x: x.detach()[:, :1] ** 2,
        lambda x: torch.from_numpy(np.asarray(x)[:, :1] ** 2),
    ):
        problem = ps.InverseProblem(p.prior, fn, y, 0.3)
        for method in ("tds", "dps", "mala", "gibbs"):
            with pytest.raises(ValueError, match=f"'{method}' needs the gradient of the operator") as err:
                ps.sample(problem, method, 8, 4, seed=0)
            _one_line(err)
    ps.InverseProblem(p.prior, lambda x: x[:, :1] ** 2, y, 0.3).require_differentiable("tds")
    p.require_differentiable("tds")  # a matrix


def test_exact_log_evidence_of_a_singular_noiseless_problem_is_a_clear_error():
    p = _problem()
    A = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # rank 1, two rows
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    problem = ps.InverseProblem(p.prior, A, y, 0.0)
    with pytest.raises(ValueError, match="exact_posterior"):
        problem.exact_posterior()
    with pytest.raises(ValueError, match="exact_log_evidence: with noise_std = 0") as err:
        problem.exact_log_evidence()
    _one_line(err)
    full_rank = ps.InverseProblem(p.prior, A[:1], y[:1], 0.0)  # y has a density: no error
    assert torch.isfinite(full_rank.exact_log_evidence())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise_std": None}, "noise_std"),
        ({"noise_std": "0.1"}, "noise_std"),
        ({"noise": None}, "noise"),
        ({"noise": "0.1"}, "noise"),
        ({"noise": [0.1, "a"]}, "noise"),
    ],
)
def test_noise_that_is_not_a_number_is_a_one_line_type_error(kwargs, name):
    p = _problem()
    with pytest.raises(TypeError, match=rf"^{name} must be a Gaussian standard deviation") as err:
        ps.InverseProblem(p.prior, p.operator, p.y, **kwargs)
    assert "\n" not in str(err.value)


def test_noise_given_twice_or_not_at_all():
    p = _problem()
    with pytest.raises(TypeError, match="once"):
        ps.InverseProblem(p.prior, p.operator, p.y, 0.1, noise_std=0.1)
    with pytest.raises(TypeError, match="once"):
        ps.InverseProblem(p.prior, p.operator, p.y)


def test_noise_std_keyword_and_gaussian_model_are_the_float():
    p = _problem()
    x = p.prior.sample(16, 0).unsqueeze(0)
    a = ps.InverseProblem(p.prior, p.operator, p.y, noise_std=0.7)
    b = ps.InverseProblem(p.prior, p.operator, p.y, ps.noise.Gaussian(0.7))
    torch.testing.assert_close(a.log_likelihood(x), p.log_likelihood(x))
    torch.testing.assert_close(b.log_likelihood(x), p.log_likelihood(x))
    torch.testing.assert_close(b.sigma, p.sigma)
    torch.testing.assert_close(b.exact_log_evidence(), p.exact_log_evidence())


def test_non_gaussian_noise_has_no_sigma_and_no_closed_form():
    p = _problem()
    q = ps.InverseProblem(p.prior, p.operator, p.y, ps.noise.Laplace(0.5))
    assert not q.gaussian and q.noise_scale().item() == pytest.approx(0.5 * 2**0.5)
    with pytest.raises(ValueError, match=r"problem.sigma is the level of Gaussian noise.*Laplace\(scale="):
        q.sigma  # noqa: B018
    with pytest.raises(ValueError, match="closed form only for Gaussian noise"):
        q.exact_posterior()
    with pytest.raises(ValueError, match=r"'smc' needs Gaussian noise.*Laplace"):
        q.require_gaussian("smc")
    q.require_noise("tds")  # Laplace noise is noise: no error


def test_log_likelihood_uses_the_noise_model():
    """``log p(y | x) = sum_i log Laplace(y_i; (A x)_i, b)``, from torch.distributions."""
    p = _problem(batch=True)
    q = ps.InverseProblem(p.prior, p.operator, p.y, ps.noise.Laplace(torch.tensor([0.5, 1.0, 2.0])))
    x = p.prior.sample(5, 0).unsqueeze(0).expand(3, 5, 2)
    mean = q.forward(x)
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).reshape(3, 1, 1)
    want = torch.distributions.Laplace(mean, scale).log_prob(p.y_batch.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(q.log_likelihood(x), want)


def test_to_moves_every_tensor_and_keeps_the_answer():
    problem = ps.problems.simulate(ps.problems.gmm_benchmark(4, 2, seed=0).prior, torch.randn(2, 4), 0.3, 3)
    moved = problem.to(dtype=torch.float64)
    assert problem.to() is problem and problem.to(dtype=torch.float32) is problem
    assert moved.prior.dtype == moved.y.dtype == moved.sigma.dtype == moved.truth.dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in moved.operator.tensors())
    assert moved.batched and moved.batch_size == 3
    a, b = problem.exact_posterior(), moved.exact_posterior()
    torch.testing.assert_close(b.means.float(), a.means, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        problem.to(dtype="float64")


def test_exact_posterior_is_a_capability_of_prior_operator_and_noise():
    problem = ps.problems.gmm_benchmark(4, 2, seed=0)
    assert problem.has_exact_posterior and problem.prior.distribution is not None
    laplace = ps.InverseProblem(problem.prior, problem.operator, problem.y, ps.noise.Laplace(0.3))
    nonlinear = ps.InverseProblem(problem.prior, lambda x: x[:, :2] ** 2, problem.y, 0.3)
    assert not laplace.has_exact_posterior and not nonlinear.has_exact_posterior
    with pytest.raises(ValueError, match="Gaussian-mixture prior with a linear operator"):
        nonlinear.exact_posterior()


def test_repeat_lines_up_runs_of_each_problem():
    base = ps.problems.gmm_benchmark(4, 2, seed=0)
    y = torch.stack([base.y, base.y + 1.0])
    batch = ps.InverseProblem(base.prior, base.operator, y, ps.noise.StudentT(3.0, torch.tensor([0.1, 0.2])))
    rep = batch.repeat(3)
    assert rep.batch_size == 6
    assert torch.equal(rep.y_batch, y.repeat_interleave(3, 0))
    scale = torch.tensor([0.1, 0.2]).double().repeat_interleave(3)
    assert torch.equal(rep.noise.params["scale"].flatten(), scale)
