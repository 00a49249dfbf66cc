"""Latent priors: a diffusion prior on ``z`` and a decoder ``x = D(z)``; ``ps.sample`` samples the
latent posterior (operator ``A o D``) and decodes it.

References: with an affine decoder and a Gaussian-mixture latent prior the latent problem is a
linear Gaussian one (:func:`linear_latent_problem`, closed form); with a smooth nonlinear decoder
the chain oracle (:func:`chain_posterior` on the latent problem, exact for the K-step chain as
its draws grow)."""

from __future__ import annotations

import functools
import math

import diffusers
import pytest
import torch

import posterior as ps
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.diagnostics.oracles import chain_posterior
from posterior.operators import Nonlinear
from posterior.priors.latent import LinearDecoder
from posterior.priors.shipped import available_priors
from posterior.problems import gmm_prior_grid
from posterior.samplers.latent import latent_problem, linear_latent_problem

LINEAR_ONLY = ["ddrm", "diffpir", "mcgdiff", "mmps", "pigdm", "pnp_admm", "score_ald", "sdedit", "smc"]
#: methods that take a differentiable nonlinear operator, with the options they need for one
NONLINEAR = {
    "csgm": {},
    "dps": {},
    "gibbs": {},
    "mala": {},
    "pgas": {},
    "reddiff": {"init": "noise"},
    "tds": {},
}


def linear_setup(B: int = 8, sigma: float = 0.3, seed: int = 0) -> ps.InverseProblem:
    """2-D, 25-component latent prior; ``D(z) = W z + b`` to 5-D (tall ``W``); 2 noisy rows."""
    gen = torch.Generator().manual_seed(seed)
    latent = gmm_prior_grid(2, gen)
    W = torch.randn(5, 2, generator=gen)
    b = 0.5 * torch.randn(5, generator=gen)
    prior = ps.LatentPrior(latent, LinearDecoder(W, b))
    A = torch.randn(2, 5, generator=gen) / 5**0.5
    return ps.problems.simulate(prior, A, sigma, B, seed=seed + 1)


def blackbox(problem: ps.InverseProblem) -> ps.InverseProblem:
    """The same problem with its affine decoder hidden in a callable (then ``A o D`` is nonlinear)."""
    dec = problem.prior.linear_decoder
    prior = ps.LatentPrior(problem.prior.latent_prior, lambda z: dec(z))
    out = ps.InverseProblem(prior, problem.operator, problem.y, problem.noise_std)
    out.truth = problem.truth
    return out


def by_hand(problem: ps.InverseProblem, decoder) -> ps.InverseProblem:
    """The latent problem written directly (not by :func:`latent_problem`): the tests' reference."""
    A = problem.operator.matrix()
    op = Nonlinear(lambda z: decoder(z) @ A.T)
    return ps.InverseProblem(problem.prior.latent_prior, op, problem.y, problem.noise_std)


def smooth_decoder(z: torch.Tensor) -> torch.Tensor:
    """A smooth nonlinear decoder ``[n, 2] -> [n, 4]``."""
    return torch.stack(
        [torch.tanh(z[:, 0] / 4), z[:, 1] / 4, z[:, 0] * z[:, 1] / 16, torch.sin(z[:, 1] / 4)], 1
    )


