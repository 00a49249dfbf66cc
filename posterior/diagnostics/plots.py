"""Figures: rank histograms, coverage curves, 2-D samples against the exact posterior, image
posteriors, ESS and weight traces.

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot`` (no global state,
no display needed: saving goes through the Agg canvas), and :func:`save_figure` writes a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from posterior.diagnostics.calibration import Coverage, SBCTest
from posterior.distributions import GaussianMixture
from posterior.samplers.result import Result

if TYPE_CHECKING:
    from posterior.problem import InverseProblem

__all__ = [
    "method_color",
    "plot_coverage",
    "plot_images",
    "plot_pixel_std",
    "plot_rank_histograms",
    "plot_sample_grid",
    "plot_samples_2d",
    "plot_traces",
    "save_figure",
]

_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_EXACT = "#444444"
_CONTOUR_NATS = np.array([9.0, 6.0, 4.0, 2.0, 0.5])


def method_color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


# --------------------------------------------------------------------------- calibration
def plot_rank_histograms(tests: Mapping[str, SBCTest], band: float = 0.99) -> Figure:
    """One panel per method: SBC rank histogram (mean count per bin over coordinates, bars; the
    worst coordinate, line) against the ``band`` binomial range of one coordinate's bin count
    under uniform ranks (grey)."""
    from scipy import stats

    rows, cols = _grid(len(tests), 3)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, (ax, (name, test)) in enumerate(zip(axes, tests.items(), strict=False)):
        counts = test.counts.reshape(test.num_bins, -1).numpy()
        B = test.ranks.shape[0]
        p = test.expected.numpy() / B
        lo, hi = stats.binom.ppf((1 - band) / 2, B, p), stats.binom.ppf((1 + band) / 2, B, p)
        k = np.arange(test.num_bins)
        ax.fill_between(
            np.r_[k - 0.5, k[-1] + 0.5],
            np.r_[lo, lo[-1]],
            np.r_[hi, hi[-1]],
            step="post",
            color="0.85",
            label=f"{band:.0%} band (uniform)",
        )
        ax.bar(k, counts.mean(1), width=0.9, color=method_color(i), alpha=0.8, label="mean over coords")
        worst = int(test.statistic.reshape(-1).argmax())
        ax.step(
            np.r_[k - 0.5, k[-1] + 0.5],
            np.r_[counts[:, worst], counts[-1, worst]],
            where="post",
            color="k",
            lw=1,
            label="worst coord",
        )
        verdict = "rejected" if test.rejected(0.01) else "not rejected"
        ax.set_title(f"{name}: p = {test.p_value:.2g} ({verdict} at 1%)", fontsize=10)
        ax.set_xlabel(f"rank bin ({test.num_draws + 1} ranks, B = {B})")
        ax.set_ylabel("problems")
        if i == 0:
            ax.legend(fontsize=7, loc="upper center")
    for ax in axes[len(tests) :]:
        ax.set_visible(False)
    fig.suptitle("Simulation-based calibration: ranks of the truth among posterior draws")
    return fig


def plot_coverage(coverages: Mapping[str, Coverage]) -> Figure:
    """Empirical against nominal coverage of central credible intervals, one curve per method;
    the grey band is +-2 binomial standard errors of one coordinate around the diagonal."""
    fig = Figure(figsize=(4.8, 4.4), layout="constrained")
    ax = fig.subplots()
    first = next(iter(coverages.values()))
    lv = first.levels.numpy()
    se = first.stderr().numpy()
    ax.fill_between(lv, lv - 2 * se, lv + 2 * se, color="0.85", label="+-2 s.e.")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--")
    for i, (name, cov) in enumerate(coverages.items()):
        ax.plot(cov.levels.numpy(), cov.overall.numpy(), "o-", ms=3, color=method_color(i), label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal level of the central interval")
    ax.set_ylabel("share of truths inside")
    ax.set_title(f"Coverage over {first.num_problems} problems")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------- samples
def _observation_set(
    ax, problem: InverseProblem, index: int, lims: tuple[float, float, float, float]
) -> None:
    """Draw ``{x : A x = y}`` (+-2 noise std, or the noise model's typical scale) for a linear 2-D
    problem with one measurement."""
    from posterior.operators.base import LinearOperator

    if not isinstance(problem.operator, LinearOperator) or problem.obs_dim != 1:
        return
    a = problem.operator.matrix(dtype=torch.float64).reshape(-1).numpy()
    y = float(problem.y_batch[index].reshape(-1)[0])
    s = float(problem.noise_scale()[index])  # sigma for Gaussian noise
    norm = float(np.linalg.norm(a))
    if norm == 0:
        return
    # points x = (y / |a|^2) a + u a_perp for u along the window
    xs = np.linspace(lims[0], lims[1], 200)
    if abs(a[1]) > 1e-9:
        for off, style in ((0.0, "-"), (-2 * s, ":"), (2 * s, ":")):
            ax.plot(xs, (y + off - a[0] * xs) / a[1], style, color="k", lw=1 if off == 0 else 0.8)
    else:
        for off, style in ((0.0, "-"), (-2 * s, ":"), (2 * s, ":")):
            ax.axvline((y + off) / a[0], ls=style, color="k", lw=1)


def _select(dist: GaussianMixture, index: int) -> GaussianMixture:
    """Problem ``index`` of a batched mixture (``batch_shape [B]``); unbatched ones pass through."""
    if not dist.batch_shape:
        return dist
    covs = dist.covs
    if covs.dim() < dist.means.dim() + (0 if dist.diagonal else 1):  # covariances shared by the batch
        covs = covs.expand(*dist.batch_shape, *covs.shape)
    return GaussianMixture(
        dist.weights[index], dist.means[index], covs[index], diagonal=dist.diagonal, validate=False
    )


def _density_grid(
    dist: GaussianMixture, lims: tuple[float, float, float, float], index: int, n: int = 120
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = _select(dist, index)
    gx = torch.linspace(lims[0], lims[1], n, dtype=torch.float64)
    gy = torch.linspace(lims[2], lims[3], n, dtype=torch.float64)
    X, Y = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], -1).to(dist.means.dtype)
    lp = dist.log_prob(pts)  # [n*n]
    return X.numpy(), Y.numpy(), lp.double().reshape(n, n).numpy()


def plot_samples_2d(
    problem: InverseProblem,
    samples: Mapping[str, Tensor],
    index: int = 0,
    prior_samples: Tensor | None = None,
    max_points: int = 1000,
) -> Figure:
    """2-D posteriors: a panel of prior draws and the observation, then one panel per method with
    its draws over the exact posterior's density contours (where known).

    Args:
        problem: a problem on ``x: [2]`` (for ``d > 2`` the first two coordinates are shown, without
            contours).
        samples: ``{method: Tensor[N, d]}`` draws for problem ``index``.
        index: which problem of a batch.
        prior_samples: ``Tensor[n, d]`` prior draws for the first panel (default: drawn here).
    """
    d = problem.event_shape[0] if len(problem.event_shape) == 1 else 0
    if d < 2:
        raise ValueError(
            f"plot_samples_2d needs vector samples with d >= 2, got event shape {problem.event_shape}"
        )
    try:
        exact = problem.exact_posterior()
    except ValueError:
        exact = None
    if prior_samples is None:
        prior_samples = problem.prior.sample(2000, torch.Generator(problem.prior.device).manual_seed(0))
    prior_np = prior_samples[:, :2].double().cpu().numpy()
    pts = [prior_np] + [s[:max_points, :2].double().cpu().numpy() for s in samples.values()]
    allp = np.concatenate(pts)
    lo, hi = np.percentile(allp, [0.5, 99.5], axis=0)
    pad = 0.1 * (hi - lo) + 1.0
    lims = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    grid = _density_grid(exact, lims, index) if (exact is not None and d == 2) else None

    panels = 1 + (exact is not None) + len(samples)
    rows, cols = _grid(panels, 4)
    fig = Figure(figsize=(3.6 * cols, 3.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    ax = axes[0]
    ax.scatter(prior_np[:, 0], prior_np[:, 1], s=2, color="0.5", alpha=0.5)
    _observation_set(ax, problem, index, lims)
    if problem.truth is not None:
        truth = problem.truth.reshape(-1, d)[index if problem.batched else 0].cpu()
        ax.plot(truth[0], truth[1], "*", color="gold", mec="k", ms=12, label="truth")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title("prior draws and observation y = Ax + noise", fontsize=9)
    k = 1
    if exact is not None:
        ex = exact.sample(max_points, torch.Generator(problem.prior.device).manual_seed(1))
        ex = (ex[index] if ex.dim() == 3 else ex)[:, :2].double().cpu().numpy()
        ax = axes[k]
        if grid is not None:
            X, Y, lp = grid
            ax.contourf(X, Y, np.maximum(lp, lp.max() - 12), levels=12, cmap="Greys")
        ax.scatter(ex[:, 0], ex[:, 1], s=2, color=_EXACT, alpha=0.6)
        ax.set_title("exact posterior", fontsize=9)
        k += 1
    for i, (name, s) in enumerate(samples.items()):
        ax = axes[k + i]
        if grid is not None:  # log-density contours 0.5 .. 9 nats below the top mode
            X, Y, lp = grid
            ax.contour(X, Y, lp, levels=lp.max() - _CONTOUR_NATS, colors="0.55", linewidths=0.7)
        s2 = s[:max_points, :2].double().cpu().numpy()
        ax.scatter(s2[:, 0], s2[:, 1], s=3, color=method_color(i), alpha=0.6)
        ax.set_title(f"{name} ({s.shape[0]} draws)", fontsize=9)
    for ax in axes[:panels]:
        ax.set_xlim(lims[0], lims[1])
        ax.set_ylim(lims[2], lims[3])
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=7)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig


def _show(
    ax, img: Tensor, title: str, cmap: str = "gray", vmin: float | None = -1, vmax: float | None = 1
) -> None:
    img = img.detach().double().cpu()
    arr = img[0].numpy() if img.shape[0] == 1 else ((img.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_images(
    samples: Mapping[str, Tensor],
    truth: Tensor | None = None,
    observation: Tensor | None = None,
    num_samples: int = 4,
) -> Figure:
    """Image posteriors: per method a row with the posterior mean, pixel-wise standard deviation
    and ``num_samples`` draws; a first row with the truth and the observation (as an image, e.g.
    ``A^+ y``) when given.

    Args:
        samples: ``{method: Tensor[N, C, H, W]}`` in ``[-1, 1]``.
        truth, observation: ``Tensor[C, H, W]``.
    """
    cols = 2 + num_samples
    head = truth is not None or observation is not None
    rows = len(samples) + head
    fig = Figure(figsize=(1.5 * cols, 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    if head:
        if truth is not None:
            axes[0, 0].set_axis_on()
            _show(axes[0, 0], truth, "truth")
        if observation is not None:
            axes[0, 1].set_axis_on()
            _show(axes[0, 1], observation, "observation")
    stds = {k: v.std(0) for k, v in samples.items()}
    smax = max((float(s.max()) for s in stds.values()), default=1.0) or 1.0
    for r, (name, s) in enumerate(samples.items(), start=int(head)):
        for ax in axes[r]:
            ax.set_axis_on()
        _show(axes[r, 0], s.mean(0), f"{name}: mean")
        _show(axes[r, 1], stds[name], "pixel std", cmap="magma", vmin=0, vmax=smax)
        for j in range(min(num_samples, s.shape[0])):
            _show(axes[r, 2 + j], s[j], f"sample {j + 1}")
    return fig


def plot_pixel_std(std: Tensor, title: str = "posterior std per pixel") -> Figure:
    """The pixel-wise posterior standard deviation ``std: Tensor[C, H, W]`` (averaged over the
    channels of a colour image) as a heat map with a colour bar in the data's units."""
    img = std.detach().double().cpu()
    img = img.mean(0) if img.dim() == 3 else img
    h, w = img.shape
    fig = Figure(figsize=(3.6, 3.2 * h / w), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(img.numpy(), cmap="magma", vmin=0, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_sample_grid(samples: Tensor, max_draws: int = 16, title: str | None = None) -> Figure:
    """The first ``max_draws`` images of ``samples: Tensor[N, C, H, W]`` (in ``[-1, 1]``) in a grid."""
    n = min(int(samples.shape[0]), max_draws)
    rows, cols = _grid(n)
    fig = Figure(figsize=(1.6 * cols, 1.7 * rows + (0.3 if title else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for j in range(n):
        axes[j].set_axis_on()
        _show(axes[j], samples[j], f"draw {j + 1}")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_traces(results: Mapping[str, Result], index: int = 0) -> Figure:
    """ESS over the steps (fraction of particles, of a run's particles for a result of several
    runs; dots mark resampling steps) and the final normalised weights sorted in decreasing order,
    for the methods that report them."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_ess, ax_w = fig.subplots(1, 2)
    any_ess = any_w = False
    for i, (name, r) in enumerate(results.items()):
        n = r.run_size  # independent runs: the smallest run's ESS over its own particles
        if r.ess is not None:
            ess = (r.ess[index] if r.batched else r.ess).double().cpu().numpy() / n
            steps = np.arange(len(ess))
            label = name if n == r.num_samples else f"{name} (smallest of runs of {n})"
            ax_ess.plot(steps, ess, color=method_color(i), lw=1.2, label=label)
            if r.resampled is not None:
                res = (r.resampled[index] if r.batched else r.resampled).cpu().numpy().astype(bool)
                ax_ess.plot(steps[res], ess[res], ".", color=method_color(i), ms=4)
            any_ess = True
        if r.log_weights is not None:
            lw = (r.log_weights[index] if r.batched else r.log_weights).double()
            w = torch.softmax(lw, 0).sort(descending=True).values.cpu().numpy()
            ax_w.plot(np.arange(1, len(w) + 1), w, color=method_color(i), lw=1.2, label=name)
            any_w = True
    several = any(r.run_size != r.num_samples for r in results.values())
    ess_of = "ESS / particles per run" if several else "ESS / N"
    ax_ess.set_title(f"{ess_of} over the steps (dots: resampling)", fontsize=10)
    ax_ess.set_xlabel("step")
    ax_ess.set_ylim(0, 1.05)
    ax_w.set_title("final weights, sorted", fontsize=10)
    ax_w.set_xlabel("particle rank")
    ax_w.set_xscale("log")
    ax_w.set_yscale("log")
    for ax, ok in ((ax_ess, any_ess), (ax_w, any_w)):
        if ok:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no method reports this", ha="center", va="center", transform=ax.transAxes)
    return fig
