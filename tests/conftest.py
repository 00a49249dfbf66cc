"""Shared test settings: one torch thread (CI has two cores), deterministic defaults."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
