"""A batched Adam for the optimisation-based baselines (RED-diff, CSGM).

Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015. The update is elementwise,
so one optimiser over a particle tensor ``[B, N, *shape]`` runs ``B * N`` independent
optimisations. (Written out rather than ``torch.optim.Adam``, whose first construction imports
``torch._dynamo``, several seconds.)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Adam"]


class Adam:
    """Adam on one tensor: ``step(param, grad) -> new param`` (no autograd involved).

    Args:
        lr: learning rate.
        betas: decay rates of the first and second moment estimates.
        eps: added to the root of the second moment.
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.k = 0

    def step(self, param: Tensor, grad: Tensor) -> Tensor:
        """One bias-corrected Adam step from ``param`` along ``grad`` (same shape); returns the new value."""
        b1, b2 = self.betas
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)
        self.k += 1
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad.pow(2)
        m_hat = self.m / (1 - b1**self.k)
        v_hat = self.v / (1 - b2**self.k)
        return param - self.lr * m_hat / (v_hat.sqrt() + self.eps)
