"""Moving resampled particles between ranks: only those that must move, each once.

After a global resampling every rank knows the same ancestors ``a: [R, N]`` (global particle
indices, ``R`` resampled problems). Rank ``d``'s new particles are ``x[b, a[b, j]]`` for its slots
``j`` (its block of ``0..N-1``); the ancestor lives on the rank that holds its block. An
:class:`ExchangePlan` says what one rank sends and receives: to rank ``d`` it sends each of its
particles that some slot of ``d`` descends from, **once** (``d`` copies it into every slot that
needs it), in increasing order of global index; slots whose ancestor is local are plain copies.
Every rank computes every plan from the shared ancestors, so no sizes travel.

Traffic: the number of distinct (ancestor, destination rank) pairs with the ancestor elsewhere.
The schemes here return ancestors sorted within rows (offspring stay in their parent's order), so
slots mostly descend from particles of the same block and the traffic is a fraction of ``N``: the
offspring counts that spill over block boundaries. With ``N`` particles per problem of ``F``
floats each (the particle plus the model's per-particle cache), a rank receives at most
``count_r`` particles per problem, never the ``N - count_r`` of an all-gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from posterior.distributed.comm import TorchCommunicator

__all__ = ["ExchangePlan", "exchange", "exchange_volume", "plan_exchange", "split"]


def split(total: int, world_size: int) -> list[tuple[int, int]]:
    """``(start, count)`` of every rank for ``total`` items in contiguous, balanced blocks.

    The first ``total % world_size`` ranks get one item more: ``split(10, 4)`` is
    ``[(0, 3), (3, 3), (6, 2), (8, 2)]``.
    """
    base, extra = divmod(total, world_size)
    out, start = [], 0
    for r in range(world_size):
        count = base + (r < extra)
        out.append((start, count))
        start += count
    return out


@dataclass(frozen=True)
class ExchangePlan:
    """One rank's part of an exchange, for per-particle data laid out as ``[R * count, F]``
    (problem-major: row ``b * count + i`` is local particle ``i`` of resampled problem ``b``).

    Attributes:
        send: ``send[r]``: ``LongTensor`` of local rows to send to rank ``r`` (empty for itself).
        recv: ``recv[r]``: how many rows arrive from rank ``r``.
        source: ``LongTensor[R * count]``: the row of each new local particle in the pool
            ``cat(local rows, rows from rank 0, rows from rank 1, ...)``.
    """

    send: list[Tensor]
    recv: list[int]
    source: Tensor

    @property
    def num_sent(self) -> int:
        return sum(int(s.numel()) for s in self.send)

    @property
    def num_received(self) -> int:
        return sum(self.recv)


def _owner(a: Tensor, bounds: Tensor) -> Tensor:
    """Rank holding global particle ``a`` given the block starts ``bounds: [W]``."""
    return torch.searchsorted(bounds[1:], a.contiguous(), right=True)


def plan_exchange(ancestors: Tensor, world_size: int, rank: int) -> ExchangePlan:
    """The :class:`ExchangePlan` of ``rank`` for global ``ancestors: LongTensor[R, N]``, particles
    split over ``world_size`` ranks in the blocks of :func:`split`."""
    R, N = ancestors.shape
    blocks = split(N, world_size)
    bounds = torch.tensor([s for s, _ in blocks], device=ancestors.device)
    start, count = blocks[rank]
    problem = torch.arange(R, device=ancestors.device)[:, None]

    # receiving side: my slots, their ancestors and where they live
    mine = ancestors[:, start : start + count]  # [R, count]
    owner = _owner(mine, bounds)
    source = (problem * count + (mine - start)).reshape(-1)  # right where the ancestor is local
    remote = (owner != rank).reshape(-1)
    keys, inverse = torch.unique((problem * N + mine).reshape(-1)[remote], sorted=True, return_inverse=True)
    key_owner = _owner(keys % N, bounds)
    recv = torch.bincount(key_owner, minlength=world_size).tolist()
    # pool order: by source rank, increasing key within (the order in which each sender sends)
    order = torch.argsort(key_owner, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    source[remote] = R * count + position[inverse]

    # sending side: for every other rank, my particles its slots descend from (each once, sorted)
    send = []
    for dst, (d_start, d_count) in enumerate(blocks):
        if dst == rank:
            send.append(ancestors.new_zeros(0))
            continue
        theirs = ancestors[:, d_start : d_start + d_count]
        hit = (theirs >= start) & (theirs < start + count)
        keys = torch.unique((problem * N + theirs)[hit], sorted=True)
        send.append((keys // N) * count + (keys % N - start))
    return ExchangePlan(send, recv, source)


def exchange_volume(ancestors: Tensor, world_size: int) -> int:
    """Particles sent between ranks (summed over ranks) by the exchange after a resampling with
    global ``ancestors: [R, N]`` over ``world_size`` ranks; no process group needed."""
    return sum(plan_exchange(ancestors, world_size, r).num_received for r in range(world_size))


def _pack(tensors: list[Tensor], rows: int) -> dict[torch.dtype, tuple[Tensor, list[int]]]:
    """``{dtype: (buffer [rows, F], widths)}``: the tensors of each dtype flattened side by side."""
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t.reshape(rows, -1))
    return {dt: (torch.cat(ts, 1), [t.shape[1] for t in ts]) for dt, ts in groups.items()}


def exchange(comm: TorchCommunicator, tensors: list[Tensor], rows: Tensor, ancestors: Tensor) -> list[Tensor]:
    """Resample problems ``rows`` of each per-particle tensor ``[B, count, ...]`` (this rank's
    block) to the global ``ancestors: [R, N]`` by point-to-point messages; returns the tensors with
    those problems replaced (others untouched).

    Every dtype among ``tensors`` travels as one message per pair of ranks that must talk; the
    traffic is recorded in ``comm.traffic``.
    """
    dist = comm._dist
    R = int(rows.numel())
    B, count = tensors[0].shape[:2]
    plan = plan_exchange(ancestors, comm.world_size, comm.rank)
    every = R == B
    sub = [t if every else t.index_select(0, rows) for t in tensors]
    packed = _pack(sub, R * count)

    ops, received, sent_bytes = [], {}, 0
    for tag, (dt, (buf, _)) in enumerate(packed.items()):
        wire = buf.to(comm.device)
        received[dt] = []
        for r in range(comm.world_size):
            if plan.send[r].numel():
                msg = wire.index_select(0, plan.send[r].to(comm.device)).contiguous()
                sent_bytes += msg.numel() * msg.element_size()
                ops.append(dist.P2POp(dist.isend, msg, comm.global_rank(r), comm.group, tag))
            if plan.recv[r]:
                into = torch.empty(plan.recv[r], buf.shape[1], dtype=dt, device=comm.device)
                received[dt].append(into)
                ops.append(dist.P2POp(dist.irecv, into, comm.global_rank(r), comm.group, tag))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    comm.traffic.exchanges.append((plan.num_sent, sent_bytes))

    out: list[Tensor] = []
    by_dtype = {}
    for dt, (buf, widths) in packed.items():
        pool = torch.cat([buf, *(r.to(buf.device) for r in received[dt])], 0)
        by_dtype[dt] = iter(pool.index_select(0, plan.source.to(buf.device)).split(widths, 1))
    for t, s in zip(tensors, sub, strict=True):
        new = next(by_dtype[t.dtype]).reshape(s.shape)
        out.append(new if every else t.index_copy(0, rows, new))
    return out
