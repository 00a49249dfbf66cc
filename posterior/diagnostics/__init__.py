"""Diagnostics: ArviZ conversion, calibration, distances, plots and reports.

    >>> from posterior.diagnostics import run_chains, simulation_based_calibration, compare
    >>> import arviz as az
    >>> az.summary(run_chains(problem, "tds", num_chains=4))          # R-hat across independent runs
    >>> cal = simulation_based_calibration(prior, operator, 0.1, "tds")  # SBC ranks + coverage
    >>> compare({"demo": problem}, ["tds", "dps"], out="out/report")   # report.md, report.json, PNGs
    >>> chain_gap(problem, result, floor=True).summary()  # K vs 2K steps: is K enough?

``posterior.diagnostics.plots`` (matplotlib) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from posterior.diagnostics.arviz import arviz_major_version, run_chains, to_arviz
from posterior.diagnostics.calibration import (
    LEVELS,
    Calibration,
    Coverage,
    SBCTest,
    coverage,
    credible_interval,
    sbc_ranks,
    sbc_test,
    simulation_based_calibration,
)
from posterior.diagnostics.chain_gap import ChainGap, chain_gap
from posterior.diagnostics.distances import sliced_wasserstein, wasserstein_1d
from posterior.diagnostics.report import Report, compare, evaluate

__all__ = [
    "LEVELS",
    "Calibration",
    "ChainGap",
    "Coverage",
    "Report",
    "SBCTest",
    "arviz_major_version",
    "chain_gap",
    "compare",
    "coverage",
    "credible_interval",
    "evaluate",
    "plots",
    "run_chains",
    "sbc_ranks",
    "sbc_test",
    "simulation_based_calibration",
    "sliced_wasserstein",
    "to_arviz",
    "wasserstein_1d",
]


def __getattr__(name: str) -> Any:
    if name == "plots":
        return importlib.import_module("posterior.diagnostics.plots")
    raise AttributeError(f"module 'posterior.diagnostics' has no attribute {name!r}")
