"""Communicators: the collectives a particle system needs across processes.

A particle system of ``N`` particles per problem is split over the ``W`` ranks of a process group
in contiguous blocks (:func:`split`): rank ``r`` holds the global particles
``start_r .. start_r + count_r - 1``, ``count_r = N // W`` plus one for the first ``N % W`` ranks.
The engine (:func:`posterior.particles.engine.run_smc`) asks its communicator for

* sums, means and log-sum-exps over the particle dimension of all ranks (normalising weights,
  the ESS, the log-evidence increment, mean acceptance rates);
* the all-gather of a per-particle tensor (the log-weights before resampling, the final particles);
* the exchange of the particles a resampling moves between ranks
  (:mod:`posterior.distributed.exchange`);
* two random generators: a *shared* one, identical on every rank, for the draws every rank must
  agree on (resampling ancestors), and a *local* one per rank for its own particles' noise.

:class:`Communicator` is the single-process communicator: every collective is the plain local
operation, so the single-process engine does exactly what it does without one.
:class:`TorchCommunicator` runs the collectives with ``torch.distributed`` (gloo on CPU, NCCL on
GPUs). Every reduction is an all-gather followed by the same local reduction on every rank, so
all ranks hold bit-identical weights, ESS and evidence and take the same resampling decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from posterior.distributed.exchange import exchange, split

__all__ = ["Communicator", "TorchCommunicator", "Traffic", "split"]

#: odd 64-bit constant (the golden ratio's) that spreads the per-rank seeds apart
_SEED_STRIDE = 0x9E3779B97F4A7C15


@dataclass
class Traffic:
    """What a communicator sent (this rank's share), for benchmarks.

    Attributes:
        exchanges: per resampling, ``(particles sent, bytes sent)`` by this rank to other ranks.
        gathered_bytes: bytes this rank contributed to all-gathers (weights, final particles).
    """

    exchanges: list[tuple[int, int]] = field(default_factory=list)
    gathered_bytes: int = 0

    def reset(self) -> None:
        self.exchanges.clear()
        self.gathered_bytes = 0


class Communicator:
    """The single-process communicator: every collective is the local operation (the identity for
    gathers and exchanges), both generators are the caller's. The default of the engine."""

    rank: int = 0
    world_size: int = 1

    def __init__(self) -> None:
        self.traffic = Traffic()

    @property
    def distributed(self) -> bool:
        """Whether there is more than one rank."""
        return self.world_size > 1

    def split(self, total: int) -> tuple[int, int]:
        """``(start, count)`` of this rank's block of ``total`` items (see :func:`split`)."""
        return split(total, self.world_size)[self.rank]

    def generators(self, generator: torch.Generator) -> tuple[torch.Generator, torch.Generator]:
        """``(shared, local)``: the generator of draws every rank must agree on, and this rank's own."""
        return generator, generator

    def stack(self, v: Tensor) -> Tensor:
        """Every rank's ``v`` (the same shape on every rank), in rank order: ``[W, *v.shape]``."""
        return v[None]

    def any(self, flag: bool | Tensor) -> bool:
        """Whether ``flag`` holds on some rank."""
        return bool(flag)

    def sum(self, v: Tensor) -> Tensor:
        """``v: [B, n]`` summed over the particles of all ranks: ``[B]``."""
        return v.sum(-1)

    def mean(self, v: Tensor) -> Tensor:
        """``v: [B, n]`` averaged over the particles of all ranks: ``[B]``."""
        return v.mean(-1)

    def logsumexp(self, v: Tensor) -> Tensor:
        """``log sum exp`` of ``v: [B, n]`` over the particles of all ranks: ``[B]``."""
        return torch.logsumexp(v, dim=-1)

    def all_gather(self, v: Tensor, total: int, dim: int = 1) -> Tensor:
        """Every rank's block of ``v`` (``count_r`` entries along ``dim``) concatenated in rank
        order: ``total`` entries along ``dim``, the same tensor on every rank."""
        return v

    def resample(self, tensors: list[Tensor], rows: Tensor, ancestors: Tensor) -> list[Tensor]:
        """Replace problems ``rows`` of each per-particle tensor ``[B, n, ...]`` by the global
        particles ``ancestors: [R, N]`` (global indices) of this rank's slots."""
        raise NotImplementedError("the single-process engine gathers its particles itself")


class TorchCommunicator(Communicator):
    """Collectives over a ``torch.distributed`` process group (default: the world).

    The group must be initialised (``torch.distributed.init_process_group``; ``torchrun`` sets
    the environment it reads). Small tensors (weights, flags) travel on the backend's device
    (the current CUDA device for NCCL, the CPU otherwise); particles are moved there and back
    when they live elsewhere (a no-op when they already do).
    """

    def __init__(self, group: object | None = None) -> None:
        super().__init__()
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed sampling needs an initialised torch.distributed process group: call "
                "torch.distributed.init_process_group first (torchrun sets its environment)"
            )
        self._dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def __repr__(self) -> str:
        return f"TorchCommunicator(rank={self.rank}, world_size={self.world_size}, device={self.device})"

    def global_rank(self, rank: int) -> int:
        """The rank in the default group of this group's ``rank`` (for point-to-point messages)."""
        return rank if self.group is None else self._dist.get_global_rank(self.group, rank)

    # ----------------------------------------------------------------- primitives
    def stack(self, v: Tensor) -> Tensor:
        dtype = v.dtype
        src = (v.to(torch.uint8) if dtype == torch.bool else v).to(self.device).contiguous()
        parts = [torch.empty_like(src) for _ in range(self.world_size)]
        self._dist.all_gather(parts, src, group=self.group)
        return torch.stack(parts).to(device=v.device, dtype=dtype)

    def generators(self, generator: torch.Generator) -> tuple[torch.Generator, torch.Generator]:
        # One seed drawn from the caller's generator, rank 0's broadcast: the shared stream does
        # not depend on the other ranks' generators being in the same state (a seed of None).
        seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
        seed = self.stack(seed.to(self.device))[0]
        base = int(seed.item())
        shared = torch.Generator(device=generator.device)
        shared.manual_seed(base)
        local = torch.Generator(device=generator.device)
        local.manual_seed((base + (self.rank + 1) * _SEED_STRIDE) % 2**64)
        return shared, local

    # ----------------------------------------------------------------- reductions
    def any(self, flag: bool | Tensor) -> bool:
        return bool(self.stack(torch.tensor([bool(flag)], device=self.device)).any())

    def sum(self, v: Tensor) -> Tensor:
        return self.stack(v.sum(-1)).sum(0)

    def mean(self, v: Tensor) -> Tensor:
        count = torch.full((1,), v.shape[-1], dtype=v.dtype, device=v.device)
        parts = self.stack(torch.cat([v.sum(-1), count]))  # [W, B + 1]
        total = parts.sum(0)
        return total[:-1] / total[-1]

    def logsumexp(self, v: Tensor) -> Tensor:
        return torch.logsumexp(self.stack(torch.logsumexp(v, dim=-1)), dim=0)

    # ----------------------------------------------------------------- particles
    def all_gather(self, v: Tensor, total: int, dim: int = 1) -> Tensor:
        blocks = split(total, self.world_size)
        count = blocks[self.rank][1]
        if v.shape[dim] != count:
            raise ValueError(f"rank {self.rank} holds {v.shape[dim]} entries on dim {dim}, expected {count}")
        width = max(c for _, c in blocks)
        dtype = v.dtype
        src = (v.to(torch.uint8) if dtype == torch.bool else v).to(self.device)
        if count < width:  # all_gather needs equal shapes: pad, then cut every block to its size
            shape = list(src.shape)
            shape[dim] = width - count
            src = torch.cat([src, src.new_zeros(shape)], dim)
        src = src.contiguous()
        parts = [torch.empty_like(src) for _ in range(self.world_size)]
        self._dist.all_gather(parts, src, group=self.group)
        self.traffic.gathered_bytes += src.numel() * src.element_size()
        out = torch.cat([p.narrow(dim, 0, c) for p, (_, c) in zip(parts, blocks, strict=True)], dim)
        return out.to(device=v.device, dtype=dtype)

    def resample(self, tensors: list[Tensor], rows: Tensor, ancestors: Tensor) -> list[Tensor]:

        return exchange(self, tensors, rows, ancestors)
