"""DiffusersPrior on EDM and flow-matching scheduler folders: the denoiser the samplers see is the
network's own (through the scheduler's preconditioning), samplers run, unmapped schedulers are named."""

from __future__ import annotations

import pytest
import torch

import posterior as ps

from .test_diffusers import save_pipeline, tiny_unet

diffusers = pytest.importorskip("diffusers")


def edm_scheduler(prediction_type: str = "epsilon"):
    return diffusers.EDMEulerScheduler(num_train_timesteps=100, prediction_type=prediction_type)


def flow_scheduler(shift: float = 1.0):
    return diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=100, shift=shift)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_edm_folder_denoiser_is_the_preconditioned_network(tmp_path, pred: str) -> None:
    unet, sched = tiny_unet(), edm_scheduler(pred)
    prior = ps.DiffusersPrior.from_pretrained(save_pipeline(tmp_path, unet, sched))
    assert isinstance(prior.schedule, ps.EDMSchedule) and prior.schedule.num_train_steps == 100
    assert prior.network_prediction == pred and prior.prediction_type == "sample"
    assert torch.allclose(prior.schedule.sigmas[[0, -1]], torch.tensor([0.002, 80.0], dtype=torch.float64))
    t = torch.tensor([3, 40, 99])
    x_vp = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = prior.schedule.to_native(x_vp, t)
    sigma = prior.schedule.sigmas[t].float().reshape(-1, 1, 1, 1)
    with torch.no_grad():
        out = prior.unet(
            sched.precondition_inputs(x, sigma), sched.precondition_noise(sigma.flatten())
        ).sample
    x0_ref = sched.precondition_outputs(x, out, sigma)
    d = prior.denoise(x_vp, t)
    assert torch.allclose(d.x0, x0_ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(x0_ref + sigma * d.eps, x, atol=1e-4, rtol=1e-4)  # x = x0 + sigma eps natively


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_folder_denoiser_from_the_velocity(tmp_path, shift: float) -> None:
    unet, sched = tiny_unet(seed=1), flow_scheduler(shift)
    prior = ps.DiffusersPrior.from_pretrained(save_pipeline(tmp_path, unet, sched))
    assert isinstance(prior.schedule, ps.FlowSchedule) and prior.network_prediction == "velocity"
    # the tabulated levels are the scheduler's training sigmas (the last capped below 1)
    assert torch.allclose(prior.schedule.times[:-1], sched.sigmas.flip(0)[:-1].double(), atol=1e-6)
    t = torch.tensor([0, 50, 98])
    x_vp = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = prior.schedule.to_native(x_vp, t)
    tau = prior.schedule.times[t].float().reshape(-1, 1, 1, 1)
    with torch.no_grad():
        v = prior.unet(x, tau.flatten() * 100).sample
    d = prior.denoise(x_vp, t)
    assert torch.allclose(d.x0, x - tau * v, atol=1e-5, rtol=1e-4)
    assert torch.allclose((1 - tau) * d.x0 + tau * d.eps, x, atol=1e-4, rtol=1e-4)
    assert torch.allclose(d.eps, x + (1 - tau) * v, atol=1e-4, rtol=1e-3)  # eps = x0 + v


@pytest.mark.filterwarnings("ignore::posterior.ParticleDegeneracyWarning")
@pytest.mark.parametrize("kind", ["ddim", "edm", "flow"])
def test_each_scheduler_kind_loads_and_samples(tmp_path, kind: str) -> None:
    """A folder per scheduler kind loads and runs an exact and an approximate sampler."""
    sched = {
        "ddim": diffusers.DDIMScheduler(num_train_timesteps=100, prediction_type="v_prediction"),
        "edm": edm_scheduler(),
        "flow": flow_scheduler(),
    }[kind]
    prior = ps.DiffusersPrior.from_pretrained(
        save_pipeline(tmp_path, tiny_unet(), sched), clip_denoised=(-1, 1)
    )
    assert prior.schedule.kind == ("vp" if kind == "ddim" else kind)
    op = ps.operators.Inpainting(torch.ones(1, 8, 8).masked_fill(torch.arange(8) >= 4, 0))
    problem = ps.InverseProblem(prior, op, torch.zeros(32), 0.1)
    for method in ("tds", "dps"):
        res = ps.sample(problem, method, num_particles=4, num_steps=5, seed=0)
        assert res.samples.shape == (4, 1, 8, 8) and torch.isfinite(res.samples).all()
    x = prior.sample(2, 0, num_steps=5)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_unmapped_scheduler_is_named(tmp_path) -> None:
    root = save_pipeline(tmp_path, tiny_unet(), diffusers.ScoreSdeVeScheduler())
    with pytest.raises(ValueError, match="ScoreSdeVeScheduler"):
        ps.DiffusersPrior.from_pretrained(root)
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        ps.DiffusersPrior(tiny_unet(), diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True))
    with pytest.raises(ValueError, match="prediction_type"):
        ps.DiffusersPrior(tiny_unet(), edm_scheduler().__class__(prediction_type="sample"))
