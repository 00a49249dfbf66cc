"""What each gloo process runs in the distributed tests (importable by spawned processes).

Every function takes ``(rank, world_size)``, runs inside an initialised gloo group and returns a
``dict[str, Tensor]`` that the test compares across ranks and against single-process references.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

import posterior as ps
from posterior.distributed import TorchCommunicator
from posterior.kernels.moves import mala_move
from posterior.operators import Nonlinear
from posterior.particles.engine import FeynmanKacModel, _gather_rows, run_smc
from posterior.particles.resampling import RESAMPLERS

#: methods run distributed in :func:`sampling`: particle, chain and independent-draw samplers
METHODS = ("smc", "tds", "mcgdiff", "mala", "gibbs", "dps")
#: the oracle runs: Gaussian-mixture benchmark seeds and the exact samplers
ORACLE_SEEDS = (0, 1, 2, 3)
EXACT = ("smc", "tds", "mcgdiff")


class _NanOnLastRank(FeynmanKacModel):
    """A random walk whose first particle on the last rank becomes NaN at step 2 (with weight)."""

    name = "toy"

    def init(self, B: int, N: int, generator: torch.Generator, shared: torch.Generator) -> tuple:
        return torch.randn(B, N, 1, generator=generator), {}, None

    def step(
        self, t: int, s: int, x: Tensor, extras: dict, log_weights: Tensor, generator: torch.Generator
    ) -> tuple:
        x = x + torch.randn(x.shape, generator=generator)
        if t == 3 and dist.get_rank() == dist.get_world_size() - 1:  # step 2 of the pairs (5, 4) .. (1, 0)
            x[0, 0] = math.nan
        return x, extras, -0.5 * x[..., 0] ** 2


def collectives(rank: int, world_size: int) -> dict[str, Tensor]:
    """Reductions, the uneven all-gather, the generators, and resampling exchanges."""
    comm = TorchCommunicator()
    out: dict[str, Tensor] = {}
    N = 7  # 4 + 3 over two ranks
    start, count = comm.split(N)
    full = torch.randn(3, N, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    block = full[:, start : start + count]
    out["full"] = full
    out["gathered"] = comm.all_gather(block, N)
    out["flags"] = comm.all_gather(block[..., 0] > 0, N)
    out["sum"], out["mean"] = comm.sum(block[..., 0]), comm.mean(block[..., 0])
    out["logsumexp"] = comm.logsumexp(block[..., 0])
    out["any"] = torch.tensor([comm.any(rank == world_size - 1), comm.any(False)])
    # each rank passes a different generator: the shared stream must still agree (rank 0's seed)
    shared, local = comm.generators(torch.Generator().manual_seed(100 + rank))
    out["shared_draw"], out["local_draw"] = torch.rand(4, generator=shared), torch.rand(4, generator=local)

    # exchanges: particles [B, N, 2, 2] float32 with a cache of two other dtypes, B = 3 problems,
    # ancestors from each scheme on skewed random weights, every problem or a subset resampled
    gen = torch.Generator().manual_seed(1)
    for N in (10, 7, 2):
        start, count = comm.split(N)
        tensors = [
            torch.randn(3, N, 2, 2, generator=gen),
            torch.randn(3, N, generator=gen, dtype=torch.float64),
            torch.randint(0, 100, (3, N, 3), generator=gen),
        ]
        for name, scheme in RESAMPLERS.items():
            for rows in (torch.tensor([0, 1, 2]), torch.tensor([0, 2])):
                log_w = 3 * torch.randn(rows.numel(), N, generator=gen)
                anc = scheme(log_w, gen)
                moved = comm.resample([t[:, start : start + count] for t in tensors], rows, anc)
                want = [_gather_rows(t, rows, anc)[:, start : start + count] for t in tensors]
                err = max(float((m - w).abs().max()) for m, w in zip(moved, want, strict=True))
                out[f"exchange/{N}/{name}/{rows.numel()}"] = torch.tensor(err)
    out["traffic"] = torch.tensor(comm.traffic.exchanges, dtype=torch.long)

    # NaN on one rank: every rank raises the same error (none waits in a collective for the other)
    try:
        run_smc(_NanOnLastRank(), [(k + 1, k) for k in range(5)][::-1], 1, 8, torch.Generator(), comm=comm)
        out["nan_raised"] = torch.tensor(0)
    except FloatingPointError as err:
        out["nan_raised"] = torch.tensor(int("toy: step 2" in str(err)))
    return out


def _store(out: dict[str, Tensor], key: str, result: ps.Result) -> None:
    out[f"{key}/samples"] = result.samples
    out[f"{key}/counts"] = torch.tensor([result.num_evals, result.num_vjps])
    out[f"{key}/wall_time"] = torch.tensor(result.wall_time, dtype=torch.float64)
    for name in ("log_evidence", "ess", "log_weights", "resampled", "acceptance"):
        value = getattr(result, name)
        if value is not None:
            out[f"{key}/{name}"] = value
    for name, value in result.stats.items():
        out[f"{key}/stats/{name}"] = value


def sampling(rank: int, world_size: int) -> dict[str, Tensor]:
    """Every kind of sampler through ``ps.sample(..., distributed=...)``, small and fast."""
    out: dict[str, Tensor] = {}
    problem = ps.problems.gmm_benchmark(dim=4, obs_dim=2, seed=0)
    for m in METHODS:
        for run in ("first", "again"):  # the same seed twice
            res = ps.sample(problem, m, num_particles=11, num_steps=8, seed=3, distributed=True)
            _store(out, f"{m}/{run}", res)
    # no resampling: the N weighted particles before the final draw show each rank's own noise
    _store(out, "never", ps.sample(problem, "tds", 10, 8, seed=0, distributed=True, threshold="never"))
    # resample-move: the move's acceptance is averaged over both ranks' particles
    move = mala_move(2, step_size=0.05)
    _store(out, "move", ps.sample(problem, "smc", 11, 8, seed=0, distributed=True, threshold=1.0, move=move))
    out["move/step_size"] = move.step_size
    # chains started from a given tensor: each rank takes its block of it
    init = torch.randn(11, 4, generator=torch.Generator().manual_seed(5))
    res = ps.sample(
        problem, "mala", 11, 1, seed=0, distributed=True, init=init, burn_in=0, adapt=False, step_size=1e-8
    )
    out["mala_init/samples"], out["mala_init/init"] = res.samples, init
    # a batch of 3 problems, split by problem (2 + 1) and by particles
    batch = ps.problems.simulate(problem.prior, problem.operator, 0.5, 3, seed=1)
    _store(out, "problems", ps.sample(batch, "tds", 6, 8, seed=0, distributed="problems"))
    _store(out, "particles", ps.sample(batch, "tds", 6, 8, seed=0, distributed="particles"))
    return out


def shared_draws(rank: int, world_size: int) -> dict[str, Tensor]:
    """TDS on a nonlinear operator: its twist's fixed random directions, drawn at ``init``, must be
    the same on every rank (particles and their twist values move between ranks)."""
    problem = ps.problems.gmm_benchmark(dim=4, obs_dim=2, seed=0)
    op = Nonlinear(lambda x: torch.tanh(x[:, :2] / 4))
    problem = ps.InverseProblem(problem.prior, op, op(problem.truth[None])[0], 0.05)
    pairs = problem.prior.schedule.time_pairs(4)
    model = ps.METHODS["tds"]().model(problem, pairs)
    out = run_smc(model, pairs, 1, 12, torch.Generator().manual_seed(rank), comm=TorchCommunicator())
    return {"xi": model.xi, "samples": out.samples}


def oracle(rank: int, world_size: int) -> dict[str, Tensor]:
    """The exact samplers with 2,000 particles over the ranks on Gaussian-mixture benchmarks."""
    out: dict[str, Tensor] = {}
    for seed in ORACLE_SEEDS:
        problem = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=seed)
        for m in EXACT:
            res = ps.sample(problem, m, num_particles=2000, num_steps=100, seed=0, distributed=True)
            out[f"{seed}/{m}/samples"], out[f"{seed}/{m}/log_evidence"] = res.samples, res.log_evidence
    return out


def command_line(rank: int, world_size: int, out: str) -> dict[str, Tensor]:
    """``posterior compare`` and ``posterior calibrate`` inside the group, each rank with its own
    ``--out``: only rank 0's must be written."""
    from pathlib import Path

    from posterior.cli import main

    base = Path(out) / f"rank{rank}"
    common = ["--problem", "gmm:2:1", "--particles", "64", "--steps", "10", "--quiet"]
    compare = main(["compare", "--method", "tds", "--method", "dps", *common, "--out", str(base / "compare")])
    sbc = ["--num-problems", "20", "--draws", "5"]
    calibrate = main(["calibrate", "--method", "tds", *sbc, *common, "--out", str(base / "cal")])
    report = base / "compare" / "report.json"
    return {
        "status": torch.tensor([compare, calibrate]),
        "written": torch.tensor([report.exists(), (base / "cal" / "report.json").exists()]),
    }
