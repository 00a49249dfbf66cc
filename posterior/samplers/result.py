"""The result object every sampler returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posterior._utils import as_generator
from posterior.samplers.result_io import load_fields, save_result

__all__ = ["Result"]


@dataclass
class Result:
    """Posterior draws and what the sampler knows about them.

    Shapes below are for one problem; a batched problem adds a leading ``B`` to each tensor.

    Attributes:
        samples: ``Tensor[N, *event_shape]``, equally weighted posterior draws.
        method: the registered method name.
        log_evidence: estimate of ``log p(y)`` (SMC-type methods), 0-d tensor, else ``None``.
        ess: ``Tensor[num_steps]`` effective sample size after each reweighting, else ``None``.
        log_weights: ``Tensor[N]`` normalised log-weights before the final resampling.
        resampled: ``BoolTensor[num_steps]``, whether the particles were resampled at each step.
        acceptance: ``Tensor[num_steps]`` mean Metropolis acceptance rate per step/iteration.
        num_evals: per-sample network evaluations spent.
        num_vjps: per-sample vector-Jacobian products spent.
        wall_time: seconds.
        options: the method's options as run (including ``num_particles``, ``num_steps``).
        stats: further per-method traces, each a tensor with ``num_steps`` (or draws) last, or
            per-problem values ``[B]`` (e.g. ``"init_ess"`` of the MCMC samplers).
        truth: the ground truth ``x`` when the problem knows it.
        parameters: ``{name: Tensor[N]}``, the draw of each unknown parameter
            (:class:`~posterior.Unknown`) that goes with each draw of ``samples`` (joint samplers
            such as ``"pmmh"``), else ``None``.
        latents: ``Tensor[N, *latent_shape]``, the latent draws behind ``samples`` for a latent
            prior (:class:`~posterior.LatentPrior`: ``samples`` are their decoding), else ``None``.
    """

    samples: Tensor
    method: str
    log_evidence: Tensor | None = None
    ess: Tensor | None = None
    log_weights: Tensor | None = None
    resampled: Tensor | None = None
    acceptance: Tensor | None = None
    num_evals: int = 0
    num_vjps: int = 0
    wall_time: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)
    truth: Tensor | None = None
    batched: bool = True
    parameters: dict[str, Tensor] | None = None
    latents: Tensor | None = None

    _BATCHED_FIELDS = ("samples", "log_evidence", "ess", "log_weights", "resampled", "acceptance", "truth")
    _BATCHED_FIELDS += ("latents",)  # a latent prior's draws behind the decoded samples

    def unbatched(self) -> Result:
        """The same result with the leading problem dimension (``B = 1``) dropped."""
        if not self.batched:
            return self
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in self._BATCHED_FIELDS:
            value = out[name]
            if value is not None:
                out[name] = value[0]
        out["stats"] = {k: v[0] for k, v in self.stats.items()}
        if self.parameters is not None:
            out["parameters"] = {k: v[0] for k, v in self.parameters.items()}
        out["batched"] = False
        return Result(**out)

    def as_batched(self) -> Result:
        """The same result with a leading problem dimension (``B = 1`` added if it had none)."""
        if self.batched:
            return self
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in self._BATCHED_FIELDS:
            value = out[name]
            if value is not None:
                out[name] = value[None]
        out["stats"] = {k: v[None] for k, v in self.stats.items()}
        if self.parameters is not None:
            out["parameters"] = {k: v[None] for k, v in self.parameters.items()}
        out["batched"] = True
        return Result(**out)

    def split_runs(self) -> list[Result]:
        """The independent particle systems behind this result, one :class:`Result` each.

        A particle sampler run with ``runs = R > 1`` (e.g. ``ps.sample(problem, "tds", 128,
        runs=32)``) returns all runs' draws together (``R`` blocks of ``N / R`` on the draw dim) and
        keeps ``stats["run_log_evidence"]: [B, R]``, ``stats["run_ess"]: [B, R, num_steps]`` and
        each run's own draws ``stats["run_samples"]`` (``R`` blocks of ``N / R``; ``samples`` are
        the merge's); here each run gets its own draws, log-evidence, ESS trace and a share
        ``1 / R`` of the network calls and time. Any other result is returned alone: ``[self]``.
        """
        R = int(self.options.get("runs", 1))
        if R == 1 or "run_log_evidence" not in self.stats or self.num_samples < 2 * R:
            return [self]  # one draw per run: the draws are independent, one chain
        b = self.as_batched()
        own = b.stats.get("run_samples", b.samples)  # [B, R * n, ...], run by run
        own_latents = b.stats.get("run_latents", b.latents)  # a latent prior's, alike
        n = own.shape[1] // R
        rest = {k: v for k, v in b.stats.items() if not k.startswith("run_")}
        parts = []
        for r in range(R):
            block = slice(r * n, (r + 1) * n)
            lw = None if b.log_weights is None else b.log_weights[:, block]
            part = Result(
                samples=own[:, block],
                method=b.method,
                log_evidence=b.stats["run_log_evidence"][:, r],
                ess=b.stats["run_ess"][:, r],
                log_weights=None if lw is None else lw - torch.logsumexp(lw, 1, keepdim=True),
                resampled=b.resampled,
                acceptance=b.acceptance,
                num_evals=b.num_evals // R,
                num_vjps=b.num_vjps // R,
                wall_time=b.wall_time / R,
                options={**b.options, "run": r},
                stats=rest,
                truth=b.truth,
                latents=None if own_latents is None else own_latents[:, block],
            )
            parts.append(part if self.batched else part.unbatched())
        return parts

    def one_per_run(self, seed: int | torch.Generator | None = 0) -> Result:
        """One draw from each independent run: ``samples: [R, *event]`` (``[B, R, ...]``).

        For a particle sampler run with ``runs = R > 1``: each run's draw is one of its ``n``
        equally weighted particles, picked uniformly (after the final resampling that is a draw
        from the run's weighted particle approximation of the posterior), so the ``R`` draws are
        independent and each converges in law to the posterior as ``n`` grows (at a fixed ``n``
        each keeps its run's bias: the runs' evidence weights are not applied). The ``n`` particles
        of one small run descend from few ancestors; one draw each keeps the runs' spread without
        counting a run's copies as independent. The runs' statistics and the network calls spent
        (``num_evals``, ``num_vjps``: all runs together) are kept.
        """
        R = int(self.options.get("runs", 1))
        if R == 1 or "run_log_evidence" not in self.stats:
            raise ValueError("one_per_run needs a particle sampler's result with runs > 1 (e.g. runs=128)")
        b = self.as_batched()
        own = b.stats.get("run_samples", b.samples)  # [B, R * n, ...], each run's own draws
        B, Rn = own.shape[:2]
        n = Rn // R
        pick = torch.randint(n, (B, R), generator=as_generator(seed)).to(own.device)
        index = torch.arange(R, device=pick.device) * n + pick  # [B, R] rows of the runs' draws

        def pick_rows(v: Tensor) -> Tensor:
            return torch.gather(v, 1, index.reshape(B, R, *([1] * (v.dim() - 2))).expand(B, R, *v.shape[2:]))

        draws = pick_rows(own)
        own_latents = b.stats.get("run_latents", b.latents)  # a latent prior's draws, picked alike
        out = {name: getattr(b, name) for name in self.__dataclass_fields__}
        out.update(
            samples=draws,
            latents=None if own_latents is None else pick_rows(own_latents),
            log_weights=torch.full((B, R), -math.log(R), dtype=draws.dtype, device=draws.device),
            options={**b.options, "draws_per_run": 1},
        )
        one = Result(**out)
        return one if self.batched else one.unbatched()

    @property
    def num_samples(self) -> int:
        return self.samples.shape[1 if self.batched else 0]

    @property
    def run_size(self) -> int:
        """Particles per independent run, the scale of ``ess``: ``num_particles / runs`` for a
        particle sampler run with ``runs > 1`` (also after :meth:`one_per_run`), the ``particles``
        of each conditional SMC sweep for ``"pgas"``, else ``num_samples``."""
        if "particles" in self.options:  # particle Gibbs: the ESS is that of one sweep
            return int(self.options["particles"])
        R = int(self.options.get("runs", 1))
        if R == 1 or "num_particles" not in self.options:
            return self.num_samples
        return int(self.options["num_particles"]) // R

    def mean(self) -> Tensor:
        """Posterior mean estimate, ``Tensor[*event_shape]`` (``[B, ...]`` if batched)."""
        return self.samples.mean(1 if self.batched else 0)

    def std(self) -> Tensor:
        """Pointwise posterior standard deviation estimate, same shape as :meth:`mean`."""
        return self.samples.std(1 if self.batched else 0)

    def save(self, path: str | Path) -> Path:
        """Write this result to one ``.safetensors`` file: the tensors, plus JSON metadata for the
        rest (no pickle); :meth:`load` reads it back exactly. See :mod:`posterior.samplers.result_io`."""
        return save_result(self, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> Result:
        """A result written by :meth:`save` (tensors on the CPU, or on ``device``)."""
        return cls(**load_fields(path, device=device))

    def to_arviz(self, **kwargs: Any) -> Any:
        """ArviZ data (``InferenceData`` on arviz 0.x, ``xarray.DataTree`` on arviz 1.x): the
        public shorthand for :func:`posterior.diagnostics.to_arviz` (imported lazily, so that
        this module does not depend on the diagnostics)."""
        from posterior.diagnostics.arviz import to_arviz

        return to_arviz(self, **kwargs)

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"samples={list(self.samples.shape)}"]
        if self.log_evidence is not None:
            parts.append(f"log_evidence={self.log_evidence.tolist()}")
        parts.append(f"num_evals={self.num_evals}, wall_time={self.wall_time:.2f}s")
        return f"Result({', '.join(parts)})"
