"""DiffusersPrior: loading diffusers folders, prediction-type conversions, errors; the shipped prior."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import posterior as ps
from posterior.priors.shipped import available_priors, mnist_heldout

diffusers = pytest.importorskip("diffusers")

PRED_TYPES = ["epsilon", "sample", "v_prediction"]


def tiny_unet(channels: int = 1, size: int = 8, seed: int = 0) -> diffusers.UNet2DModel:
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=(8, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    with torch.no_grad():  # make the output depend clearly on the input and time
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet


def make_scheduler(kind: str, prediction_type: str):
    cls = diffusers.DDPMScheduler if kind == "ddpm" else diffusers.DDIMScheduler
    return cls(
        num_train_timesteps=100, beta_schedule="linear", prediction_type=prediction_type, clip_sample=False
    )


def save_pipeline(root, unet, scheduler):
    unet.save_pretrained(root / "unet", safe_serialization=True)
    scheduler.save_pretrained(root / "scheduler")
    return root


def direct(unet, scheduler, pred: str, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eps and x0 computed by hand from the UNet output (float64 schedule)."""
    with torch.no_grad():
        out = unet(x, t).sample
    abar = scheduler.alphas_cumprod.double()[t].float().reshape(-1, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if pred == "epsilon":
        eps = out
        x0 = (x - s * out) / a
    elif pred == "sample":
        x0 = out
        eps = (x - a * out) / s
    else:
        x0 = a * x - s * out
        eps = s * x + a * out
    return eps, x0


@pytest.mark.parametrize("pred", PRED_TYPES)
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_roundtrip_and_conversions(tmp_path, pred: str, kind: str) -> None:
    unet, sched = tiny_unet(), make_scheduler(kind, pred)
    prior = ps.DiffusersPrior.from_pretrained(save_pipeline(tmp_path, unet, sched))
    assert prior.prediction_type == pred
    assert prior.event_shape == (1, 8, 8)
    assert prior.device == torch.device("cpu") and prior.dtype == torch.float32
    torch.testing.assert_close(prior.schedule.alphas_cumprod, sched.alphas_cumprod.float())
    assert type(prior.scheduler) is type(sched)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 50, 75, 99])
    eps, x0 = direct(unet, sched, pred, x, t)
    assert eps.abs().mean() > 0.05  # the network output is not trivial
    d = prior.denoise(x, t)
    torch.testing.assert_close(d.eps, eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.x0, x0, rtol=1e-4, atol=1e-4)
    abar = sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(prior.score(x, t), -eps / (1 - abar).sqrt(), rtol=1e-4, atol=1e-4)
    # a scalar time broadcasts
    torch.testing.assert_close(prior.x0(x, 50), direct(unet, sched, pred, x, torch.full((5,), 50))[1])
    # no autograd graph outside denoise_with_grad
    assert not d.x0.requires_grad and not d.eps.requires_grad


def test_x0_matches_diffusers_scheduler_step(tmp_path) -> None:
    """An independent check: DDPMScheduler.step's pred_original_sample is our denoiser."""
    for pred in PRED_TYPES:
        unet, sched = tiny_unet(seed=2), make_scheduler("ddpm", pred)
        prior = ps.DiffusersPrior(unet, sched)
        x = torch.randn(3, 1, 8, 8)
        for t in (5, 60):
            with torch.no_grad():
                out = unet(x, torch.full((3,), t)).sample
            ref = sched.step(out, t, x).pred_original_sample
            torch.testing.assert_close(prior.x0(x, t), ref, rtol=1e-4, atol=1e-4)


def test_denoise_with_grad_matches_autograd(tmp_path) -> None:
    unet, sched = tiny_unet(), make_scheduler("ddpm", "v_prediction")
    prior = ps.DiffusersPrior(unet, sched, max_batch_size=2)
    x = torch.randn(5, 1, 8, 8)
    target = torch.randn(5, 1, 8, 8)

    def fn(d, x_chunk, rows):
        return -(d.x0 - target[rows]).pow(2).flatten(1).sum(1)

    evals, vjps = prior.num_evals, prior.num_vjps
    d, val, grad = prior.denoise_with_grad(x, 30, fn)
    assert prior.num_evals - evals == 5 and prior.num_vjps - vjps == 5

    xr = x.clone().requires_grad_(True)
    _, x0 = None, None
    abar = sched.alphas_cumprod[30]
    out = unet(xr, torch.full((5,), 30)).sample
    x0 = abar.sqrt() * xr - (1 - abar).sqrt() * out
    v = -(x0 - target).pow(2).flatten(1).sum(1)
    (g,) = torch.autograd.grad(v.sum(), xr)
    torch.testing.assert_close(val, v.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, g, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d.x0, x0.detach(), rtol=1e-4, atol=1e-4)
    assert all(not p.requires_grad for p in unet.parameters())


