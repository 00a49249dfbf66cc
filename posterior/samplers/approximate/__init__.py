"""Approximate guidance baselines."""

from posterior.samplers.approximate import (  # noqa: F401
    csgm,
    ddrm,
    diffpir,
    dps,
    mmps,
    pigdm,
    pnp_admm,
    reddiff,
    score_ald,
    sdedit,
)
