"""MCMC kernels with a diffusion prior: ULA, MALA, split Gibbs (PnP-DM); SMC moves; pyro adapter.

Kernels act on particles ``x: [B, N, *event_shape]`` (``B`` problems, ``N`` chains) and leave a
target invariant (MALA, split Gibbs) or approximately so (ULA). One protocol
(:mod:`posterior.kernels.chains`): ``state = kernel.init(x, warmup_steps)``,
``state, info = kernel.step(generator, state)``, NamedTuple states carrying any adaptation;
:func:`run_mcmc` is the one chain driver.
"""

from posterior.kernels.adaptive import AdaptiveMALA, AdaptiveMALAState, DualAveraging, DualAveragingState
from posterior.kernels.chains import ChainKernel, ChainOutput, KernelInfo, run_mcmc
from posterior.kernels.gibbs import GibbsState, SplitGibbs, rho_grid
from posterior.kernels.init import initial_chains
from posterior.kernels.langevin import (
    MALA,
    ULA,
    FunctionTarget,
    LangevinState,
    PosteriorTarget,
    Target,
    TargetValue,
)
from posterior.kernels.moves import MALAMove, MoveState, mala_move, rejuvenate

__all__ = [
    "MALA",
    "ULA",
    "AdaptiveMALA",
    "AdaptiveMALAState",
    "ChainKernel",
    "ChainOutput",
    "DualAveraging",
    "DualAveragingState",
    "FunctionTarget",
    "GibbsState",
    "KernelInfo",
    "LangevinState",
    "MALAMove",
    "MoveState",
    "PosteriorTarget",
    "SplitGibbs",
    "Target",
    "TargetValue",
    "initial_chains",
    "mala_move",
    "rejuvenate",
    "rho_grid",
    "run_mcmc",
]
