"""An unknown noise level at image size with a known answer: joint samplers and the plug-in.

``--problems`` problems on :func:`posterior.problems_image.gmm_image`'s image mixture (shape
``--shape``, operator ``--operator``): truths ``x`` from the mixture, noise levels from the prior
``std ~ LogNormal(log 0.1, 0.5)``, ``y = A x + std eps``, ``std`` a :class:`posterior.Unknown`.
The reference: ``p(std | y) ∝ p(std) p(y | std)`` by quadrature on a fine grid in ``log std``,
with the mixture's closed-form evidence (per component ``A Sigma_k A^T`` diagonalised once, so
that every grid value costs a vector operation; checked against ``exact_log_evidence``); and
``p(x | y)`` as the mixture over ``std`` of the exact ``p(x | y, std)``, drawn at eight
equal-mass quantile nodes of ``p(std | y)`` (Matheron's rule).

Rows (one per ``--methods`` entry; each writes its block of ``--out`` when done):

- ``exact``: the grid posterior's own coverage of the true ``std`` by its central 90% interval,
  and the exact draws' per-pixel coverage of ``x`` (as many draws as the samplers return).
- ``pmmh`` / ``pgibbs``: ``--chains`` chains per problem, ``--iterations`` (sweeps; ``--particles``
  inner particles for pmmh, ``--sweep-particles`` per sweep for pgibbs), the last
  ``iterations - burn_in`` kept: coverage of the true ``std`` by the draws' 90% interval, W1
  between the ``std`` draws and the grid posterior over the exact floor (the W1 of as many
  independent grid draws), the mean of ``log std`` against the grid's in standard errors,
  acceptance after the burn-in, R-hat over the chains, the per-pixel coverage of ``x``.
- ``plugin``: ``std`` first, as the maximiser of ``log Z^(std) + log p(std)`` (density in
  ``log std``) over a coarse then a fine grid of TDS evidence estimates (``--plugin-particles``
  per run), then ``tds`` at that ``std``; a point estimate has no interval, so its ``std``
  coverage is not defined: the row gives its error in ``log std``, in units of the grid
  posterior's standard deviation. Beside it, the pixel coverage of the exact ``p(x | y, std)`` at
  the plug-in ``std`` (the plug-in's own loss, without the sampler's), and of ``tds`` at the true
  ``std`` (the sampler's own loss, without the plug-in's).

The exact answers are the continuous model's; the samplers simulate a ``--steps``-step chain,
whose posterior and evidence differ from them (TDS's log-evidence falls tens of nats below the
closed form at this size: benchmarks/README.md, the image-oracle table), so the rows measure the
samplers on the chain plus the chain's gap.

    PYTHONPATH=.:benchmarks nice -n 5 python benchmarks/image_unknown_noise.py --problems 32 \
        --methods exact,plugin,pgibbs,pmmh --out benchmarks/results/image_unknown_noise.json
    PYTHONPATH=.:benchmarks python benchmarks/image_unknown_noise.py --table   # the README's table
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro.distributions as dist
import torch
from torch import Tensor

import posterior as ps
from posterior.diagnostics.calibration import coverage
from posterior.diagnostics.parameters import rhat
from posterior.parameters import Parameters
from posterior.problems_image import ImageMixtureProblem, gmm_image
from tests.samplers.joint._grid import mean_shift, w1

PRIOR = (math.log(0.1), 0.5)  # LogNormal(mu, s) of the noise std


def build(args: argparse.Namespace) -> tuple[ImageMixtureProblem, Tensor]:
    """The problems (``std`` unknown) and the true noise levels ``Tensor[B]`` (float64)."""
    shape = tuple(int(s) for s in args.shape.split(","))
    base = gmm_image(shape, args.operator, 0.1, args.problems, seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    std = torch.exp(PRIOR[0] + PRIOR[1] * torch.randn(args.problems, generator=gen, dtype=torch.float64))
    clean = base.operator.A(base.truth)
    y = clean + std.float().reshape(-1, *[1] * (clean.dim() - 1)) * torch.randn(clean.shape, generator=gen)
    noise = ps.noise.Gaussian(ps.Unknown(dist.LogNormal(*PRIOR)))
    problem = ImageMixtureProblem(base.prior, base.operator, y, noise)
    problem.truth = base.truth
    return problem, std


class Evidence:
    """``log p(y_b | std)`` of the image mixture for any ``std``: per component ``k`` the
    eigendecomposition ``A Sigma_k A^T = U_k diag(l_k) U_k^T`` (``m x m``, once), so that
    ``log N(y; A mu_k, U_k diag(l_k + std^2) U_k^T)`` is a sum over ``m`` values."""

    def __init__(self, problem: ImageMixtureProblem) -> None:
        prior, op = problem.prior, problem.operator.to(dtype=torch.float64)
        obs = tuple(problem.y_batch.shape[1:])
        m = math.prod(obs)
        rows = op.A_adjoint(torch.eye(m, dtype=torch.float64).reshape(m, *obs))  # A's rows
        y = problem.y_batch.double().reshape(problem.batch_size, m)
        self.log_w = prior.params["weights"].double().log()  # [K]
        lam, z = [], []
        for k in range(prior.num_components):
            S = op.A(prior.cov_apply(rows, k)).reshape(m, m)
            l_k, U = torch.linalg.eigh(0.5 * (S + S.T))
            lam.append(l_k.clamp_min(0))
            resid = y - op.A(prior.means[k : k + 1].double()).reshape(1, m)
            z.append((resid @ U).pow(2))  # [B, m]
        self.lam, self.z2, self.m = torch.stack(lam), torch.stack(z, 1), m  # [K, m], [B, K, m]

    def __call__(self, std: Tensor) -> Tensor:
        """``Tensor[B, G]`` for ``std: Tensor[G]`` (float64)."""
        out = []
        for k in range(self.lam.shape[0]):
            var = self.lam[k][None] + std.pow(2)[:, None]  # [G, m]
            quad = self.z2[:, k] @ (1 / var).T  # [B, G]
            out.append(self.log_w[k] - 0.5 * (quad + var.log().sum(1) + self.m * math.log(2 * math.pi)))
        return torch.logsumexp(torch.stack(out), 0)


def grid_posterior(evidence: Evidence, points: int = 4000) -> tuple[Tensor, Tensor]:
    """``(log std grid [G], weights [B, G])`` of ``p(log std | y)`` over the prior's +-6 sd."""
    mu, s = PRIOR
    log_grid = torch.linspace(mu - 6 * s, mu + 6 * s, points, dtype=torch.float64)
    log_prior = -0.5 * ((log_grid - mu) / s) ** 2  # the density of log std, up to a constant
    return log_grid, torch.softmax(evidence(log_grid.exp()) + log_prior, 1)


