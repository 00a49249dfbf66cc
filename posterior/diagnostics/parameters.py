"""The posterior of unknown parameters (``result.parameters``): a table and a figure.

For joint samplers (``"pmmh"``, ``"pgibbs"``) whose ``stats["chain.<name>"]: [B, C, D]`` keep the
chains, the table also gives the Gelman-Rubin R-hat over the chains (Gelman & Rubin 1992; the
ArviZ variables of :func:`posterior.diagnostics.to_arviz` give the rank-normalised one).
"""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["parameter_lines", "plot_parameters", "rhat"]


def rhat(chains: Tensor) -> float:
    """The Gelman-Rubin potential scale reduction of ``chains: [C, D]`` (``nan`` below 2 chains
    or 2 draws each)."""
    C, D = chains.shape
    if C < 2 or D < 2:
        return float("nan")
    x = chains.double()
    within = x.var(1).mean()
    between = D * x.mean(1).var()
    var = (D - 1) / D * within + between / D
    return float((var / within).sqrt()) if within > 0 else float("nan")


def _one_problem(result: Any) -> Any:
    return result if not result.batched else result.unbatched() if result.samples.shape[0] == 1 else None


def parameter_lines(result: Any, truth: dict[str, float] | None = None) -> list[str]:
    """Markdown lines: per unknown, the posterior mean, standard deviation, 90% interval, the
    truth when known, and R-hat over the chains; the acceptance of the parameter moves. Empty
    where the result has no parameters (or holds several problems)."""
    one = _one_problem(result)
    if one is None or not one.parameters:
        return []
    lines = [
        "## Unknown parameters",
        "",
        "| parameter | mean | std | 90% interval | truth | R-hat |",
        "|---|---|---|---|---|---|",
    ]
    for name, draws in one.parameters.items():
        d = draws.double()
        lo, hi = torch.quantile(d, torch.tensor([0.05, 0.95], dtype=d.dtype)).tolist()
        chains = one.stats.get(f"chain.{name}")
        r = rhat(chains) if chains is not None else float("nan")
        known = "" if truth is None or name not in truth else f"{truth[name]:.4g}"
        lines.append(
            f"| {name} | {d.mean():.4g} | {d.std():.4g} | [{lo:.4g}, {hi:.4g}] | {known} | {r:.3g} |"
        )
    acc = one.stats.get("theta_acceptance", one.acceptance)
    if acc is not None:
        burn = int(one.options.get("burn_in", 0))
        rate = float(acc.double()[burn:].nanmean()) if acc.numel() > burn else float(acc.double().nanmean())
        lines += ["", f"Acceptance of the parameter moves after the burn-in: {rate:.3f}."]
    return [*lines, ""]


def plot_parameters(result: Any, truth: dict[str, float] | None = None) -> Figure:
    """Histograms of each unknown's draws (one problem), the truth as a vertical line when known."""
    one = _one_problem(result)
    if one is None or not one.parameters:
        raise ValueError("plot_parameters needs the result of a joint sampler on one problem")
    names = list(one.parameters)
    fig = Figure(figsize=(3.2 * len(names), 2.6))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        ax.hist(one.parameters[name].double().cpu().numpy(), bins=30, color="tab:blue", alpha=0.8)
        if truth is not None and name in truth:
            ax.axvline(truth[name], color="black", linestyle="--", label="truth")
            ax.legend(fontsize=7)
        ax.set_title(f"{result.method}: {name}", fontsize=9)
    fig.tight_layout()
    return fig
