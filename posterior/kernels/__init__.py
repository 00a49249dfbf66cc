"""MCMC kernels with a diffusion prior: ULA, MALA, split Gibbs (PnP-DM); SMC moves; pyro adapter.

Kernels act on particles ``x: [B, N, *event_shape]`` (``B`` problems, ``N`` chains) and leave a
target invariant (MALA, split Gibbs) or approximately so (ULA).
"""

from posterior.kernels.gibbs import GibbsState, SplitGibbs, rho_grid
from posterior.kernels.init import initial_chains
from posterior.kernels.langevin import (
    MALA,
    ULA,
    AdaptiveMALA,
    DualAveraging,
    FunctionTarget,
    KernelInfo,
    LangevinState,
    PosteriorTarget,
    Target,
    TargetValue,
)
from posterior.kernels.moves import MALAMove, mala_move, rejuvenate

__all__ = [
    "MALA",
    "ULA",
    "AdaptiveMALA",
    "DualAveraging",
    "FunctionTarget",
    "GibbsState",
    "KernelInfo",
    "LangevinState",
    "MALAMove",
    "PosteriorTarget",
    "SplitGibbs",
    "Target",
    "TargetValue",
    "initial_chains",
    "mala_move",
    "rejuvenate",
    "rho_grid",
]
