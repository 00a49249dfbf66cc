"""Approximate guidance baselines."""

from posterior.samplers.approximate import (  # noqa: F401
    csgm,
    diffpir,
    mmps,
    pnp_admm,
    reddiff,
)
