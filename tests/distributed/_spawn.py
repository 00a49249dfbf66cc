"""Run a function on several gloo processes on localhost and collect what each returns.

``run_ranks(fn, world_size)`` starts ``world_size`` processes (``torch.multiprocessing``, spawn),
each joining a gloo group on ``127.0.0.1`` at a free port with one torch thread, calls
``fn(rank, world_size, *args) -> dict[str, Tensor]`` and saves the dict (safetensors); the parent
returns the dicts in rank order. A process that raises fails the caller with its traceback; a run
that outlives ``timeout`` seconds (a hang in a collective) is terminated and fails too.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import Tensor

Worker = Callable[..., dict[str, Tensor]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, out: str, fn: Worker, args: tuple[Any, ...]) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),  # a collective waiting longer raises instead of hanging
    )
    try:
        result = fn(rank, world_size, *args)
        tensors = {k: v.detach().contiguous().clone() for k, v in result.items()}
        save_file(tensors, f"{out}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Worker, world_size: int = 2, *args: Any, timeout: float = 240.0) -> list[dict[str, Tensor]]:
    """``fn(rank, world_size, *args)`` on ``world_size`` gloo processes; their dicts, by rank."""
    with tempfile.TemporaryDirectory() as out:
        ctx = mp.start_processes(
            _entry,
            args=(world_size, free_port(), out, fn, args),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.terminate()
                for p in ctx.processes:
                    p.join(5)
                pytest.fail(f"{world_size} gloo processes did not finish within {timeout:.0f} s")
        return [load_file(str(Path(out) / f"rank{r}.safetensors")) for r in range(world_size)]
