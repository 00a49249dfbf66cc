import pytest
import torch

from posterior.schedule import CLEAN, VPSchedule


def test_linear_matches_ddpm_definition():
    s = VPSchedule.linear(1000, 1e-4, 0.02)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(s.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-6)
    assert s.alpha_bar(CLEAN).item() == 1.0
    assert s.alpha_bar(torch.tensor([0, 999])).shape == (2,)


def test_cosine_is_decreasing_and_valid():
    s = VPSchedule.cosine(1000)
    a = s.alphas_cumprod
    assert (a[1:] < a[:-1]).all() and a[-1] > 0 and a[0] < 1


def test_from_diffusers_scheduler():
    from diffusers import DDPMScheduler

    sch = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    s = VPSchedule.from_diffusers(sch)
    assert torch.allclose(s.alphas_cumprod, sch.alphas_cumprod.float())


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_decreasing_and_in_range(spacing):
    s = VPSchedule.linear(1000)
    ts = s.timesteps(37, spacing)
    assert ts.shape == (37,) and (ts[:-1] > ts[1:]).all()
    assert ts.min() >= 0 and ts.max() <= 999
    pairs = s.time_pairs(37, spacing)
    assert pairs[-1][1] == CLEAN and all(t > u for t, u in pairs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="decreasing"):
        VPSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="num_steps"):
        VPSchedule.linear(10).timesteps(11)
    with pytest.raises(ValueError, match="out of range"):
        VPSchedule.linear(10).alpha_bar(10)
