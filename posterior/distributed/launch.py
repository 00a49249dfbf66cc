"""Starting and recognising a ``torchrun`` launch (for the command line and scripts)."""

from __future__ import annotations

import os

import torch

__all__ = ["init_from_env", "is_main_process", "launched"]


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu") -> bool:
    """Initialise the default process group from ``torchrun``'s environment if it set one up.

    Backend NCCL when ``device`` is a CUDA device (each rank then uses GPU ``LOCAL_RANK``), gloo
    otherwise. Returns whether this process is part of a group of several (``False``: a plain
    single-process run, nothing initialised). A group the caller initialised already is kept.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def is_main_process() -> bool:
    """``True`` on rank 0 of an initialised group, and in a single process (the one that writes)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
