import pytest
import torch

from posterior.schedule import (
    AUTO_TIME_GRID,
    CLEAN,
    DEFAULT_TIME_GRID,
    TIME_GRIDS,
    EDMSchedule,
    FlowSchedule,
    VPSchedule,
    check_time_grid,
)


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


@pytest.mark.parametrize("schedule", [VPSchedule.linear(1000), EDMSchedule(), FlowSchedule()], ids=repr)
@pytest.mark.parametrize("spacing", TIME_GRIDS)
def test_timesteps_decreasing_and_in_range(spacing, schedule):
    s = schedule
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


def test_named_grids_endpoints():
    s = VPSchedule.linear(1000)
    assert s.timesteps(100, "leading")[0] == 990 and s.timesteps(100, "leading")[-1] == 0
    assert s.timesteps(100, "trailing")[0] == 999
    for grid in ("linspace", "logsnr"):
        ts = s.timesteps(100, grid)
        assert ts[0] == 999 and ts[-1] == 0
    # every time once when num_steps = T, whatever the grid
    for grid in TIME_GRIDS:
        assert s.timesteps(1000, grid).tolist() == list(range(999, -1, -1))


@pytest.mark.parametrize(
    "schedule", [VPSchedule.linear(1000), VPSchedule.cosine(999), EDMSchedule(num_train_steps=500)], ids=repr
)
def test_every_grid_and_step_count_gives_num_steps_times_from_the_top(schedule):
    """For every num_steps in 1..T and every named grid: exactly num_steps strictly decreasing
    times in 0..T-1, starting at T - 1 (leading: at its stride's last multiple, and at T - 2 at
    most one below the top once the stride would be 1)."""
    T = schedule.num_train_steps
    for grid in TIME_GRIDS:
        for n in range(1, T + 1):
            ts = schedule.timesteps(n, grid)
            assert ts.dtype == torch.long and ts.shape == (n,), (grid, n, ts.shape)
            assert bool((ts[:-1] > ts[1:]).all()) and int(ts[-1]) >= 0, (grid, n)
            top = int(ts[0])
            if grid != "leading":
                assert top == T - 1, (grid, n, top)
            elif T // n >= 2:  # DDIM's leading grid, unchanged: 0, k, ..., (n - 1) k
                assert ts.tolist() == [i * (T // n) for i in range(n - 1, -1, -1)], n
            else:
                assert top >= T - 2, (n, top)


def test_trailing_grid_is_diffusers_trailing():
    np = pytest.importorskip("numpy")
    T = 1000
    for n in (7, 37, 61, 100, 103, 250, 769, 998, 1000):
        ref = np.round(np.arange(T, 0, -T / n)).astype(np.int64)[:n] - 1
        assert VPSchedule.linear(T).timesteps(n, "trailing").tolist() == ref.tolist(), n


@pytest.mark.parametrize(
    ("grid", "level"),
    [
        ("sqrt_abar", lambda abar: abar.sqrt()),
        ("karras", lambda abar: ((1 - abar) / abar).pow(1 / 14)),
        ("logsnr", lambda abar: (abar / (1 - abar)).log()),
    ],
)
@pytest.mark.parametrize("schedule", [VPSchedule.linear(1000), EDMSchedule()], ids=repr)
def test_level_grids_take_the_times_nearest_a_uniform_level_grid(grid, level, schedule):
    T, n = schedule.num_train_steps, 40
    table = level(schedule.alpha_bar(torch.arange(T)))
    targets = torch.linspace(float(table[-1]), float(table[0]), n, dtype=torch.float64)
    nearest = (table[None, :] - targets[:, None]).abs().argmin(1)  # [n], largest time first
    ts = schedule.timesteps(n, grid)
    distinct = torch.ones(n, dtype=torch.bool)  # where rounding alone keeps the times apart
    distinct[1:] &= nearest[1:] < nearest[:-1]
    distinct[:-1] &= nearest[:-1] > nearest[1:]
    assert distinct.sum() >= n // 2
    assert torch.equal(ts[distinct], nearest[distinct])


def test_auto_grid_and_karras_levels():
    """ "auto" is AUTO_TIME_GRID on every schedule and the default of timesteps; "karras" walks an
    EDM schedule's own rho = 7 levels (its times evenly spaced, up to rounding ties)."""
    for schedule in (VPSchedule.linear(1000), VPSchedule.cosine(1000), FlowSchedule(), EDMSchedule()):
        auto = schedule.timesteps(50, "auto")
        assert torch.equal(auto, schedule.timesteps(50, AUTO_TIME_GRID))
        assert torch.equal(auto, schedule.timesteps(50)) and DEFAULT_TIME_GRID == "auto"
    s = EDMSchedule()
    for n in (3, 10, 37, 100, 501):
        assert (s.timesteps(n, "karras") - s.timesteps(n, "linspace")).abs().max() <= 1, n


def test_logsnr_grid_is_uniform_in_log_snr_where_times_allow():
    s = EDMSchedule()
    ts = s.timesteps(50, "logsnr")
    abar = s.alpha_bar(ts)
    lam = (abar / (1 - abar)).log()
    gaps = lam[1:] - lam[:-1]  # increasing log-SNR as t decreases
    assert (gaps > 0).all()
    uniform = (lam[-1] - lam[0]) / 49
    assert torch.allclose(gaps[5:-5], uniform.expand(gaps[5:-5].shape), rtol=0.1)


def test_given_grid():
    s = VPSchedule.linear(100)
    assert s.time_pairs(3, [90, 40, 2]) == [(90, 40), (40, 2), (2, CLEAN)]
    assert s.timesteps(2, torch.tensor([5, 1])).tolist() == [5, 1]
    with pytest.raises(ValueError, match="num_steps"):
        s.timesteps(4, [90, 40, 2])
    with pytest.raises(ValueError, match="beyond"):
        s.timesteps(2, [100, 2])
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_time_grid([2, 40])
    with pytest.raises(ValueError, match="time_grid must be one of"):
        check_time_grid("cosine")
    with pytest.raises(ValueError, match="integer"):
        check_time_grid([2.5, 1])
    with pytest.raises(ValueError, match="unknown spacing"):
        s.timesteps(3, "cosine")


def test_edm_schedule_levels_and_vp_equivalence():
    s = EDMSchedule(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert s.sigmas[0].item() == pytest.approx(0.002) and s.sigmas[-1].item() == pytest.approx(80.0)
    assert (s.sigmas[1:] > s.sigmas[:-1]).all()
    t = torch.tensor([0, 500, 999])
    assert torch.equal(s.alpha(t), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(s.alpha_bar(t), 1 / (1 + s.sigmas[t] ** 2))
    assert torch.allclose(s.scale(t), (1 + s.sigmas[t] ** 2).sqrt())
    # the Karras levels of diffusers' EDMEulerScheduler
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.EDMEulerScheduler(num_train_timesteps=1000)
    ref = sch._compute_karras_sigmas(torch.linspace(0, 1, 1000, dtype=torch.float64)).flip(0)
    assert torch.allclose(s.sigmas, ref.double(), rtol=1e-6)


def test_flow_schedule_levels():
    s = FlowSchedule(num_train_steps=1000)
    assert s.times[0].item() == pytest.approx(1e-3) and s.times[-1].item() == pytest.approx(1 - 1e-4)
    t = torch.arange(1000)
    assert torch.allclose(s.alpha(t) + s.sigma(t), torch.ones(1000, dtype=torch.float64))
    assert torch.allclose(s.sigma(t), s.times)
    shifted = FlowSchedule(shift=3.0)
    assert (shifted.times[:-1] > s.times[:-1]).all()


@pytest.mark.parametrize("schedule", [VPSchedule.linear(1000), EDMSchedule(), FlowSchedule()], ids=repr)
def test_native_and_vp_variables_agree(schedule):
    """alpha x0 + sigma eps = s (sqrt(abar) x0 + sqrt(1 - abar) eps), and back."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(5, 3, generator=gen, dtype=torch.float64),
        torch.randn(5, 3, generator=gen, dtype=torch.float64),
    )
    t = torch.tensor([0, 10, 300, 700, 999])
    col = (slice(None), None)
    native = schedule.alpha(t)[col] * x0 + schedule.sigma(t)[col] * eps
    abar = schedule.alpha_bar(t)[col]
    vp = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    assert torch.allclose(schedule.to_native(vp, t), native)
    assert torch.allclose(schedule.from_native(native, t), vp)
    assert schedule.scale(CLEAN).item() == 1.0 and schedule.sigma(CLEAN).item() == 0.0


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="sigma_min"):
        EDMSchedule(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="rho"):
        EDMSchedule(rho=0.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        EDMSchedule.from_sigmas(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="tau_max"):
        FlowSchedule(tau_max=1.0)
    with pytest.raises(ValueError, match="shift"):
        FlowSchedule(shift=0.0)
    assert EDMSchedule.from_sigmas(torch.tensor([0.1, 1.0, 10.0])).num_train_steps == 3