def grid_quantiles(log_grid: Tensor, weights: Tensor, q: Tensor) -> Tensor:
    """``Tensor[B, L]``: the ``q`` quantiles of ``std`` (linear interpolation of the CDF)."""
    cdf = weights.cumsum(1)
    idx = torch.searchsorted(cdf, q.expand(weights.shape[0], -1).contiguous()).clamp(max=len(log_grid) - 1)
    return log_grid[idx].exp()


def grid_draws(log_grid: Tensor, weights: Tensor, n: int, seed: int) -> Tensor:
    """``Tensor[B, n]``: std draws from the grid posterior, jittered within their cell."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(weights, n, replacement=True, generator=gen)
    step = float(log_grid[1] - log_grid[0])
    return (log_grid[idx] + (torch.rand(idx.shape, generator=gen, dtype=torch.float64) - 0.5) * step).exp()


def exact_x(problem: ImageMixtureProblem, stds: Tensor, n: int, seed: int) -> Tensor:
    """``Tensor[B, n, *event]``: exact draws of ``p(x | y_b, std)``, the ``J`` noise levels
    ``stds: [B, J]`` taking ``n / J`` draws each (``J`` divides ``n``)."""
    B, J = stds.shape
    at = ImageMixtureProblem(
        problem.prior, problem.operator, problem.y_batch.repeat_interleave(J, 0), stds.reshape(-1).float()
    )
    draws = at.exact_posterior().sample(n // J, seed)  # [B * J, n / J, *event]
    return draws.reshape(B, n, *draws.shape[2:]).float()


def pixel_coverage(draws: Tensor, truth: Tensor) -> dict[str, float]:
    cov = coverage(draws.flatten(2), truth.flatten(1), [0.5, 0.9])
    return {"pixel_cov50": float(cov.overall[0]), "pixel_cov90": float(cov.overall[1])}


def std_metrics(draws: Tensor, true_std: Tensor, ref: dict[str, Tensor]) -> dict[str, object]:
    """Coverage of the true std by the draws' 90% interval, W1 / floor, mean shift (``draws: [B, n]``)."""
    n = draws.shape[1]
    lo, hi = torch.quantile(draws, torch.tensor([0.05, 0.95], dtype=draws.dtype), dim=1)
    covered = (lo <= true_std) & (true_std <= hi)
    M = ref["draws"].shape[1]
    quantiles = ref["draws"].sort(1).values[:, (torch.arange(n) * M) // n + M // (2 * n)]
    floors = torch.stack(
        [w1(grid_draws(ref["grid"], ref["weights"], n, 100 + r), quantiles) for r in range(50)]
    )
    ratio = w1(draws, quantiles) / floors.mean(0)
    return {
        "std_cov90": float(covered.double().mean()),
        "w1_over_floor": ratio.tolist(),
        "w1_over_floor_median": float(ratio.median()),
        "mean_shift_se": mean_shift(draws, ref["draws"]).tolist(),
        "sd_ratio": (draws.log().std(1) / ref["draws"].log().std(1)).tolist(),
    }


def run_joint(method: str, problem: ImageMixtureProblem, true_std: Tensor, ref: dict, args) -> dict:
    kept = args.iterations - args.burn_in
    loop = {"iterations": args.iterations} if method == "pmmh" else {"sweeps": args.iterations}
    start = time.perf_counter()
    r = ps.sample(
        problem, method, args.chains * kept, args.steps, seed=args.seed,
        particles=args.particles if method == "pmmh" else args.sweep_particles,
        burn_in=args.burn_in, **loop,
    )  # fmt: skip
    wall = time.perf_counter() - start
    acc = r.acceptance if method == "pmmh" else r.stats["theta_acceptance"]
    chains = r.stats["chain.std"].double()
    out = {
        "seconds": wall,
        "acceptance_after_burn_in": float(acc[:, args.burn_in :].double().mean()),
        "acceptance_per_iteration": acc.double().mean(0).tolist(),
        "rhat": [rhat(c) for c in chains],
        **std_metrics(r.parameters["std"].double(), true_std, ref),
        **pixel_coverage(r.samples, problem.truth),
    }
    if "log_evidence_chain" in r.stats:
        out["log_evidence_chain_sd_across_chains"] = (
            r.stats["log_evidence_chain"][:, :, -1].double().std(1).tolist()
        )
    return out


def plugin_std(problem: ImageMixtureProblem, args) -> tuple[Tensor, Tensor]:
    """``(std_hat [B], its log Z^ + log p [B])``: the maximiser over a coarse grid of 9 values
    (``mu +- 2.5 s`` in ``log std``) then a fine one of 9 around the best (``+- 1.25`` coarse
    steps), of TDS's evidence estimate plus the log prior density of ``log std``."""
    params, B = Parameters(problem), problem.batch_size
    mu, s = PRIOR
    centre, half = torch.full((B,), mu, dtype=torch.float64), 2.5 * s
    for stage in range(2):
        offsets = torch.linspace(-half, half, 9, dtype=torch.float64)
        log_std = centre[:, None] + offsets  # [B, 9]
        (at,) = params.instantiate(problem, {"std": log_std.exp()})
        r = ps.sample(at, "tds", args.plugin_particles, args.steps, seed=args.seed + 7 + stage)
        log_z = r.log_evidence.double().reshape(B, 9)
        score = log_z - 0.5 * ((log_std - mu) / s) ** 2
        best = score.argmax(1)
        centre, half = log_std[torch.arange(B), best], half / 4
    return centre.exp(), score.amax(1)


def run_plugin(problem: ImageMixtureProblem, true_std: Tensor, ref: dict, args) -> dict:
    n = args.chains * (args.iterations - args.burn_in)
    start = time.perf_counter()
    std_hat, _ = plugin_std(problem, args)
    noise = ps.noise.Gaussian(std_hat.float())
    at = ImageMixtureProblem(problem.prior, problem.operator, problem.y_batch, noise)
    r = ps.sample(at, "tds", n, args.steps, seed=args.seed)
    wall = time.perf_counter() - start
    known = ImageMixtureProblem(problem.prior, problem.operator, problem.y_batch, true_std.float())
    r_true = ps.sample(known, "tds", n, args.steps, seed=args.seed)
    post_sd = ref["draws"].log().std(1)
    return {
        "seconds": wall,
        "std_hat": std_hat.tolist(),
        "log_std_error_in_posterior_sd": ((std_hat.log() - true_std.log()) / post_sd).tolist(),
        "log_std_error_vs_exact_mode_in_posterior_sd": (
            (std_hat.log() - ref["mode"].log()) / post_sd
        ).tolist(),
        **pixel_coverage(r.samples, problem.truth),
        "exact_at_plugin": pixel_coverage(exact_x(problem, std_hat[:, None], n, args.seed), problem.truth),
        "exact_at_exact_mode": pixel_coverage(
            exact_x(problem, ref["mode"][:, None], n, args.seed), problem.truth
        ),
        "tds_at_true_std": pixel_coverage(r_true.samples, problem.truth),
    }


def _median(x: list[float]) -> float:
    return float(torch.tensor(x, dtype=torch.float64).nanmedian())


def table(out: dict) -> str:
    """The README's markdown table from the results ``out`` (medians over the problems)."""

    def cells(r: dict) -> str:
        acc = f"{r['acceptance_after_burn_in']:.2f}" if "acceptance_after_burn_in" in r else ""
        rh = f"{_median(r['rhat']):.2f}" if "rhat" in r else ""
        return (
            f"{r['std_cov90']:.2f} | {_median(r['w1_over_floor']):.1f} | "
            f"{_median(r['mean_shift_se']):+.1f} | "
            f"{_median(r['sd_ratio']):.2f} | {acc} | {rh} | {r['pixel_cov90']:.2f} / {r['pixel_cov50']:.2f}"
        )

    lines = [
        "| row | std: 90% coverage | W1(std) / floor | mean of log std: shift (se) | sd(log std) ratio "
        "| acceptance | R-hat | pixels: 90% / 50% coverage | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if "exact" in out:
        lines.append(f"| exact (grid quadrature; exact draws of `p(x \\| y)`) | {cells(out['exact'])} | |")
    for name, label in (("pgibbs", "`pgibbs`"), ("pmmh", "`pmmh`")):
        if name in out:
            lines.append(f"| {label} | {cells(out[name])} | {out[name]['seconds']:.0f} |")
    if "plugin" in out:
        p = out["plugin"]
        ratio = torch.tensor(p["std_hat"]) / torch.tensor(out["config"]["true_std"])
        lo, mid, hi = ratio.quantile(torch.tensor([0.1, 0.5, 0.9], dtype=ratio.dtype)).tolist()
        err = _median(p["log_std_error_in_posterior_sd"])
        cov = {
            k: f"{v['pixel_cov90']:.2f} / {v['pixel_cov50']:.2f}" for k, v in p.items() if isinstance(v, dict)
        }
        lines += [
            f"| plug-in: TDS-evidence mode, then `tds` | none (a point) | estimate / truth {mid:.2f} "
            f"(10-90%: {lo:.2f}-{hi:.2f}) | {err:+.1f} posterior sd | | | | "
            f"{p['pixel_cov90']:.2f} / {p['pixel_cov50']:.2f} | {p['seconds']:.0f} |",
            f"| exact `p(x \\| y, std)` at the plug-in's std | | | | | | | {cov['exact_at_plugin']} | |",
            f"| exact `p(x \\| y, std)` at the exact posterior's mode | | | | | | | "
            f"{cov['exact_at_exact_mode']} | |",
            f"| `tds` at the true std (known) | | | | | | | {cov['tds_at_true_std']} | |",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1,28,28")
    ap.add_argument("--operator", default="sr2")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--methods", default="exact,plugin,pgibbs,pmmh")
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--particles", type=int, default=32, help="pmmh's inner particles")
    ap.add_argument("--sweep-particles", type=int, default=16, help="pgibbs's particles per sweep")
    ap.add_argument("--plugin-particles", type=int, default=32, help="per TDS evidence run of the plug-in")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=12, help="iterations (pmmh) or sweeps (pgibbs)")
    ap.add_argument("--burn-in", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/image_unknown_noise.json")
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(1)
    problem, true_std = build(args)
    evidence = Evidence(problem)
    check = torch.tensor([0.05, 0.2], dtype=torch.float64)
    for v in check.tolist():  # the fast evidence against the oracle's
        at = ImageMixtureProblem(problem.prior, problem.operator, problem.y_batch[:2], v)
        err = (evidence(torch.tensor([v], dtype=torch.float64))[:2, 0] - at.exact_log_evidence()).abs().max()
        assert err < 1e-6 * evidence.m, f"evidence check at std {v}: {err}"
    log_grid, weights = grid_posterior(evidence)
    ref = {"grid": log_grid, "weights": weights, "draws": grid_draws(log_grid, weights, 6400, 1)}
    ref["mode"] = log_grid[weights.argmax(1)].exp()
    path = Path(args.out)
    out = json.loads(path.read_text()) if path.exists() else {}
    out["config"] = {**vars(args), "true_std": true_std.tolist(), "prior": f"LogNormal{PRIOR}"}
    n = args.chains * (args.iterations - args.burn_in)
    for method in args.methods.split(","):
        print(f"{method} ...", flush=True)
        if method == "exact":
            lo, hi = grid_quantiles(log_grid, weights, torch.tensor([0.05, 0.95], dtype=torch.float64)).T
            nodes = grid_quantiles(log_grid, weights, (torch.arange(8, dtype=torch.float64) + 0.5) / 8)
            row = {
                "std_cov90": float(((lo <= true_std) & (true_std <= hi)).double().mean()),
                "posterior_sd_log_std": ref["draws"].log().std(1).tolist(),
                "interval_width_rel": ((hi - lo) / ref["mode"]).tolist(),
                **std_metrics(grid_draws(log_grid, weights, n, 2), true_std, ref),
                **pixel_coverage(exact_x(problem, nodes, n, args.seed), problem.truth),
            }
        elif method == "plugin":
            row = run_plugin(problem, true_std, ref, args)
        else:
            row = run_joint(method, problem, true_std, ref, args)
        out[method] = row
        path.write_text(json.dumps(out, indent=1))
        brief = {k: v for k, v in row.items() if not isinstance(v, list)}
        print(method, json.dumps(brief), flush=True)
    print(table(out))


if __name__ == "__main__":
    main()