def test_clip_denoised() -> None:
    unet, sched = tiny_unet(), make_scheduler("ddpm", "epsilon")
    prior = ps.DiffusersPrior(unet, sched, clip_denoised=(-1, 1))
    x = 3 * torch.randn(4, 1, 8, 8)
    d = prior.denoise(x, 99)
    assert d.x0.min() >= -1 and d.x0.max() <= 1
    raw = ps.DiffusersPrior(unet, sched).denoise(x, 99)
    assert (raw.x0.abs() > 1).any()  # clipping did something
    abar = sched.alphas_cumprod[99]
    # eps stays consistent with the clipped x0
    torch.testing.assert_close(d.eps, (x - abar.sqrt() * d.x0) / (1 - abar).sqrt())
    with pytest.raises(ValueError, match="clip_denoised"):
        ps.DiffusersPrior(unet, sched, clip_denoised=(1, -1))


def test_model_folder_with_scheduler(tmp_path) -> None:
    unet, sched = tiny_unet(channels=2), make_scheduler("ddim", "sample")
    save_pipeline(tmp_path, unet, sched)
    # a model folder with a scheduler/ next to it
    prior = ps.DiffusersPrior.from_pretrained(tmp_path / "unet")
    assert prior.event_shape == (2, 8, 8) and prior.prediction_type == "sample"
    # scheduler given as an object or a folder
    other = make_scheduler("ddpm", "epsilon")
    assert ps.DiffusersPrior.from_pretrained(tmp_path / "unet", scheduler=other).prediction_type == "epsilon"
    p2 = ps.DiffusersPrior.from_pretrained(tmp_path / "unet", scheduler=tmp_path / "scheduler")
    assert p2.prediction_type == "sample"
    p3 = ps.DiffusersPrior.from_pretrained(tmp_path, dtype=torch.float64)
    assert p3.dtype == torch.float64
    assert p3.denoise(torch.randn(2, 2, 8, 8, dtype=torch.float64), 3).x0.dtype == torch.float64


def test_errors(tmp_path) -> None:
    unet, sched = tiny_unet(), make_scheduler("ddpm", "epsilon")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        ps.DiffusersPrior.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no UNet"):
        ps.DiffusersPrior.from_pretrained(tmp_path / "empty")
    # a UNet without any scheduler
    unet.save_pretrained(tmp_path / "alone" / "model", safe_serialization=True)
    with pytest.raises(FileNotFoundError, match="no scheduler"):
        ps.DiffusersPrior.from_pretrained(tmp_path / "alone" / "model")
    with pytest.raises(FileNotFoundError, match=r"scheduler_config\.json"):
        ps.DiffusersPrior.from_pretrained(tmp_path / "alone" / "model", scheduler=tmp_path / "empty")
    # pickled weights are refused
    unet.save_pretrained(tmp_path / "pickled" / "unet", safe_serialization=False)
    sched.save_pretrained(tmp_path / "pickled" / "scheduler")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        ps.DiffusersPrior.from_pretrained(tmp_path / "pickled")
    # images of the wrong size or channel count
    prior = ps.DiffusersPrior(unet, sched)
    with pytest.raises(ValueError, match=r"1 channel\(s\) and size 8x8"):
        prior.denoise(torch.zeros(2, 3, 8, 8), 10)
    with pytest.raises(ValueError, match="size 8x8"):
        prior.denoise(torch.zeros(2, 1, 16, 16), 10)
    with pytest.raises(ValueError, match="size 8x8"):
        prior.denoise_with_grad(torch.zeros(2, 64), 10, lambda d, x, r: d.x0.sum((1, 2, 3)))
    with pytest.raises(ValueError, match="prediction_type"):
        ps.DiffusersPrior(unet, make_scheduler("ddpm", "epsilon").__class__(prediction_type="bogus"))
    with pytest.raises(TypeError, match="scheduler"):
        ps.DiffusersPrior(unet, object())
    with pytest.raises(TypeError, match="UNet2DModel"):
        ps.DiffusersPrior(torch.nn.Linear(2, 2), sched)


def test_import_is_lazy() -> None:
    code = "import sys, posterior; assert 'diffusers' not in sys.modules, 'diffusers imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------- shipped
def test_heldout_digits() -> None:
    x, y = mnist_heldout()
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (500,)
    assert x.min() == -1 and x.max() == 1 and set(y.tolist()) == set(range(10))
    x3, _ = mnist_heldout([3, 7])
    torch.testing.assert_close(x3, x[[3, 7]])
    assert mnist_heldout(4)[0].shape == (1, 1, 28, 28)
    with pytest.raises(IndexError):
        mnist_heldout(500)


def test_unknown_prior() -> None:
    with pytest.raises(ValueError, match="available priors"):
        ps.load_prior("imagenet")


@pytest.mark.skipif("mnist" not in available_priors(), reason="MNIST weights not present")
def test_load_mnist_prior() -> None:
    prior = ps.load_prior("mnist")
    assert isinstance(prior, ps.DiffusersPrior)
    assert prior.event_shape == (1, 28, 28) and prior.clip_denoised == (-1.0, 1.0)
    assert prior.prediction_type == "v_prediction" and prior.schedule.num_train_steps == 1000
    x = prior.sample(4, generator=0, num_steps=20)
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.3  # not a constant image
    torch.testing.assert_close(x, prior.sample(4, generator=0, num_steps=20))
