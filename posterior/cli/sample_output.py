"""The folder ``posterior sample`` writes: images, draws, ArviZ NetCDF, the saved result and a
report in words. All files are written into a temporary folder beside the target and moved in at
the end, so a failure leaves the target as it was."""

from __future__ import annotations

import math
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FILES", "sample_report", "write_outputs"]

#: What each file holds (listed in the report).
FILES = {
    "mean.png": "posterior mean, at the prior's resolution",
    "std.png": "posterior standard deviation per pixel, with its colour bar",
    "samples.png": "16 posterior draws spread evenly over all of them (over the runs, where there are runs)",
    "observation.png": "what was observed, as an image (A^+ y: the pseudo-inverse of the operator)",
    "traces.png": "ESS over the steps and the final weights (methods with weights)",
    "parameters.png": "the posterior of the unknown parameters (--noise ?, blur:gaussian:?)",
    "samples.npy": "all draws, float32 [N, C, H, W]",
    "posterior.nc": "the ArviZ data as NetCDF-4 (arviz.from_netcdf on arviz 0.x, "
    "xarray.open_datatree on either)",
    "result.safetensors": "the whole result, exactly (ps.Result.load)",
    "report.md": "this report",
}


def write_outputs(
    out: Path,
    problem: Any,
    result: Any,
    settings: Mapping[str, Any],
    degenerate: Sequence[str],
    notes: Sequence[str] = (),
) -> Path:
    """Write every file of :data:`FILES` that applies into ``out`` (created if needed); ``notes``:
    what was done to the inputs (a conversion to grayscale, a resize), quoted in the report."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        written = _write_all(tmp, problem, result, settings, degenerate, notes)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        tmp.rename(out)
        return out
    for name in written:
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def grid_draws(result: Any, count: int = 16) -> tuple[list[int], str]:
    """Which draws ``samples.png`` shows and its caption: ``count`` draws spread evenly over the
    ``N`` draws, never the first ``count`` (one particle system's neighbouring draws are often
    copies of one ancestor, and a result of ``R`` runs keeps its draws in run order, so the first
    ones come from one or two runs). The caption says where the draws come from."""
    n_draws = result.num_samples
    k = min(count, n_draws)
    idx = sorted({round(i * (n_draws - 1) / max(k - 1, 1)) for i in range(k)})
    runs, _ = _runs(result)
    where = ""
    if runs > 1 and result.options.get("draws_per_run") == 1:
        where = f"; one draw per run of {runs}"
    elif runs > 1:
        eff = result.as_batched().stats.get("effective_runs")
        weighted = result.options.get("merge", "evidence") == "evidence"
        how = "pooled by their evidence" if weighted else "pooled with equal weights"
        carried = (
            f", about {float(eff.reshape(-1)[0]):.1f} runs carrying it"
            if weighted and eff is not None
            else ""
        )
        where = f"; in run order, {runs} runs {how}{carried}"
    return idx, f"{len(idx)} of the {n_draws} draws, spread evenly{where}"


def _write_all(
    folder: Path,
    problem: Any,
    result: Any,
    settings: Mapping[str, Any],
    degenerate: Sequence[str],
    notes: Sequence[str] = (),
) -> list[str]:
    import numpy as np

    import posterior as ps
    from posterior.diagnostics import plots
    from posterior.diagnostics.arviz import save_netcdf, to_arviz

    samples = result.samples  # [N, C, H, W]
    ps.io.save_image(result.mean().clamp(-1, 1), folder / "mean.png")
    plots.save_figure(plots.plot_pixel_std(result.std()), folder / "std.png")
    idx, caption = grid_draws(result)
    plots.save_figure(
        plots.plot_sample_grid(samples[idx], len(idx), title=f"{result.method}: {caption}"),
        folder / "samples.png",
    )
    names = ["mean.png", "std.png", "samples.png"]
    observed = _observation_image(problem)
    if observed is not None:
        ps.io.save_image(observed.clamp(-1, 1), folder / "observation.png")
        names.append("observation.png")
    if result.ess is not None or result.log_weights is not None:
        plots.save_figure(plots.plot_traces({result.method: result}), folder / "traces.png")
        names.append("traces.png")
    if result.parameters:
        from posterior.diagnostics.parameters import plot_parameters

        plots.save_figure(plot_parameters(result), folder / "parameters.png")
        names.append("parameters.png")
    np.save(folder / "samples.npy", samples.detach().float().cpu().numpy())
    save_netcdf(to_arviz(result, problem=problem), folder / "posterior.nc")
    result.save(folder / "result.safetensors")
    umask = os.umask(0)  # safetensors creates its file 0600: give it the mode of the other files
    os.umask(umask)
    os.chmod(folder / "result.safetensors", 0o666 & ~umask)
    names += ["samples.npy", "posterior.nc", "result.safetensors", "report.md"]
    report = sample_report(problem, result, settings, degenerate, names, notes)
    (folder / "report.md").write_text(report)
    return names


#: The settings that make up the command line in the report, in order.
_ARGV_KEYS = (
    "prior",
    "observation",
    "operator",
    "noise",
    "method",
    "particles",
    "runs",
    "steps",
    "seed",
    "out",
)


def _runs(result: Any) -> tuple[int, int]:
    """The number of independent runs the draws come from and the particles of each run."""
    return int(result.options.get("runs", 1)), result.run_size


def _observation_image(problem: Any) -> Any:
    """``A^+ y`` where the operator has a pseudo-inverse, else ``y`` if it is image-shaped."""
    y = problem.y_batch[:1]
    try:
        return problem.operator.A_pinv(y)[0].reshape(problem.event_shape)
    except (AttributeError, NotImplementedError, ValueError, RuntimeError):
        return y[0] if tuple(y.shape[1:]) == tuple(problem.event_shape) else None


def _ess_sentence(result: Any, degenerate: Sequence[str]) -> str:
    import posterior as ps

    n = result.num_samples
    exact = ps.METHODS[result.method].exact
    if degenerate:
        return (
            "**The particle system degenerated.** "
            + " ".join(t.rstrip(". ") + "." for t in degenerate)
            + " The draws then descend from a few particles (or, with runs, come from a few runs), "
            "so they are close copies of a few: `std.png` understates the posterior's spread and "
            "intervals from these draws are too narrow. More particles (`--particles`; with runs, "
            "more particles per run) are the remedy; the ESS trace below shows where a run's ESS fell."
        )
    if result.ess is None:
        if exact:
            acc = ""
            if result.acceptance is not None and result.acceptance.numel():
                acc = f" Its mean acceptance rate was {float(result.acceptance.double().mean()):.2f}."
            return (
                f"`{result.method}` is an MCMC method: it has no particle weights, so no ESS trace; "
                f"its chains are exact as the iterations grow.{acc}"
            )
        return (
            f"`{result.method}` is an approximate method: its {n} draws are independent (no weights, so "
            "nothing to degenerate), but they do not converge to the posterior as draws grow; an "
            "exact method (`posterior methods`) gives calibrated draws."
        )
    ess = result.ess.double()
    low, step = float(ess.min()), int(ess.argmin())  # steps counted from 0, as in result.ess
    runs, size = _runs(result)
    if runs > 1:  # result.ess: the lowest over the runs at each step
        return (
            f"{runs} independent runs of {size} particles, {_kept(result)}: within a run the ESS "
            f"fell to {low:.1f} of {size} (step {step}), as a run of few particles does, so each "
            "run's draws come from its few surviving ancestors and the spread of the draws is "
            "mostly the spread between runs. Each run is exact only as its own particles grow."
        )
    if low < max(2.0, 0.1 * n):  # below the engine's warning level (2), or a tenth of the particles
        return (
            f"The ESS fell to {low:.1f} of {n} particles (step {step}): the draws rest on few "
            "particles, so their spread is itself uncertain; more particles give a steadier answer."
        )
    return f"No degeneracy: the ESS stayed at or above {low:.1f} of {n} particles (lowest at step {step})."


def _kept(result: Any) -> str:
    """Which draws of each run a result keeps, in words."""
    return "one draw of each" if result.options.get("draws_per_run") == 1 else "all their draws"


def _ess_table(ess: Any, n: int, columns: int = 11, every: int = 25, size: str = "N") -> list[str]:
    """The ESS trace: every step for up to ``every`` steps, else ``columns`` evenly spaced steps
    (first and last included) and the step of the minimum; steps counted from 0 (``result.ess[i]``).
    ``n``: the particles the ESS is out of, named ``size`` in the table."""
    k = ess.shape[-1]
    if k <= every:
        idx = list(range(k))
    else:
        idx = sorted({round(i * (k - 1) / (columns - 1)) for i in range(columns)} | {int(ess.argmin())})
    return [
        "| step | " + " | ".join(str(i) for i in idx) + " |",
        "|---|" + "---|" * len(idx),
        "| ESS | " + " | ".join(f"{float(ess[i]):.1f}" for i in idx) + " |",
        f"| ESS / {size} | " + " | ".join(f"{float(ess[i]) / n:.2f}" for i in idx) + " |",
    ]


def sample_report(
    problem: Any,
    result: Any,
    settings: Mapping[str, Any],
    degenerate: Sequence[str],
    files: Sequence[str],
    notes: Sequence[str] = (),
) -> str:
    """``report.md`` of ``posterior sample``: the settings, what was done to the inputs
    (``notes``), log-evidence and what it is worth, network calls, the ESS trace and any
    degeneracy in words, and the files."""
    import posterior as ps
    from posterior.diagnostics.report import evidence_spread

    cls = ps.METHODS[result.method]
    n, steps = result.num_samples, settings["steps"]
    runs, size = _runs(result)
    argv = ["posterior", "sample"]
    for key in _ARGV_KEYS:
        if key in settings and not (key == "runs" and settings[key] is None):
            argv += [f"--{key}", str(settings[key])]
    argv += [f"--{flag}" for flag in ("resize", "overwrite") if settings.get(flag)]
    particles = f"{runs * size} in {runs} runs of {size}, {_kept(result)}" if runs > 1 else str(n)
    kind = (
        f"exact: converges, as particles grow, to the posterior of the {steps}-step chain it simulates"
        if cls.exact
        else "approximate: no convergence guarantee"
    )
    lines = [
        "# posterior sample",
        "",
        "```",
        shlex.join(argv),
        "```",
        "",
        "| setting | value |",
        "|---|---|",
        f"| prior | {settings['prior']}: draws {list(problem.event_shape)} |",
        f"| observation | `{settings['observation']}`: y of shape {list(problem.obs_shape)} |",
        f"| operator | `{settings['operator']}`: {problem.operator!r} |",
        f"| noise std | {_noise_text(settings['noise'])} |",
        f"| method | {result.method} ({kind}) |",
        f"| particles, steps, seed | {particles}; {steps}; {settings['seed']} |",
        "",
    ]
    if notes:
        lines += ["**Inputs converted:** " + " ".join(t.rstrip(". ") + "." for t in notes), ""]
    lines += ["## Result", ""]
    if result.parameters:
        from posterior.diagnostics.parameters import parameter_lines

        lines += parameter_lines(result)
    if result.log_evidence is not None:
        value = float(result.log_evidence)
        text = f"{value:.3f}" if math.isfinite(value) else str(value)
        lines.append(f"- log-evidence: log p(y) estimated at {text} nats")
        spread = evidence_spread(result)
        if spread:
            lines.append(f"  ({spread})")
    else:
        lines.append(f"- log-evidence: `{result.method}` does not estimate it")
    lines.append(
        f"- network calls: {result.num_evals:,} evaluations ({result.num_evals / n:.1f} per draw) and "
        f"{result.num_vjps:,} vector-Jacobian products ({result.num_vjps / n:.1f} per draw)"
    )
    lines.append(f"- wall time: {result.wall_time:.1f} s")
    std = result.std()
    lines.append(
        f"- posterior std per pixel: mean {float(std.mean()):.3f}, max {float(std.max()):.3f} "
        "(pixel values in [-1, 1])"
    )
    lines += ["", "## Degeneracy", "", _ess_sentence(result, degenerate), ""]
    if result.ess is not None and result.ess.numel():
        lines += ["## ESS trace", ""]
        # with runs: the lowest ESS over the runs at each step, out of one run's particles
        lines += _ess_table(result.ess.double(), size, size="N" if runs == 1 else "run size")
        lines += [
            "",
            "Steps are counted from 0, as in `result.ess`; the whole trace is in `posterior.nc` "
            "(`sample_stats/ess`).",
        ]
        if "traces.png" in files:
            lines += ["", "![ESS and weights](traces.png)"]
        lines.append("")
    lines += ["## Files", ""]
    lines += [f"- `{name}`: {FILES[name]}" for name in files]
    lines += ["", "![posterior mean](mean.png) ![posterior std](std.png)", "", "![draws](samples.png)", ""]
    return "\n".join(lines)


def _noise_text(noise: Any) -> str:
    return "unknown (sampled)" if noise == "?" else f"{noise:g}"
