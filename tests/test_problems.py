"""Named problems: the specs the command line accepts, built by the library."""

from __future__ import annotations

import pytest
import torch

import posterior as ps
from posterior.problems import SpecError, named_problem


def test_named_gmm_problems_are_the_benchmarks() -> None:
    one = named_problem("gmm:4:2", seed=3)
    ref = ps.problems.gmm_benchmark(4, 2, 3)
    assert torch.equal(one.y, ref.y) and not one.batched
    batch = named_problem("gmm-demo", num_problems=3, seed=0)
    assert batch.batched and batch.batch_size == 3 and batch.truth.shape == (3, 2)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gmm:4", "expected gmm:DIM:OBS"),
        ("mnist-paint", "unknown problem 'mnist-paint'"),
        ("nope", "known problems"),
    ],
)
def test_bad_names_are_spec_errors(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        named_problem(spec)
    with pytest.raises(SpecError, match="does not exist"):
        named_problem("mnist-inpaint", prior="./no/such/folder")
