"""Distributed sampling: throughput over ranks and the particles a resampling moves.

1. **Throughput.** TDS on the shipped MNIST prior (held-out digit 0, bottom half hidden,
   ``noise_std = 0.1``) with the same total number of particles in one process and in ``W``
   gloo processes on this machine (``ps.sample(..., distributed=True)``, one torch thread each).
   Throughput = particle-steps per second of wall time (the slowest rank's, from a barrier before
   the call to its end); the ratio to one process is the speed-up. The prior's moments (which
   TDS's twist uses; a network prior estimates them once per process from its own draws) are
   computed before the timings.
2. **Exchange, measured.** In the same ``W``-process run, one more run with the genealogy kept
   records what each rank sent at every resampling (``comm.traffic``); the sum over ranks is
   checked against :func:`posterior.distributed.exchange_volume` of the run's own ancestors.
3. **Exchange, by world size.** The ancestors of single-process TDS runs (MNIST at the
   ``--mnist-particles`` sizes, the 8-D Gaussian-mixture benchmark at ``--gmm-particles``) are
   split over ``W`` = 2, 4, 8, 16 ranks without launching them: the particles that would change
   rank per resampling (each once per destination rank) against the ``(W - 1) N`` of an
   all-gather, and their bytes: a TDS particle travels with its cache (the denoiser's ``eps`` and
   ``x0``, the twist gradient and value), ``4 d + 1`` floats (12,548 bytes on MNIST).

Run::

    python benchmarks/distributed.py --json benchmarks/results/distributed.json

The tables it prints are the ones in ``benchmarks/README.md`` ("Distributed sampling").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import posterior as ps
from posterior.distributed import TorchCommunicator, exchange_volume
from posterior.particles.engine import run_smc

WORLD_SIZES = (2, 4, 8, 16)


def mnist_problem() -> ps.InverseProblem:
    model = ps.load_prior("mnist")
    model.moments()  # TDS's twist uses them: estimated once per process from 256 draws, not timed
    shape = tuple(model.event_shape)
    op = ps.operators.Inpainting(ps.operators.half_mask(shape, "bottom"))
    truth, _ = ps.priors.shipped.mnist_heldout(slice(0, 1), dtype=model.dtype)
    problem = ps.problems.simulate(model, op, 0.1, 1, seed=0, truth=truth)
    return ps.InverseProblem(model, problem.operator, problem.y_batch[0], 0.1)


def particle_bytes(problem: ps.InverseProblem) -> int:
    """Bytes a TDS particle carries between ranks: the image and its cache (eps, x0, twist gradient:
    three more images; the twist value: one number)."""
    d = math.prod(problem.event_shape)
    return (4 * d + 1) * torch.finfo(problem.prior.dtype).bits // 8


def genealogy(problem: ps.InverseProblem, N: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestors ``[R, N]`` of every resampling of one TDS run (``R`` events) and how many there were."""
    sampler = ps.METHODS["tds"]()
    gen = torch.Generator().manual_seed(seed)
    pairs = problem.prior.schedule.time_pairs(steps)
    model = sampler.model(problem, pairs)
    out = run_smc(
        model,
        pairs,
        problem.batch_size,
        N,
        gen,
        threshold=sampler.threshold,
        genealogy=True,
        warn_degenerate=False,
    )
    events = out.resampled[0, :-1]  # the final resampling to equal weights is not an exchange
    return out.genealogy[0, :-1][events], events


def volumes(ancestors: torch.Tensor, N: int) -> list[dict]:
    rows = []
    for W in WORLD_SIZES:
        if N < W:
            continue
        moved = [exchange_volume(a[None], W) for a in ancestors]
        rows.append(
            {
                "world_size": W,
                "resamplings": len(moved),
                "moved_mean": statistics.fmean(moved) if moved else 0.0,
                "moved_max": max(moved, default=0),
                "all_gather": (W - 1) * N,
            }
        )
    return rows


# --------------------------------------------------------------------------- the W-process part
def _rank(rank: int, world_size: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=30),
    )
    warnings.simplefilter("ignore", ps.ParticleDegeneracyWarning)
    problem = mnist_problem()
    times, cpu = [], []
    for r in range(args.repeats):
        dist.barrier()
        start, cpu_start = time.perf_counter(), time.process_time()
        ps.sample(problem, "tds", args.particles, args.steps, seed=r, progress=False, distributed=True)
        elapsed = torch.tensor([time.perf_counter() - start, time.process_time() - cpu_start])
        parts = [torch.zeros(2) for _ in range(world_size)]
        dist.all_gather(parts, elapsed)
        times.append(max(float(p[0]) for p in parts))
        cpu.append([float(p[1]) for p in parts])
    # one more run through the engine with the genealogy, recording the exchanges
    comm = TorchCommunicator()
    sampler = ps.METHODS["tds"]()
    gen = torch.Generator().manual_seed(0)
    pairs = problem.prior.schedule.time_pairs(args.steps)
    model = sampler.model(problem, pairs)
    res = run_smc(
        model,
        pairs,
        1,
        args.particles,
        gen,
        genealogy=True,
        warn_degenerate=False,
        comm=comm,
    )
    sent = torch.tensor(comm.traffic.exchanges, dtype=torch.long).reshape(-1, 2)
    total = [torch.zeros_like(sent) for _ in range(world_size)]
    dist.all_gather(total, sent)
    if rank == 0:
        events = res.resampled[0, :-1]
        expected = [exchange_volume(a[None], world_size) for a in res.genealogy[0, :-1][events]]
        summed = sum(total)
        Path(out).write_text(
            json.dumps(
                {
                    "times": times,
                    "cpu": cpu,
                    "sent_particles": summed[:, 0].tolist(),
                    "sent_bytes": summed[:, 1].tolist(),
                    "expected_particles": expected,
                }
            )
        )
    dist.destroy_process_group()


