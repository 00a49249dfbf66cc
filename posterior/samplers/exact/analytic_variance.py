"""The optimal variance of a Gaussian reverse step (Analytic-DPM).

Bao, Li, Zhu & Zhang, "Analytic-DPM: an analytic estimate of the optimal reverse variance in
diffusion probabilistic models", ICLR 2022, Theorem 1 (its DDIM-family form, any ``s < t``). The
DDIM(eta) step ``t -> s`` has mean ``sqrt(abar_s) x0_hat + sqrt(1 - abar_s - lam^2) eps_hat`` with
``lam^2`` the DDIM(eta) variance; as ``eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)``
the mean is ``c x0_hat + (terms in x_t)`` with

    c = sqrt(abar_s) - sqrt(1 - abar_s - lam^2) sqrt(abar_t / (1 - abar_t)),

and the true reverse law of ``x_s`` given ``x_t`` (the forward bridge ``q_lam(x_s | x_t, x_0)``
averaged over ``x_0 | x_t``) has covariance ``lam^2 I + c^2 Cov[x_0 | x_t]``. The isotropic
Gaussian step closest to it in KL keeps the mean and takes the variance

    sigma*^2 = lam^2 + c^2 v_t,    v_t = E |x_0 - x0_hat(x_t)|^2 / d,

the denoiser's mean squared error per coordinate at ``t`` (for the exact denoiser: the average
posterior variance of ``x_0`` given ``x_t``), clipped to ``[0, (1 - abar_t) / abar_t]`` (Bao et
al.'s bounds on it). ``v_t`` is estimated once per prior and time from the prior's own
forward-noised draws (``prior.denoiser_reference``, cached by the prior). ``eta = 1`` gives
Analytic-DDPM, small ``eta`` Analytic-DDIM. The last step (to ``CLEAN``) stays the deterministic
denoiser, as in every chain of the library.

The samplers stay exact for the chain they simulate: the step is still a Gaussian whose density
they use in their weights; only the chain (and so the posterior they converge to) changes.
"""

from __future__ import annotations

from posterior.schedule import CLEAN

__all__ = ["KERNEL_VARS", "analytic_variance", "denoiser_mse", "kernel_variances"]

#: The reverse kernel's variance: ``"ddim"`` (DDIM(eta): eta = 1 is DDPM) or ``"analytic"``
#: (Analytic-DPM's optimal variance around the DDIM(eta) mean).
KERNEL_VARS = ("ddim", "analytic")


def check_kernel_var(kernel_var: str) -> str:
    """``kernel_var`` if it is one of :data:`KERNEL_VARS`, else a one-line ``ValueError``."""
    if kernel_var not in KERNEL_VARS:
        raise ValueError(
            f"kernel_var must be one of {KERNEL_VARS} (the reverse kernel's variance), got {kernel_var!r}"
        )
    return kernel_var


def denoiser_mse(prior, t: int) -> float:
    """``v_t``: the prior's denoiser's mean squared error per coordinate at ``t``, on the prior's
    own forward-noised draws (``prior.denoiser_reference(t)``: ``x_0, x0_hat: [n, *event]``)."""
    x0, x0_hat = prior.denoiser_reference(t)
    return float((x0_hat - x0).double().pow(2).mean())


def ddim_variance(abar_t: float, abar_s: float, eta: float) -> float:
    """``lam^2``: the DDIM(eta) variance of the step ``t -> s`` (as ``ddim_step`` clips it)."""
    var = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    return min(max(var, 0.0), 1 - abar_s)


def analytic_variance(abar_t: float, abar_s: float, eta: float, mse: float) -> float:
    """``sigma*^2 = lam^2 + c^2 v_t`` (module docstring) for the step ``t -> s`` with ``abar_t <
    abar_s < 1``, the DDIM(``eta``) variance ``lam^2`` and the denoiser's error ``mse = v_t``."""
    lam2 = ddim_variance(abar_t, abar_s, eta)
    c = abar_s**0.5 - max(1 - abar_s - lam2, 0.0) ** 0.5 * (abar_t / (1 - abar_t)) ** 0.5
    v = min(max(mse, 0.0), (1 - abar_t) / abar_t)
    return lam2 + c * c * v


def kernel_variances(
    prior, pairs: list[tuple[int, int]], eta: float, kernel_var: str
) -> dict[tuple[int, int], float]:
    """The reverse kernel's variance of every step ``(t, s)`` of ``pairs``: DDIM(``eta``)'s with
    ``kernel_var="ddim"``, Analytic-DPM's (:func:`analytic_variance`) with ``"analytic"``; ``0``
    for the last step to ``CLEAN``. One denoiser call on the prior's reference draws per time,
    the first time only (cached by the prior)."""
    schedule, out = prior.schedule, {}
    for t, s in pairs:
        if s == CLEAN:
            out[(t, s)] = 0.0
            continue
        abar_t, abar_s = schedule.alpha_bar(t).item(), schedule.alpha_bar(s).item()
        if check_kernel_var(kernel_var) == "ddim":
            out[(t, s)] = ddim_variance(abar_t, abar_s, eta)
        else:
            out[(t, s)] = analytic_variance(abar_t, abar_s, eta, denoiser_mse(prior, t))
    return out