def nonlinear_setup(B: int = 4, sigma: float = 0.3, seed: int = 0) -> ps.InverseProblem:
    """The 2-D latent prior, :func:`smooth_decoder`, a square ``A`` and Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    prior = ps.LatentPrior(gmm_prior_grid(2, gen), smooth_decoder)
    A = torch.randn(4, 4, generator=gen)
    return ps.problems.simulate(prior, A, sigma, B, seed=seed + 1)


# ------------------------------------------------------------------------------- the prior
def test_decode_shapes_chunks_and_counts() -> None:
    problem = linear_setup()
    prior = problem.prior
    assert prior.latent_shape == (2,) and prior.event_shape == (5,)
    z = torch.randn(3, 7, 2)
    before = prior.num_evals
    x = prior.decode(z)
    assert x.shape == (3, 7, 5) and prior.num_evals - before == 21
    dec = prior.linear_decoder
    torch.testing.assert_close(x, z @ dec.matrix.T + dec.bias)
    prior.max_batch_size = 4  # chunked decoding gives the same values
    torch.testing.assert_close(prior.decode(z), x)
    draws = prior.sample(6, 0)
    assert draws.shape == (6, 5)
    with pytest.raises(ValueError, match="latent"):
        prior.denoise(torch.zeros(2, 5), 10)
    with pytest.raises(ValueError, match=r"latents \[\.\.\., 2\]"):
        prior.decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="no encoder"):
        prior.encode(x)


def test_constructor_errors() -> None:
    latent = gmm_prior_grid(2, torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="decoder must be callable"):
        ps.LatentPrior(latent, "decoder")
    with pytest.raises(ValueError, match="decoder must return"):
        ps.LatentPrior(latent, lambda z: z.sum())
    with pytest.raises(ValueError, match="decoder failed"):
        ps.LatentPrior(latent, lambda z: z @ torch.zeros(3, 3))
    inner = ps.LatentPrior(latent, smooth_decoder)
    with pytest.raises(TypeError, match="latent_prior"):
        ps.LatentPrior(inner, smooth_decoder)
    with pytest.raises(ValueError, match="max_batch_size"):
        ps.LatentPrior(latent, smooth_decoder, max_batch_size=0)
    with pytest.raises(ValueError, match="bias"):
        LinearDecoder(torch.ones(4, 2), torch.ones(3))


# ------------------------------------------------------------------------------- sampling
def test_sample_returns_decoded_draws_and_latents(tmp_path) -> None:
    problem = linear_setup(B=3)
    prior = problem.prior
    inner_evals = ps.sample(latent_problem(problem), "tds", 32, 10, seed=0).num_evals
    res = ps.sample(problem, "tds", num_particles=32, num_steps=10, seed=0)
    assert res.samples.shape == (3, 32, 5) and res.latents.shape == (3, 32, 2)
    torch.testing.assert_close(res.samples, prior.decode(res.latents))
    torch.testing.assert_close(res.truth, problem.truth)
    # the decoder's calls (A o D inside tds, the final decoding of 3 x 32 draws) are counted
    assert res.num_evals >= inner_evals + 3 * 32
    same = ps.sample(problem, "tds", num_particles=32, num_steps=10, seed=0)
    torch.testing.assert_close(same.latents, res.latents)
    back = ps.Result.load(res.save(tmp_path / "r.safetensors"))
    torch.testing.assert_close(back.latents, res.latents)
    one = problem.select(0, 1)
    single = ps.InverseProblem(prior, one.operator, one.y_batch[0], 0.3)
    r1 = ps.sample(single, "dps", num_particles=4, num_steps=5, seed=0)
    assert r1.samples.shape == (4, 5) and r1.latents.shape == (4, 2) and not r1.batched


@pytest.mark.filterwarnings("ignore::posterior.ParticleDegeneracyWarning")
def test_runs_chains_and_arviz_keep_the_latents() -> None:
    """Each run's own draws, one draw per run, stored MCMC chains and the ArviZ output carry the
    decoded draws with their latents (``samples == D(latents)`` everywhere; ``z`` beside ``x``)."""
    pytest.importorskip("arviz")
    problem = linear_setup(B=2)
    decode = problem.prior.decode
    res = ps.sample(problem, "tds", num_particles=32, num_steps=5, seed=0, runs=4)
    torch.testing.assert_close(res.stats["run_samples"], decode(res.stats["run_latents"]))
    one = res.one_per_run(0)
    assert one.latents.shape == (2, 4, 2)
    torch.testing.assert_close(one.samples, decode(one.latents))
    for part in res.split_runs():
        torch.testing.assert_close(part.samples, decode(part.latents))
    post = ps.diagnostics.to_arviz(res)["posterior"]
    assert post["x"].shape == (1, 4, 2, 5) and post["z"].shape == (1, 4, 2, 2)
    chains = ps.sample(problem, "mala", num_particles=3, num_steps=6, seed=0, keep_chain=True)
    torch.testing.assert_close(chains.stats["chain"], decode(chains.stats["chain_latents"]))
    post = ps.diagnostics.to_arviz(chains)["posterior"]
    assert post["z"].shape[:2] == post["x"].shape[:2] and post["z"].shape[-1] == 2


@pytest.mark.parametrize("method", LINEAR_ONLY)
def test_linear_only_methods_refuse_by_name(method: str) -> None:
    with pytest.raises(ValueError, match=rf"'{method}' needs a linear operator; A o D \(Matrix"):
        ps.sample(nonlinear_setup(B=1), method, num_particles=4, num_steps=3)


def test_an_affine_decoder_makes_a_linear_latent_problem() -> None:
    """``A o D`` with a :class:`LinearDecoder`, a linear ``A`` and Gaussian noise is the linear
    problem ``y - A b = A W z + noise``: linear-only methods run; the same map as a black-box
    callable is nonlinear and they refuse it."""
    problem = linear_setup(B=2)
    inner = latent_problem(problem)
    assert isinstance(inner.operator, ps.operators.LinearOperator)
    res = ps.sample(problem, "mcgdiff", num_particles=8, num_steps=5, seed=0)
    torch.testing.assert_close(res.samples, problem.prior.decode(res.latents))
    opaque = blackbox(problem)
    assert not isinstance(latent_problem(opaque).operator, ps.operators.LinearOperator)
    with pytest.raises(ValueError, match="'mcgdiff' needs a linear operator"):
        ps.sample(opaque, "mcgdiff", num_particles=8, num_steps=5)
    # the same posterior either way: log p(y | z) agrees (y shifted by A b in the linear one)
    z = torch.randn(2, 6, 2)
    torch.testing.assert_close(inner.log_likelihood(z), latent_problem(opaque).log_likelihood(z))


@pytest.mark.filterwarnings("ignore::posterior.ParticleDegeneracyWarning")
@pytest.mark.parametrize("method", list(NONLINEAR))
def test_nonlinear_methods_run(method: str) -> None:
    res = ps.sample(nonlinear_setup(B=2), method, num_particles=4, num_steps=3, seed=0, **NONLINEAR[method])
    assert res.samples.shape == (2, 4, 4) and res.latents.shape == (2, 4, 2)
    assert torch.isfinite(res.samples).all()


def test_every_method_is_classified() -> None:
    """Each registered method either runs on a latent prior or refuses it by name (above); the
    joint samplers (``pmmh``, ...) need unknown parameters."""
    joint = {name for name, cls in ps.METHODS.items() if getattr(cls, "joint", False)}
    unclassified = set(ps.METHODS) - set(LINEAR_ONLY) - set(NONLINEAR) - joint
    assert not unclassified, f"add {sorted(unclassified)} to LINEAR_ONLY or NONLINEAR"


# ------------------------------------------------------------------------------- exactness
def test_linear_latent_problem_is_exact() -> None:
    """The closed-form evidence of the linear latent problem matches importance sampling with
    200k exact latent prior draws through ``A o D`` (relative error ``4 / sqrt(ESS)``)."""
    problem = linear_setup()
    exact = linear_latent_problem(problem).exact_log_evidence().double()
    z = problem.prior.latent_prior.sample(200_000, 0)
    log_w = by_hand(problem, problem.prior.linear_decoder).log_likelihood(z.expand(8, *z.shape)).double()
    estimate = torch.logsumexp(log_w, -1) - math.log(z.shape[0])
    ess = 1 / torch.softmax(log_w, -1).pow(2).sum(-1)
    assert ((estimate - exact).abs() < 4 / ess.sqrt()).all(), (estimate - exact, ess)


@pytest.mark.parametrize("opaque", [False, True], ids=["affine", "blackbox"])
def test_tds_log_evidence_with_an_affine_decoder(opaque: bool) -> None:
    """tds's evidence estimate ``Z_hat / Z_chain`` averages 1 over 8 problems within 4 standard
    errors plus the oracle's own error, against the chain oracle at K = 10 on the latent problem
    (the 10-step chain's evidence differs from the closed form by up to 2 nats here); with the
    decoder as a black box, tds runs its nonlinear twist through ``A o D``."""
    problem = linear_setup()
    ref = chain_posterior(by_hand(problem, problem.prior.linear_decoder), 10, num_draws=200_000, seed=0)
    if opaque:
        problem = blackbox(problem)
    res = ps.sample(problem, "tds", num_particles=1024, num_steps=10, seed=0)
    ratio = (res.log_evidence.double() - ref.log_evidence.double()).exp()
    se = ratio.std().item() / ratio.numel() ** 0.5
    oracle = 4 / ref.ess.min().sqrt().item()
    assert abs(ratio.mean().item() - 1) < 4 * se + oracle, (ratio, se, oracle)


@pytest.mark.slow
def test_tds_reaches_the_exact_floor_with_an_affine_decoder() -> None:
    """At 100 steps, tds's decoded draws (2000 particles) are within 2x the exact-vs-exact sliced
    W1 floor of the closed-form posterior pushed through ``D``, in ``x``-space (measured: 1.1x),
    while the prior's draws are far away."""
    problem = linear_setup(B=4)
    post = linear_latent_problem(problem).exact_posterior()
    gen = torch.Generator().manual_seed(0)
    ref, ref2 = (problem.prior.decode(post.sample(2000, gen)) for _ in range(2))
    floor = sliced_wasserstein(ref, ref2).mean().item()
    res = ps.sample(problem, "tds", num_particles=2000, num_steps=100, seed=0)
    dist = sliced_wasserstein(res.samples, ref).mean().item()
    prior_draws = problem.prior.sample(2000, 1).expand(4, 2000, 5)
    assert sliced_wasserstein(prior_draws, ref).mean().item() > 5 * floor
    assert dist < 2 * floor, (dist, floor)


@functools.cache
def nonlinear_reference() -> tuple[ps.InverseProblem, torch.Tensor, float]:
    """The nonlinear problems, the chain oracle's decoded draws at K = 20 ``[4, 2000, 4]`` and the
    oracle-vs-oracle sliced W1 floor (two oracles of 100k chain draws each, ESS 1400-2300)."""
    problem = nonlinear_setup()
    inner = by_hand(problem, smooth_decoder)
    refs = [chain_posterior(inner, 20, num_draws=100_000, num_samples=2000, seed=s) for s in (0, 1)]
    assert refs[0].ess.min() > 500
    ref, ref2 = (problem.prior.decode(r.samples) for r in refs)
    return problem, ref, sliced_wasserstein(ref, ref2).mean().item()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "n"), [("tds", 2000), ("pgas", 200)])
