"""Speed of one engine step's particle bookkeeping: weighting + ESS + resampling.

For ``N`` particles of one problem (float32 log-weights), time

    log_w <- normalise(log_w + log_g);  ess(log_w);  ancestors <- scheme(log_w)

with :mod:`posterior.particles` (torch) against a plain NumPy implementation of the same scheme
measured in the same run, and against a memory-bandwidth floor: the bytes the operation must
touch (read ``log_w`` and ``log_g``, write ``log_w``, write int64 ancestors: 20 bytes per
particle) over the copy rate measured here (a 256 MiB copy into a preallocated tensor, read +
write). Least CPU time of ``--repeats`` runs, one thread unless ``--threads`` says otherwise.

    PYTHONPATH=. python benchmarks/engine_speed.py --out benchmarks/results/engine_speed.md
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from posterior.particles.resampling import RESAMPLERS, ess


# ----------------------------------------------------------------------------- NumPy reference
def np_normalise(log_w: np.ndarray, log_g: np.ndarray) -> np.ndarray:
    lw = log_w + log_g
    m = lw.max()
    return lw - (m + np.log(np.exp(lw - m).sum()))


def np_ess(lw: np.ndarray) -> float:
    w = np.exp(lw)
    return 1.0 / np.sum(w * w)


def np_search(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1)


def np_multinomial(lw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(np.exp(lw))
    cdf /= cdf[-1]
    return np_search(cdf, rng.random(lw.size))


def np_stratified(lw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = lw.size
    cdf = np.cumsum(np.exp(lw))
    cdf /= cdf[-1]
    return np_search(cdf, (np.arange(n) + rng.random(n)) / n)


def np_systematic(lw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = lw.size
    cdf = np.cumsum(np.exp(lw))
    cdf /= cdf[-1]
    return np_search(cdf, (np.arange(n) + rng.random()) / n)


def np_residual(lw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = lw.size
    nw = n * np.exp(lw.astype(np.float64))
    counts = np.floor(nw).astype(np.int64)
    det = np.repeat(np.arange(n), counts)
    rest = n - det.size
    resid = nw - counts
    cdf = np.cumsum(resid)
    cdf /= cdf[-1]
    return np.concatenate([det, np_search(cdf, rng.random(rest))])


NUMPY: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "multinomial": np_multinomial,
    "stratified": np_stratified,
    "systematic": np_systematic,
    "residual": np_residual,
}


# ----------------------------------------------------------------------------- timing
def torch_step(log_w: torch.Tensor, log_g: torch.Tensor, resample: Callable, gen: torch.Generator) -> None:
    lw = log_w + log_g
    lw -= torch.logsumexp(lw, -1, keepdim=True)  # in place: no second [B, N] buffer
    ess(lw)
    resample(lw, gen)


def numpy_step(np_w: np.ndarray, np_g: np.ndarray, resample: Callable, rng: np.random.Generator) -> None:
    lw = np_normalise(np_w, np_g)
    np_ess(lw)
    resample(lw, rng)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Least CPU (process) time over ``repeats`` calls: one thread, robust to a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def copy_rate(repeats: int) -> float:
    """Bytes per second of a 256 MiB float32 copy into a preallocated tensor (read + write)."""
    x, y = torch.rand(64 * 2**20), torch.empty(64 * 2**20)
    y.copy_(x)  # touch the pages once
    t = best_of(lambda: y.copy_(x), repeats)
    return 2 * x.numel() * 4 / t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6, 1e7])
    p.add_argument("--schemes", nargs="+", default=sorted(RESAMPLERS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/engine_speed.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rate = copy_rate(args.repeats)
    lines = [
        f"copy rate: {rate / 1e9:.1f} GB/s (256 MiB copy_, read + write), {args.threads} thread(s), "
        "CPU ms (process time)",
        "",
        "| N | scheme | torch ms | NumPy ms | NumPy / torch | floor ms | torch / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in (int(s) for s in args.sizes):
        gen = torch.Generator().manual_seed(0)
        log_w = torch.randn(1, n, generator=gen) - np.log(n)
        log_g = torch.randn(1, n, generator=gen)
        np_w, np_g = log_w[0].numpy().copy(), log_g[0].numpy().copy()
        rng = np.random.default_rng(0)
        floor = 20 * n / rate
        for scheme in args.schemes:
            resample = RESAMPLERS[scheme]
            t_torch = best_of(partial(torch_step, log_w, log_g, resample, gen), args.repeats)
            t_np = best_of(partial(numpy_step, np_w, np_g, NUMPY[scheme], rng), args.repeats)
            lines.append(
                f"| {n:.0e} | {scheme} | {1e3 * t_torch:.2f} | {1e3 * t_np:.2f} | {t_np / t_torch:.2f} "
                f"| {1e3 * floor:.2f} | {t_torch / floor:.1f} |"
            )
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
