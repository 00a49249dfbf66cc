"""Oracle checks shared by the kernel and MCMC-sampler tests.

``near_exact`` compares sliced W1 of the draws to fresh exact posterior draws with the
distribution of the same statistic for *exact* draws (the exact-vs-exact floor), computed with
``n_eff`` draws: the test passes when the draws' distance lies below the ``q``-quantile of that
floor distribution, a tolerance set by the Monte Carlo error of the statistic itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from posterior.diagnostics.distances import sliced_wasserstein
from posterior.distributions import GaussianMixture


def floor_quantile(post: GaussianMixture, n_eff: int, ref: Tensor, q: float, reps: int, seed: int) -> float:
    """``q``-quantile of ``SW(exact_{n_eff}, ref)`` over ``reps`` exact replicates."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.stack([post.sample(n_eff, gen) for _ in range(reps)])  # [reps, n, d]
    dist = sliced_wasserstein(draws, ref.expand(reps, *ref.shape))
    return float(torch.quantile(dist.double(), q))


def near_exact(
    samples: Tensor,
    post: GaussianMixture,
    n_eff: int | None = None,
    q: float = 0.95,
    reps: int = 40,
    seed: int = 123,
) -> tuple[float, float]:
    """``(SW(samples, ref), q-quantile of the floor)`` with ``ref`` 4000 fresh exact draws."""
    gen = torch.Generator().manual_seed(seed + 1)
    ref = post.sample(4000, gen)
    d = float(sliced_wasserstein(samples, ref))
    return d, floor_quantile(post, n_eff or samples.shape[0], ref, q, reps, seed)


def rhat(chains: Tensor) -> float:
    """Largest rank-normalised split R-hat (arviz) over coordinates of ``chains: [C, S, d]``."""
    import arviz as az

    x = chains.double().numpy()
    return max(float(az.rhat(np.ascontiguousarray(x[..., j]))) for j in range(x.shape[-1]))
