"""Results as ArviZ data, on arviz 0.x (``InferenceData``) and arviz >= 1 (``xarray.DataTree``).

Layout (both lines): group ``posterior`` holds the variable ``x`` with dims ``(chain, draw,
*event_dims)``, where a chain is one result (one call of a sampler; a list of results, e.g. from
:func:`run_chains`, gives several chains) or one MCMC chain, and the draws are its equally weighted
samples; image samples keep ``(channel, row, col)``. A latent prior's result (``Result.latents``)
adds the variable ``z``, its latent draws, with dims ``(chain, draw, *z_dims)`` (image latents:
``(z_channel, z_row, z_col)``).

A particle sampler's result with ``runs = R > 1`` independent runs is one chain of ``R`` draws,
one from each run (:meth:`Result.one_per_run`): the runs are independent, so these draws are,
and ``az.ess`` counts about ``R`` of them. Its per-run statistics sit on the ``draw`` dim of
``sample_stats``: ``log_evidence`` ``(chain, draw)``, ``ess`` ``(chain, draw, step)`` and
``log_weight`` ``(chain, draw, particle)`` (each run's normalised final weights); the merged
estimate is ``total_log_evidence`` ``(chain,)``. The particles of one run descend from few
ancestors, so taking them all as a chain's draws would make ``az.ess`` count copies and R-hat
measure how much runs differ rather than convergence (``one_per_run=False`` gives that layout:
one chain per run, its particles as the draws). A result of one particle system is one chain of
its ``N`` particles (correlated through their common ancestors: read its ``ess`` trace rather
than ``az.ess``). R-hat needs at least two chains: pass several results (:func:`run_chains`); on
one chain arviz returns NaN with a shape warning. Batched results add a
``problem`` dim after ``draw``. Group ``sample_stats`` holds what the method reports: ``log_weight``
(``(chain, particle)``, before the final resampling), ``ess``, ``resampled`` and ``acceptance``
(``(chain, step)``), ``log_evidence``, ``num_evals``, ``num_vjps`` and ``wall_time`` (``(chain,)``)
and any per-method trace in ``Result.stats``. With ``problem=`` given, ``observed_data`` holds
``y`` and ``constant_data`` the ground truth ``x_true`` when known.

MCMC results that keep their chains (``"mala"`` / ``"gibbs"`` with ``keep_chain=True``:
``stats["chain"]`` of shape ``[B, N, D, *event]``) become ``N`` chains of ``D`` draws each (the
chains of several runs concatenated); the per-run statistics then sit on a ``run`` dim.

The only version-specific line is the container at the end (:func:`_container`); everything else is
plain xarray, so ``az.summary`` / ``az.rhat`` / ``az.ess`` work on either.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from posterior._utils import check_positive_int
from posterior.samplers.result import Result

if TYPE_CHECKING:
    from posterior.problem import InverseProblem

__all__ = ["arviz_major_version", "event_dims", "run_chains", "save_netcdf", "to_arviz"]


def _arviz() -> Any:
    with warnings.catch_warnings():  # arviz 0.2x announces its 1.0 refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def arviz_major_version() -> int:
    """The installed arviz major version (0 for the ``InferenceData`` line)."""
    return int(_arviz().__version__.split(".")[0])


def event_dims(event_shape: Sequence[int], name: str = "x") -> tuple[str, ...]:
    """Dimension names for one sample: ``(name_dim,)`` for vectors, ``(channel, row, col)`` for
    images, ``name_dim_0, ...`` otherwise."""
    if len(event_shape) == 1:
        return (f"{name}_dim",)
    if len(event_shape) == 3:
        return ("channel", "row", "col")
    return tuple(f"{name}_dim_{i}" for i in range(len(event_shape)))


def _np(t: Tensor | float | int) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().cpu()
        return t.numpy() if t.dtype == torch.bool else t.double().numpy()
    return np.asarray(t)


def to_arviz(
    results: Result | Sequence[Result],
    *,
    problem: InverseProblem | None = None,
    var_name: str = "x",
    problem_index: int | None = None,
    use_mcmc_chains: bool = True,
    one_per_run: bool = True,
    seed: int = 0,
) -> Any:
    """Convert one result (one chain) or a list of results (independent runs: one chain each).

    A particle sampler's result with ``runs = R > 1`` is one chain of ``R`` draws, one per run
    (the module docstring says how to read it).

    Args:
        results: a :class:`~posterior.Result` or a sequence of them with equal sample shapes
            (e.g. from :func:`run_chains`). Samples ``[N, *event]`` (or ``[B, N, *event]``).
        problem: optional; adds ``observed_data`` (``y``) and ``constant_data`` (``x_true``).
        var_name: name of the posterior variable.
        problem_index: for batched results, keep only this problem (drops the ``problem`` dim).
        use_mcmc_chains: where every result stores its MCMC draws (``stats["chain"]``:
            ``[B, N, D, *event]``, e.g. ``"mala"`` / ``"gibbs"`` with ``keep_chain``), use the
            ``N`` chains x ``D`` draws of each run as the posterior (chains of several runs are
            concatenated) and put the per-run statistics on a ``run`` dim instead of ``chain``.
        one_per_run: a result of ``R > 1`` independent runs gives one chain of ``R`` draws, one
            picked uniformly from each run's equally weighted particles (``seed``), with the runs'
            statistics per draw; ``False``: one chain per run, all its particles as the draws
            (:meth:`Result.split_runs`).
        seed: picks each run's draw for ``one_per_run``.

    Returns:
        ``arviz.InferenceData`` on arviz 0.x, ``xarray.DataTree`` on arviz >= 1.
    """
    import xarray as xr

    runs = [results] if isinstance(results, Result) else list(results)
    if not runs or not all(isinstance(r, Result) for r in runs):
        raise TypeError("to_arviz expects a Result or a non-empty sequence of Results")
    if one_per_run:  # each result with independent runs: one chain of one draw per run
        runs = [_one_per_run(r, seed) for r in runs]
    else:
        runs = [part for r in runs for part in r.split_runs()]  # each run a chain of its particles
    per_draw = one_per_run and all(_has_runs(r) for r in runs)
    keep_problem = any(r.batched for r in runs) and problem_index is None
    runs = [r.as_batched() for r in runs]
    shapes = {tuple(r.samples.shape) for r in runs}
    if len(shapes) > 1:
        raise ValueError(f"results to stack as chains must have equal sample shapes, got {sorted(shapes)}")
    B = runs[0].samples.shape[0]
    if problem_index is not None and not -B <= problem_index < B:
        raise ValueError(f"problem_index {problem_index} is out of range for {B} problems")
    sel: slice | int = slice(None) if keep_problem else (problem_index or 0)
    pdim = ("problem",) if keep_problem else ()

    def stack(get: Any) -> np.ndarray | None:
        values = [get(r) for r in runs]
        if any(v is None for v in values):
            return None
        return np.stack([_np(v) for v in values])

    ev = event_dims(runs[0].samples.shape[2:], var_name)
    mcmc = use_mcmc_chains and all(
        r.stats.get("chain") is not None and r.stats["chain"].shape[2] > 0 for r in runs
    )
    if mcmc:  # stored MCMC draws [B, N, D, *event]: the N chains of every run are the chains
        x = np.concatenate(
            [
                _np(r.stats["chain"][sel].movedim(0, 2) if keep_problem else r.stats["chain"][sel])
                for r in runs
            ]
        )
    else:
        # samples [B, N, *event] -> [N, B, *event] so that dims read (chain, draw, problem, *event)
        x = stack(lambda r: r.samples[sel].movedim(0, 1) if keep_problem else r.samples[sel])
    posterior = xr.Dataset({var_name: (("chain", "draw", *pdim, *ev), x)})
    for name in runs[0].parameters or {}:  # unknown parameters of a joint sampler, chains as x's
        key = f"chain.{name}"
        if mcmc and all(key in r.stats for r in runs):
            value = np.concatenate(
                [_np(r.stats[key][sel].movedim(0, 2) if keep_problem else r.stats[key][sel]) for r in runs]
            )
        else:
            value = stack(
                lambda r, n=name: r.parameters[n][sel].movedim(0, 1) if keep_problem else r.parameters[n][sel]
            )
        posterior[name] = (("chain", "draw", *pdim), value)
    if runs[0].latents is not None:  # a latent prior's draws behind x, as the variable z
        if mcmc and all("chain_latents" in r.stats for r in runs):
            z = np.concatenate(
                [_np(r.stats["chain_latents"][sel].movedim(0, 2 if keep_problem else 0)) for r in runs]
            )
        else:
            z = stack(lambda r: r.latents[sel].movedim(0, 1) if keep_problem else r.latents[sel])
        zdims = tuple(
            d if d.startswith("z_") else f"z_{d}" for d in event_dims(runs[0].latents.shape[2:], "z")
        )
        posterior["z"] = (("chain", "draw", *pdim, *zdims), z)
    run = "run" if mcmc else "chain"  # per-run statistics: one run holds many MCMC chains

    stats: dict[str, Any] = {}
    if per_draw:  # the runs' statistics on the draw dim: [B, R, ...] -> (draw, problem, ...)

        def by_draw(t: Tensor) -> Tensor:
            return t[sel].movedim(0, 1) if keep_problem else t[sel]

        log_zr = stack(lambda r: by_draw(r.stats["run_log_evidence"]))
        stats["log_evidence"] = (("chain", "draw", *pdim), log_zr)
        if all("run_ess" in r.stats for r in runs):
            stats["ess"] = (("chain", "draw", *pdim, "step"), stack(lambda r: by_draw(r.stats["run_ess"])))
        weights = stack(
            lambda r: None if "run_log_weights" not in r.stats else by_draw(r.stats["run_log_weights"])
        )
        if weights is not None:
            stats["log_weight"] = (("chain", "draw", *pdim, "particle"), weights)
    per_particle = stack(lambda r: None if r.log_weights is None else r.log_weights[sel])
    if per_particle is not None and not per_draw:
        stats["log_weight"] = ((run, *pdim, "particle"), per_particle)
    for name in ("ess", "resampled", "acceptance"):
        if name in stats:
            continue
        value = stack(lambda r, n=name: None if getattr(r, n) is None else getattr(r, n)[sel])
        if value is not None:
            stats[name] = ((run, *pdim, "step"), value)
    log_z = stack(lambda r: None if r.log_evidence is None else r.log_evidence[sel])
    if log_z is not None:
        stats["total_log_evidence" if per_draw else "log_evidence"] = ((run, *pdim), log_z)
    for name in ("num_evals", "num_vjps", "wall_time"):
        stats[name] = ((run,), np.asarray([float(getattr(r, name)) for r in runs]))
    for key in runs[0].stats:
        if ((key in ("chain", "chain_latents") or key.startswith("chain.")) and mcmc) or (
            per_draw and key.startswith("run_")
        ):
            continue
        try:
            value = stack(lambda r, k=key: r.stats[k][sel] if k in r.stats else None)
        except ValueError:  # traces of unequal length across runs: not stackable
            value = None
        if value is not None:
            extra = tuple(f"{key}_dim_{i}" for i in range(value.ndim - 1 - len(pdim)))
            stats[key] = ((run, *pdim, *extra), value)
    groups: dict[str, Any] = {"posterior": posterior, "sample_stats": xr.Dataset(stats)}

    if problem is not None:
        y = problem.y_batch[sel]
        obs_dims = event_dims(problem.obs_shape, "y")
        groups["observed_data"] = xr.Dataset({"y": ((*pdim, *obs_dims), _np(y))})
        truth = runs[0].truth if runs[0].truth is not None else problem.truth
        if truth is not None:
            truth = truth if truth.dim() > len(problem.event_shape) else truth[None]
            groups["constant_data"] = xr.Dataset({f"{var_name}_true": ((*pdim, *ev), _np(truth[sel]))})
    attrs = {"method": runs[0].method, **{k: str(v) for k, v in runs[0].options.items()}}
    for ds in groups.values():
        ds.attrs.update(attrs)
    return _container(groups)


def _has_runs(result: Result) -> bool:
    """Whether ``result`` holds ``R > 1`` independent runs of a particle sampler."""
    return int(result.options.get("runs", 1)) > 1 and "run_log_evidence" in result.stats


def _one_per_run(result: Result, seed: int) -> Result:
    """One draw of each run (``Result.one_per_run``), or the result itself (one run, or already
    one draw per run)."""
    if not _has_runs(result) or result.options.get("draws_per_run") == 1:
        return result
    one = result.one_per_run(seed)
    lw, R = result.as_batched().log_weights, int(result.options["runs"])
    if lw is not None and lw.shape[1] % R == 0:  # pooled [B, R * n] -> each run's own [B, R, n]
        lw = lw.reshape(lw.shape[0], R, -1)
        weights = lw - torch.logsumexp(lw, -1, keepdim=True)
        one.stats = {**one.stats, "run_log_weights": weights if result.batched else weights[0]}
    return one


def _container(groups: dict[str, Any]) -> Any:
    """The one version switch: ``InferenceData`` (arviz 0.x) or ``DataTree`` (arviz >= 1)."""
    az = _arviz()
    if int(az.__version__.split(".")[0]) < 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-(chain, draw) sample_stats are fine
            return az.InferenceData(**groups)
    import xarray as xr

    return xr.DataTree.from_dict(groups)


def save_netcdf(data: Any, path: str | Path) -> Path:
    """Write the output of :func:`to_arviz` to a NetCDF-4 file (the ``h5netcdf`` engine).

    Reload it with ``arviz.from_netcdf(path)`` (``InferenceData`` on arviz 0.x, ``DataTree`` on 1.x)
    or ``xarray.open_datatree(path)``: one HDF5 group per ArviZ group.
    """
    path = Path(path)
    if hasattr(data, "to_netcdf"):  # InferenceData and DataTree both have one
        data.to_netcdf(str(path), engine="h5netcdf")
        return path
    raise TypeError(f"expected the output of to_arviz, got {type(data).__name__}")


def run_chains(
    problem: InverseProblem,
    method: str,
    num_chains: int = 4,
    num_particles: int = 256,
    num_steps: int = 100,
    seed: int = 0,
    progress: bool = False,
    return_results: bool = False,
    **options: Any,
) -> Any:
    """Run ``method`` ``num_chains`` times with independent seeds and stack the runs as chains.

    Chain ``r`` uses a seed drawn from ``torch.Generator().manual_seed(seed)``, so the chains are
    independent and the whole call is reproducible. The output feeds ``az.rhat`` / ``az.ess`` /
    ``az.summary`` directly: between-run disagreement (R-hat > 1) flags a sampler whose runs land in
    different places, e.g. particle collapse onto different modes.

    Returns:
        the ArviZ object of :func:`to_arviz` (with ``problem``), or the list of
        :class:`~posterior.Result` when ``return_results``.
    """
    from posterior.samplers.base import sample

    check_positive_int(num_chains, "num_chains")
    gen = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (num_chains,), generator=gen).tolist()
    results = [
        sample(
            problem,
            method,
            num_particles=num_particles,
            num_steps=num_steps,
            seed=s,
            progress=progress,
            **options,
        )
        for s in seeds
    ]
    return results if return_results else to_arviz(results, problem=problem)