def test_agrees_with_the_chain_oracle_through_a_nonlinear_decoder(method: str, n: int) -> None:
    """A smooth nonlinear decoder at K = 20 steps: the decoded draws are within 2x the
    oracle-vs-oracle sliced W1 floor of the chain oracle's decoded draws (2000 each), the
    tolerance scaled by ``sqrt(2000 / n)`` for pgas's fewer draws (measured: 1.2x for tds; 2.4x,
    0.75 of its tolerance, for pgas), while the prior's draws are far away."""
    problem, ref, floor = nonlinear_reference()
    res = ps.sample(problem, method, num_particles=n, num_steps=20, seed=0)
    dist = sliced_wasserstein(res.samples, ref).mean().item()
    prior_draws = problem.prior.sample(2000, 1).expand(4, 2000, 4)
    assert sliced_wasserstein(prior_draws, ref).mean().item() > 5 * floor
    assert dist < 2 * floor * (2000 / n) ** 0.5, (dist, floor)


# ------------------------------------------------------------------------------- diffusers folders
def tiny_latent_folder(root, kind: str = "vae", scaling: float = 0.7):
    """A random latent model: images [1, 8, 8] -> latents [4, 4, 4], a UNet on the latents."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )  # fmt: skip
    common = dict(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=8, scaling_factor=scaling,
    )  # fmt: skip
    ae = (
        diffusers.AutoencoderKL(**common)
        if kind == "vae"
        else diffusers.VQModel(num_vq_embeddings=16, **common)
    )
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=100, prediction_type="v_prediction", clip_sample=False
    )
    unet.save_pretrained(root / "unet", safe_serialization=True)
    sched.save_pretrained(root / "scheduler")
    ae.save_pretrained(root / kind, safe_serialization=True)
    return root, ae


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_from_pretrained_latent_folder(tmp_path, kind: str) -> None:
    root, ae = tiny_latent_folder(tmp_path, kind)
    prior = ps.LatentPrior.from_pretrained(root)
    assert prior.latent_shape == (4, 4, 4) and prior.event_shape == (1, 8, 8)
    assert prior.latent_prior.prediction_type == "v_prediction"
    z = torch.randn(3, 4, 4, 4)
    with torch.no_grad():
        expect = ae.decode(z / 0.7).sample
    torch.testing.assert_close(prior.decode(z), expect, rtol=1e-4, atol=1e-5)
    if kind == "vae":  # the encoder returns scaled posterior means
        x = torch.rand(2, 1, 8, 8) * 2 - 1
        with torch.no_grad():
            mean = ae.encode(x).latent_dist.mean
        torch.testing.assert_close(prior.encode(x), 0.7 * mean, rtol=1e-4, atol=1e-5)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    y = prior.sample(1, 0, num_steps=5)[0][mask]
    problem = ps.InverseProblem(prior, ps.operators.Inpainting(mask), y, 0.1)
    res = ps.sample(problem, "dps", num_particles=3, num_steps=4, seed=0)
    assert res.samples.shape == (3, 1, 8, 8) and res.latents.shape == (3, 4, 4, 4)


def test_from_pretrained_errors(tmp_path) -> None:
    root, _ = tiny_latent_folder(tmp_path / "ldm")
    with pytest.raises(ValueError, match=r"latent diffusion folder \(unet/ \+ vae/\).*LatentPrior"):
        ps.DiffusersPrior.from_pretrained(root)
    (root / "vae").rename(root / "decoder")
    with pytest.raises(ValueError, match="one autoencoder folder"):
        ps.LatentPrior.from_pretrained(root)
    with pytest.raises(ValueError, match="has no unet or scheduler/"):
        ps.LatentPrior.from_pretrained(root / "decoder")
    (root / "decoder").rename(root / "vqvae")  # an AutoencoderKL where a VQModel belongs
    with pytest.raises(ValueError, match="holds a AutoencoderKL, expected a VQModel"):
        ps.LatentPrior.from_pretrained(root)
    (root / "vqvae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        ps.LatentPrior.from_pretrained(root)


@pytest.mark.skipif("mnist-latent" not in available_priors(), reason="latent MNIST weights not present")
def test_shipped_latent_prior() -> None:
    """``ps.load_prior("mnist-latent")``: a DDPM on ``[4, 7, 7]`` latents and a VAE decoder to
    digits; encoding and decoding a held-out digit keeps it (the VAE's reconstruction)."""
    prior = ps.load_prior("mnist-latent")
    assert isinstance(prior, ps.LatentPrior)
    assert prior.latent_shape == (4, 7, 7) and prior.event_shape == (1, 28, 28)
    x, _ = ps.priors.mnist_heldout(slice(0, 8))
    rec = prior.decode(prior.encode(x))
    assert ((rec - x) / 2).pow(2).mean() < 0.01  # PSNR above 20 dB
    assert prior.sample(2, 0, num_steps=5).shape == (2, 1, 28, 28)
