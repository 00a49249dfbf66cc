"""One TDS particle system over several processes (GPUs, or CPU processes), launched by torchrun.

Every process runs this script: it joins the process group torchrun describes (NCCL with one GPU
per process when CUDA is available, gloo on CPUs otherwise), builds the same problem (a held-out
MNIST digit, bottom half hidden, noise 0.1), and calls ``ps.sample(..., distributed=True)``: each
rank holds ``N / W`` of the particles and runs the network on them; weights, ESS and evidence are
global and resampling moves particles between ranks. Every rank gets the same full result; rank 0
writes it::

    torchrun --nproc_per_node=2 examples/distributed_sampling.py --particles 64 --steps 20
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --master_addr=HOST0 --master_port=29500 \\
        examples/distributed_sampling.py --particles 4096        # then node_rank=1 on the second host

Without torchrun it runs in one process (the same call, no group).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

import posterior as ps
from posterior.distributed import init_from_env, is_main_process


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=int, default=64, help="total particles over all processes (64)")
    p.add_argument("--steps", type=int, default=20, help="diffusion steps (20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out/distributed/tds.safetensors"))
    args = p.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    distributed = init_from_env(device)  # NCCL on GPU LOCAL_RANK, or gloo; False without torchrun
    prior = ps.load_prior("mnist", device=device)
    shape = tuple(prior.event_shape)
    op = ps.operators.Inpainting(ps.operators.half_mask(shape, "bottom", device=prior.device))
    truth, _ = ps.priors.shipped.mnist_heldout(slice(0, 1), device=prior.device, dtype=prior.dtype)
    simulated = ps.problems.simulate(prior, op, 0.1, 1, seed=0, truth=truth)  # the same y on every rank
    problem = ps.InverseProblem(prior, op, simulated.y_batch[0], 0.1)

    result = ps.sample(
        problem,
        "tds",
        num_particles=args.particles,
        num_steps=args.steps,
        seed=args.seed,
        distributed=distributed,
    )
    if is_main_process():
        world = dist.get_world_size() if distributed else 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_file({"samples": result.samples.cpu().contiguous(), "ess": result.ess.cpu()}, str(args.out))
        print(
            f"{world} process(es): {result.samples.shape[0]} samples, "
            f"log-evidence {float(result.log_evidence):.2f}, "
            f"min ESS {float(result.ess.min()):.1f}, {result.wall_time:.1f} s; written to {args.out}"
        )
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
