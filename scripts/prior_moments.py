"""Write a shipped prior's moment estimate beside its weights (``moments.safetensors``).

TDS's covariance twist (and every sampler that asks ``prior.moments()`` / ``prior.covariance()``)
needs the prior's mean, variance and covariance. A network prior estimates them from its own
ancestral draws (``prior.moment_draws`` draws of ``prior.moment_steps`` steps, seed 0): for the
shipped MNIST prior 6,400 network evaluations, over a minute on a CPU. This script computes that
estimate once, with exactly the code a process would run, and stores it where ``ps.load_prior``
finds it; the file's fingerprint (a hash of the weights and settings) makes a stale file ignored.

    python scripts/prior_moments.py mnist
    python scripts/prior_moments.py mnist --check   # recompute and compare with the stored file
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import posterior as ps
from posterior.priors import moment_cache
from posterior.priors.shipped import moments_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", nargs="?", default="mnist", help="a shipped prior (default mnist)")
    parser.add_argument("--check", action="store_true", help="recompute and compare with the stored file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    prior = ps.load_prior(args.name)
    key = moment_cache.fingerprint(prior)
    if key is None:
        print(f"{args.name}: no network weights to fingerprint", file=sys.stderr)
        return 2
    start = time.perf_counter()
    (mean, var), cov = prior.estimate_moments()
    seconds = time.perf_counter() - start
    path = moments_path(args.name)
    if args.check:
        stored = moment_cache.load_moments(path, key, prior)
        if stored is None:
            print(f"{path}: missing or written for other weights", file=sys.stderr)
            return 1
        same = all(torch.equal(a, b) for a, b in zip(stored, (mean, var, cov), strict=True))
        print(f"{path}: {'matches' if same else 'DIFFERS FROM'} the recomputed estimate ({seconds:.1f} s)")
        return 0 if same else 1
    written = moment_cache.save_moments(path, key, mean, var, cov)
    if written is None:
        print(f"cannot write {path}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({seconds:.1f} s to estimate, fingerprint {key[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
