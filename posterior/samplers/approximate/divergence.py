"""The warning of an approximate sampler whose iterates ran away.

A guided reverse step is an explicit update: where the guidance is large against the step (a
coarse time grid, a sharp prior, many observed values) it can overshoot, and the chain's values
grow by orders of magnitude while staying finite. PiGDM on 3x64x64 images of the image mixture
(``gmm_image``, sr2) at 25 DDPM steps returns draws of size 1e5 where the truths stay below 2.1
(at 100 steps, or with eta = 0, it stays in range). Such draws are not NaN, so no
``FloatingPointError`` catches them.

The bound: a chain started at time ``t`` from ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``
(VP-equivalent) can only be noise at ``t`` if the data's scale is below about
``rms(x_t) / sqrt(abar_t)`` (157 at the top of the DDPM linear schedule, for a unit-scale start).
:func:`warn_if_diverged` warns when a draw's root-mean-square value exceeds
:data:`DIVERGED_FACTOR` times that.
"""

from __future__ import annotations

import math
import warnings

from torch import Tensor

from posterior.particles.degeneracy import caller_outside_package

__all__ = ["DIVERGED_FACTOR", "DivergenceWarning", "divergence_limit", "warn_if_diverged"]

#: Margin over the largest data scale the start allows (module docstring).
DIVERGED_FACTOR = 2.0


class DivergenceWarning(UserWarning):
    """An approximate sampler's draws grew beyond any scale its prior can produce: the guided
    steps overshot, and the draws are not samples of anything (more steps, a smaller guidance
    scale or eta = 0 are the remedies)."""


def divergence_limit(start: Tensor, abar_start: float) -> float:
    """The root-mean-square value above which a draw has run away: :data:`DIVERGED_FACTOR`
    ``* max(1, rms(start)) / sqrt(abar_start)`` for the chain's first iterate ``start`` at a time
    whose VP-equivalent ``abar`` is ``abar_start``."""
    scale = max(1.0, float(start.detach().double().pow(2).mean().sqrt()))
    return DIVERGED_FACTOR * scale / math.sqrt(max(abar_start, 1e-300))


def warn_if_diverged(method: str, final: Tensor, limit: float) -> bool:
    """Warn (:class:`DivergenceWarning`) if some draw of ``final: [B, N, *event]`` has a
    root-mean-square value above ``limit`` (:func:`divergence_limit`). Returns whether it warned."""
    rms = final.detach().double().flatten(2).pow(2).mean(-1).sqrt()  # [B, N]
    bad = rms > limit
    if not bad.any():
        return False
    warnings.warn(
        f"{method}: {int(bad.sum())} draw(s) in {int(bad.any(1).sum())} of {bad.shape[0]} problem(s) "
        f"ran away (root-mean-square value up to {float(rms.max()):.3g}, beyond {limit:.3g}, more than "
        "the prior's schedule allows its data): the guided steps overshot and these draws are not "
        "samples of the posterior; use more steps, eta=0 or a smaller guidance scale",
        DivergenceWarning,
        stacklevel=caller_outside_package(),
    )
    return True