def run_ranks(args: argparse.Namespace) -> dict:
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        mp.spawn(_rank, args=(args.world_size, port, args, out), nprocs=args.world_size)
        return json.loads(Path(out).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=64, help="total TDS particles for the throughput (64)")
    p.add_argument("--steps", type=int, default=10, help="diffusion steps (10)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per setting, the median is kept (2)")
    p.add_argument("--world-size", type=int, default=2, help="processes of the distributed run (2)")
    p.add_argument("--mnist-particles", default="64,256", help="MNIST genealogies for the volume table")
    p.add_argument("--gmm-particles", default="1000,10000,100000", help="mixture genealogies (8-D)")
    p.add_argument("--gmm-steps", type=int, default=50, help="steps of the mixture runs (50)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ps.ParticleDegeneracyWarning)

    problem = mnist_problem()
    per_particle = particle_bytes(problem)
    one, one_cpu = [], []
    for r in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        ps.sample(problem, "tds", args.particles, args.steps, seed=r, progress=False)
        one.append(time.perf_counter() - start)
        one_cpu.append(time.process_time() - cpu_start)
    multi = run_ranks(args)
    work = args.particles * args.steps
    t1, tw = statistics.median(one), statistics.median(multi["times"])
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "throughput": {
            "particles": args.particles,
            "steps": args.steps,
            "world_size": args.world_size,
            "seconds_1": one,
            "seconds_w": multi["times"],
            "cpu_seconds_1": one_cpu,
            "cpu_seconds_w": multi["cpu"],
            "particle_steps_per_s_1": work / t1,
            "particle_steps_per_s_w": work / tw,
            "speedup": t1 / tw,
        },
        "measured_exchange": {
            "particles_sent": multi["sent_particles"],
            "bytes_sent": multi["sent_bytes"],
            "expected_particles": multi["expected_particles"],
            "bytes_per_particle": per_particle,
        },
        "volumes": [],
    }
    print(f"throughput, TDS on MNIST, {args.particles} particles x {args.steps} steps:")
    print(
        f"  1 process: {work / t1:.1f} particle-steps/s   {args.world_size} processes: {work / tw:.1f}   "
        f"ratio {t1 / tw:.2f}"
    )
    cpu_w = statistics.median(max(c) for c in multi["cpu"])
    print(
        f"  CPU seconds: 1 process {statistics.median(one_cpu):.1f}, busiest of {args.world_size} "
        f"processes {cpu_w:.1f} (the work each process does; wall time also waits for a core)"
    )
    print(
        f"exchanges in the {args.world_size}-process run (particles sent per resampling, all ranks): "
        f"{multi['sent_particles']} (from the ancestors: {multi['expected_particles']}), "
        f"bytes {multi['sent_bytes']}"
    )

    cases = [("mnist", mnist_problem(), int(n), args.steps) for n in args.mnist_particles.split(",") if n]
    gmm = ps.problems.gmm_benchmark(dim=8, obs_dim=2, seed=0)
    cases += [("gmm8", gmm, int(n), args.gmm_steps) for n in args.gmm_particles.split(",") if n]
    print(
        "| problem | N | steps | resamplings | W | moved per resampling (mean / max) | all-gather "
        "(W-1)N | share | kB per resampling |"
    )
    for name, prob, N, steps in cases:
        ancestors, _ = genealogy(prob, N, steps, seed=0)
        for row in volumes(ancestors, N):
            row.update(problem=name, N=N, steps=steps, bytes_per_particle=particle_bytes(prob))
            report["volumes"].append(row)
            share = row["moved_mean"] / row["all_gather"]
            kb = row["moved_mean"] * particle_bytes(prob) / 1e3
            print(
                f"| {name} | {N} | {steps} | {row['resamplings']} | {row['world_size']} "
                f"| {row['moved_mean']:.1f} / {row['moved_max']} | {row['all_gather']} "
                f"| {share:.4f} | {kb:.1f} |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
