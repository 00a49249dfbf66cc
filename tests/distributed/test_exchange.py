"""Exchange plans checked in one process: every rank's plan simulated, messages passed by hand."""

from __future__ import annotations

import pytest
import torch

from posterior.distributed import exchange_volume, plan_exchange, split
from posterior.particles.resampling import RESAMPLERS


def simulate(x: torch.Tensor, ancestors: torch.Tensor, world_size: int) -> torch.Tensor:
    """Run every rank's plan on ``x: [R, N, F]`` with messages passed in memory; the new
    particles of all ranks joined in rank order, ``[R, N, F]``."""
    R, N, F = x.shape
    blocks = split(N, world_size)
    plans = [plan_exchange(ancestors, world_size, r) for r in range(world_size)]
    local = [x[:, s : s + c].reshape(R * c, F) for s, c in blocks]
    out = []
    for d, (_, count) in enumerate(blocks):
        # what rank s sends to d is what d expects from s, in the same order
        for s in range(world_size):
            assert plans[d].recv[s] == plans[s].send[d].numel()
        received = [local[s][plans[s].send[d]] for s in range(world_size) if s != d]
        pool = torch.cat([local[d], *received])
        out.append(pool[plans[d].source].reshape(R, count, F))
    return torch.cat(out, 1)


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("N", [4, 7, 64])
@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_plans_reproduce_the_global_resampling(world_size: int, N: int, scheme: str) -> None:
    gen = torch.Generator().manual_seed(N * world_size)
    x = torch.randn(3, N, 5, generator=gen)
    ancestors = RESAMPLERS[scheme](3 * torch.randn(3, N, generator=gen), gen)
    want = torch.gather(x, 1, ancestors[..., None].expand(-1, -1, 5))
    assert torch.equal(simulate(x, ancestors, world_size), want)


def test_unsorted_ancestors_work_too() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 1, generator=gen)
    ancestors = torch.randint(0, 9, (2, 9), generator=gen)
    assert torch.equal(simulate(x, ancestors, 3), torch.gather(x, 1, ancestors[..., None]))


def test_only_particles_that_change_rank_travel_and_each_once() -> None:
    N = 10  # ranks hold 0..4 and 5..9
    identity = torch.arange(N)[None]
    assert exchange_volume(identity, 2) == 0  # equal weights, systematic: nobody moves
    # every slot of rank 1 descends from particle 0: rank 0 sends it once, rank 1 copies it 5 times
    ancestors = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    plan0 = plan_exchange(ancestors, 2, 0)
    assert [s.tolist() for s in plan0.send] == [[], [0]]
    assert plan_exchange(ancestors, 2, 1).recv == [1, 0]
    assert exchange_volume(ancestors, 2) == 1
    # offspring spilling over the block boundary: particle 4 has 3 offspring (slots 3, 4, 5)
    ancestors = torch.tensor([[0, 1, 2, 4, 4, 4, 6, 7, 8, 9]])
    assert exchange_volume(ancestors, 2) == 1
    # problems are independent: the same particle index in two problems is two particles
    assert exchange_volume(torch.zeros(2, N, dtype=torch.long), 2) == 2


def test_volume_is_a_fraction_of_an_all_gather_for_sorted_schemes() -> None:
    # skewed weights (log-weights with standard deviation 1): the ancestors of a block mostly lie in
    # the block, so far fewer than the (W - 1) N particles of an all-gather move
    gen = torch.Generator().manual_seed(0)
    N, W = 4096, 4
    ancestors = RESAMPLERS["systematic"](torch.randn(1, N, generator=gen), gen)
    moved = exchange_volume(ancestors, W)
    assert 0 < moved < 0.05 * (W - 1) * N, moved
