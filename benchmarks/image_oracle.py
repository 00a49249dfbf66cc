"""Every method against the exact posterior at image size: ``ps.problems.gmm_image``.

For each operator and step count, ``--problems`` problems with truths drawn from the image mixture
(``gmm_image(shape, operator, noise)``), ``--draws`` draws per problem from each method, and from the
exact posterior (Matheron's rule; two independent sets). Columns:

- ``cov90`` / ``cov50``: share of truths inside the per-pixel central 90% / 50% intervals of the draws
  (hidden pixels for the two inpaintings, every pixel otherwise); the exact rows give the exact
  draws' own (the target, up to Monte Carlo error).
- ``SW/floor``: sliced W1 (100 directions, in ``d`` dimensions) between the method's draws and exact
  set 1, averaged over problems, over the same between exact sets 2 and 1.
- ``logZ err``: mean over problems of ``log_evidence - exact log p(y)`` (exact methods).
- ``SBC p``: chi-square SBC of the truth's rank among the draws over the problems (per pixel of the
  same pixels, Bonferroni); a particle sampler with ``runs > 1`` contributes one draw per run
  (independent draws), others every draw. Weak at a few problems.
- ``calls/draw``: network evaluations plus VJPs per returned draw; ``s``: wall seconds of the run.
- ``warned``: whether the run raised a ``ParticleDegeneracyWarning`` (``yes``) or not (blank).

The exact posterior is that of the continuous prior; a sampler simulating a ``K``-step chain
converges to that chain's posterior, which tends to it as ``K`` grows.

Run (one thread)::

    nice -n 5 python benchmarks/image_oracle.py --problems 4 --draws 128 --steps 25,100 \
        --out benchmarks/results/image_oracle_1x28x28.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from method_spec import parse_method

import posterior as ps
from posterior.diagnostics.calibration import coverage, sbc_ranks, sbc_test
from posterior.diagnostics.distances import sliced_wasserstein
from posterior.problems_image import IMAGE_OPERATORS, gmm_image

DEFAULT_METHODS = 'tds,tds:runs=1;prior_var="auto",mcgdiff,smc,dps,pigdm,ddrm,mmps'


def hidden_pixels(problem: ps.InverseProblem) -> torch.Tensor:
    """``BoolTensor[d]``: the pixels an inpainting does not observe (every pixel otherwise)."""
    d = problem.prior.event_shape
    if type(problem.operator).__name__ != "Inpainting":
        return torch.ones(int(torch.tensor(d).prod()), dtype=torch.bool)
    seen = problem.operator.A_adjoint(torch.ones(1, *problem.obs_shape, dtype=problem.prior.dtype))
    return seen.reshape(-1) == 0


def metrics(draws, truth, e1, e2, pixels, sbc_draws=None) -> dict:
    """Coverage, sliced W1 over the floor, SBC for ``draws: [B, N, d]`` (flattened images)."""
    cov = coverage(draws[..., pixels], truth[:, pixels], [0.5, 0.9])
    sw = sliced_wasserstein(draws.double(), e1, seed=0).mean()
    floor = sliced_wasserstein(e2, e1, seed=0).mean()
    s = draws if sbc_draws is None else sbc_draws
    try:
        sbc = sbc_test(sbc_ranks(s[..., pixels].double(), truth[:, pixels].double()), s.shape[1]).p_value
    except ValueError:  # too few problems for two rank bins
        sbc = float("nan")
    return {"cov90": cov.at(0.9), "cov50": cov.at(0.5), "sw_ratio": float(sw / floor), "sbc_p": sbc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1,28,28")
    ap.add_argument("--operators", default=",".join(IMAGE_OPERATORS))
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated NAME[:KEY=JSON;...]")
    ap.add_argument("--steps", default="25,100")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--draws", type=int, default=128)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.shape.split(","))
    rows = []
    head = ["operator", "steps", "method", "cov90", "cov50", "SW/floor", "logZ err", "SBC p", "calls/draw"]
    print("| " + " | ".join([*head, "s", "warned"]) + " |")
    print("|---" * (len(head) + 2) + "|")
    for op in args.operators.split(","):
        t0 = time.time()
        problem = gmm_image(shape, op, args.noise, args.problems, args.seed)
        post = problem.exact_posterior()
        pixels = hidden_pixels(problem)
        exact = post.sample(2 * args.draws, args.seed + 1).flatten(2)
        e1, e2 = exact[:, : args.draws], exact[:, args.draws :]
        truth = problem.truth.flatten(1)
        ref = post.log_evidence
        m = metrics(e1, truth, e1, e2, pixels) | {"sw_ratio": 1.0}
        row = {"operator": op, "steps": "-", "method": "exact", **m, "oracle_s": time.time() - t0}
        rows.append(row)
        print(f"| {op} | - | exact | {m['cov90']:.2f} | {m['cov50']:.2f} | 1.0 | 0 | {m['sbc_p']:.2g} | | "
              f"{row['oracle_s']:.0f} (oracle) |", flush=True)  # fmt: skip
        for steps in (int(s) for s in args.steps.split(",")):
            for spec in args.methods.split(","):
                name, options = parse_method(spec)
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", ps.ParticleDegeneracyWarning)
                        r = ps.sample(
                            problem, name, args.draws, steps, seed=args.seed, progress=False, **options
                        )
                    warned = any(issubclass(w.category, ps.ParticleDegeneracyWarning) for w in caught)
                except (ValueError, NotImplementedError) as err:
                    print(
                        f"| {op} | {steps} | {spec} | skipped: {str(err).splitlines()[0][:80]} |", flush=True
                    )
                    continue
                draws = r.samples.flatten(2)
                one = None
                if int(r.options.get("runs", 1)) > 1:
                    one = r.one_per_run(seed=args.seed).samples.flatten(2)
                m = metrics(draws, truth, e1, e2, pixels, one)
                err = None if r.log_evidence is None else float((r.log_evidence.double() - ref).mean())
                calls = (r.num_evals + r.num_vjps) / draws.shape[0] / draws.shape[1]
                row = {"operator": op, "steps": steps, "method": spec, **m, "logz_err": err}
                row |= {"calls_per_draw": calls, "seconds": r.wall_time, "runs": r.options.get("runs")}
                row["warned"] = warned
                rows.append(row)
                e = "" if err is None else f"{err:.1f}"
                cells = f"{m['cov90']:.2f} | {m['cov50']:.2f} | {m['sw_ratio']:.2f} | {e} | {m['sbc_p']:.2g}"
                flag = "yes" if warned else ""
                cells += f" | {calls:.0f} | {r.wall_time:.0f} | {flag}"
                print(f"| {op} | {steps} | {spec} | {cells} |", flush=True)
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    meta = {
                        "shape": shape,
                        "problems": args.problems,
                        "draws": args.draws,
                        "noise": args.noise,
                    }
                    args.out.write_text(json.dumps({"args": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
