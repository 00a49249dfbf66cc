"""The single-process communicator, the block split, and distributed options without a group."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.distributed import LOCAL, TorchCommunicator, current_communicator, split, use_communicator
from posterior.distributed.context import particle_mean, particle_sum
from posterior.samplers.distributed import resolve_mode


def test_split_gives_contiguous_balanced_blocks() -> None:
    assert split(10, 4) == [(0, 3), (3, 3), (6, 2), (8, 2)]
    assert split(2000, 2) == [(0, 1000), (1000, 1000)]
    for total, world in [(7, 2), (5, 5), (101, 8)]:
        blocks = split(total, world)
        assert sum(c for _, c in blocks) == total
        assert all(s + c == blocks[i + 1][0] for i, (s, c) in enumerate(blocks[:-1]))
        assert max(c for _, c in blocks) - min(c for _, c in blocks) <= 1


def test_local_communicator_is_the_plain_local_operation() -> None:
    v = torch.randn(3, 5)
    gen = torch.Generator()
    assert LOCAL.generators(gen) == (gen, gen)
    assert LOCAL.split(5) == (0, 5) and not LOCAL.distributed
    assert LOCAL.all_gather(v, 5) is v
    assert torch.equal(LOCAL.logsumexp(v), torch.logsumexp(v, -1))
    assert torch.equal(LOCAL.mean(v), v.mean(1)) and torch.equal(LOCAL.sum(v), v.sum(1))
    assert LOCAL.any(torch.tensor(True)) and not LOCAL.any(False)


def test_active_communicator_is_scoped() -> None:
    v = torch.randn(2, 4)
    assert current_communicator() is LOCAL
    other = type(LOCAL)()
    with use_communicator(other):
        assert current_communicator() is other
        assert torch.equal(particle_mean(v), v.mean(1)) and torch.equal(particle_sum(v), v.sum(1))
    assert current_communicator() is LOCAL


def test_modes() -> None:
    assert resolve_mode(True, 4, 2) == "problems"  # the ranks divide B: no communication
    assert resolve_mode("auto", 3, 2) == "particles"
    assert resolve_mode(True, 1, 2) == "particles"
    assert resolve_mode("problems", 3, 2) == "problems"
    with pytest.raises(ValueError, match="distributed must be"):
        resolve_mode("chains", 1, 2)


def test_distributed_without_a_process_group_is_a_clear_error() -> None:
    problem = ps.problems.gmm_benchmark(dim=2, obs_dim=1, seed=0)
    with pytest.raises(ValueError, match="init_process_group"):
        ps.sample(problem, "tds", 8, 2, distributed=True)
    with pytest.raises(ValueError, match="init_process_group"):
        TorchCommunicator()
    with pytest.raises(ValueError, match="distributed must be"):
        ps.sample(problem, "tds", 8, 2, distributed="yes")
