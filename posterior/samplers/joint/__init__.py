"""Joint samplers of unknown parameters and ``x``: particle marginal Metropolis-Hastings."""

from posterior.samplers.joint.pmmh import PMMH

__all__ = ["PMMH"]
