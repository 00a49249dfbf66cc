"""Simulation-based calibration of TDS and DPS on MNIST inpainting (issue 7).

``x ~ prior`` is a DDPM draw of the shipped MNIST model itself over the same ``--steps`` time grid
the samplers use (so the check is self-consistent); ``y`` observes the top half of ``x`` with noise
``0.1``; each method draws ``--draws`` posterior samples per problem and the rank of the true pixel
among them is tested for uniformity per pixel (chi-square, Bonferroni over the 784 pixels; ties of
clipped pixels broken at random). TDS draws come from independent particle systems (``mode="runs"``),
DPS draws are independent given ``y`` (``mode="draws"``). Coverage: share of true pixels inside
the central intervals of the draws. Only the hidden bottom half is informative: the observed top
half is pinned by ``y``, so the table reports the masked half separately.

Run (one thread; minutes on a loaded 2-core CPU)::

    python benchmarks/mnist_sbc.py --problems 32 --draws 7 --particles 4 --steps 20 \
        --out out/mnist_sbc

It prints a Markdown table (the one in ``benchmarks/README.md``) and writes rank histograms.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from method_spec import parse_method

import posterior as ps
from posterior.diagnostics import plots
from posterior.diagnostics.calibration import coverage, sbc_ranks, sbc_test, simulation_based_calibration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--draws", type=int, default=7)
    ap.add_argument("--particles", type=int, default=4, help="TDS particles per run")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument(
        "--methods",
        default="tds,dps",
        help='comma-separated; NAME:KEY=JSON;... passes options (tds:prior_var="covariance")',
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/mnist_sbc"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    prior = ps.load_prior("mnist")
    mask = ps.operators.half_mask(tuple(prior.event_shape), "bottom")
    op = ps.operators.Inpainting(mask)
    hidden = ~mask.reshape(-1).bool()
    rows, tests = [], {}
    for spec in args.methods.split(","):
        method, options = parse_method(spec)
        exact = ps.METHODS[method].exact
        t0 = time.perf_counter()
        cal = simulation_based_calibration(
            prior,
            op,
            0.1,
            method,
            num_problems=args.problems,
            num_draws=args.draws,
            num_particles=args.particles if exact else args.draws,
            num_steps=args.steps,
            seed=args.seed,
            **options,
        )
        seconds = time.perf_counter() - t0
        draws, truth = cal.draws.flatten(2), cal.truth.flatten(1)  # [B, L, 784], [B, 784]
        gen = torch.Generator().manual_seed(args.seed)
        masked = sbc_test(sbc_ranks(draws[..., hidden], truth[..., hidden], gen), args.draws)
        lv = [0.5, (args.draws - 1) / (args.draws + 1)]
        cov_h = coverage(draws[..., hidden], truth[..., hidden], lv)
        tests[f"{spec} (hidden half)"] = masked
        rows.append(
            {
                "method": spec,
                "mode": cal.mode,
                "problems": args.problems,
                "draws": args.draws,
                "particles": args.particles if exact else 1,
                "steps": args.steps,
                "sbc_p_all_pixels": cal.sbc.p_value,
                "sbc_p_hidden": masked.p_value,
                "max_chi2_hidden": float(masked.statistic.max()),
                "bins": masked.num_bins,
                "coverage_levels": lv,
                "coverage_hidden": cov_h.overall.tolist(),
                "coverage_hidden_se": cov_h.overall_stderr().tolist(),
                "seconds": seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mnist_sbc.json").write_text(json.dumps(rows, indent=2))
    plots.save_figure(plots.plot_rank_histograms(tests), args.out / "mnist_sbc_ranks.png")
    print()
    print(
        "| method | draws from | B | L | particles | steps | SBC p (hidden half) | SBC p (all pixels) "
        "| coverage hidden (levels) | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cov = ", ".join(
            f"{c:.3f}±{s:.3f} ({lvl:.2f})"
            for c, s, lvl in zip(
                r["coverage_hidden"], r["coverage_hidden_se"], r["coverage_levels"], strict=True
            )
        )
        print(
            f"| {r['method']} | {r['mode']} | {r['problems']} | {r['draws']} | {r['particles']} "
            f"| {r['steps']} | {r['sbc_p_hidden']:.3g} | {r['sbc_p_all_pixels']:.3g} | {cov} "
            f"| {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
