"""Check that the numbers the README shows are the ones its commands produce.

    python scripts/check_readme_numbers.py            # reruns the demo's 2-D part (seconds)
    python scripts/check_readme_numbers.py --image    # also reruns "Your own image" (minutes)

Each check reads numbers out of a README sentence or table and compares them, at the precision
the README prints, with a run made here (the demo's 2-D part; with ``--image`` the "Your own image"
command into a temporary folder) or with the files the README's figures come from
(``docs/figures/your_own_image/report.md``, ``docs/figures/demo_mnist.json``,
``docs/figures/mnist_inpainting.json``, ``docs/figures/photon_limited_mnist.json``). Wall times are
not checked (they depend on the machine). Exit status 1 names each mismatch.

The runs are deterministic for a given seed on one machine and PyTorch build; another platform can
differ in the last printed digit, which ``--tolerance`` (in units of that digit) allows.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
README = ROOT / "README.md"


class Checker:
    def __init__(self, readme: str, tolerance: int) -> None:
        self.readme = " ".join(readme.split())  # sentences wrap across lines
        self.tolerance = tolerance
        self.failures: list[str] = []
        self.checked = 0

    def find(self, what: str, pattern: str, after: str = "") -> re.Match | None:
        """The first match of ``pattern`` in the README after the text ``after``."""
        start = self.readme.find(after) if after else 0
        match = None if start < 0 else re.search(pattern, self.readme[start:])
        if match is None:
            self.failures.append(f"{what}: the README sentence was not found (pattern {pattern!r})")
        return match

    def same(self, what: str, shown: str, value: float) -> None:
        """``shown`` (as printed in the README) against ``value``, at the printed precision."""
        self.checked += 1
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        unit = 10.0**-decimals
        if abs(float(shown.replace(",", "")) - value) > (self.tolerance + 0.5) * unit + 1e-12:
            self.failures.append(f"{what}: README shows {shown}, the run gives {value:.{decimals}f}")


def run(argv: list[str]) -> None:
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def check_demo(c: Checker, tmp: Path) -> None:
    """The demo's 2-D part: sliced W1 of each method, the exact floor, the log-evidence errors."""
    out = tmp / "demo"
    run([sys.executable, "-m", "posterior.cli", "demo", "--no-image", "--quiet", "--out", str(out)])
    rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    m = c.find(
        "demo",
        r"Sliced W1 to 1000 exact posterior draws in that run: smc (?P<smc>[\d.]+), tds (?P<tds>[\d.]+) "
        r"\([^)]*\), mcgdiff (?P<mcgdiff>[\d.]+), dps (?P<dps>[\d.]+) \(exact vs exact: (?P<floor>[\d.]+)\); "
        r"the log-evidence is off by (?P<z_tds>[\d.]+) \(tds\), (?P<z_mcgdiff>[\d.]+) \(mcgdiff\), "
        r"(?P<z_smc>[\d.]+) \(smc\)",
    )
    if m is None:
        return
    for method in ("smc", "tds", "mcgdiff", "dps"):
        c.same(f"demo: {method} sliced W1", m[method], rows[method]["sw"])
    c.same("demo: exact floor", m["floor"], rows["tds"]["sw_floor"])
    for method in ("tds", "mcgdiff", "smc"):
        c.same(f"demo: {method} log-evidence error", m[f"z_{method}"], rows[method]["log_evidence_error"])


def check_demo_image(c: Checker) -> None:
    """The demo's image part against ``docs/figures/demo_mnist.json`` (its report.json)."""
    rows = {r["method"]: r for r in json.loads((FIGURES / "demo_mnist.json").read_text())["rows"]}
    m = c.find(
        "demo image",
        r"90% pixel coverage tds (?P<c_tds>[\d.]+), mcgdiff (?P<c_mcgdiff>[\d.]+), dps (?P<c_dps>[\d.]+); "
        r"PSNR of the posterior mean (?P<p_tds>[\d.]+), (?P<p_mcgdiff>[\d.]+) and (?P<p_dps>[\d.]+) dB",
    )
    if m is None:
        return
    for method in ("tds", "mcgdiff", "dps"):
        c.same(f"demo image: {method} coverage", m[f"c_{method}"], rows[method]["coverage90"])
        c.same(f"demo image: {method} PSNR", m[f"p_{method}"], rows[method]["psnr"])


def _report_numbers(text: str) -> dict[str, str]:
    """The numbers of a ``posterior sample`` report.md."""
    pats = {
        "log_evidence": r"log p\(y\) estimated at (-?[\d.]+) nats",
        "evaluations": r"network calls: ([\d,]+) evaluations",
        "std_mean": r"posterior std per pixel: mean ([\d.]+)",
        "std_max": r"posterior std per pixel: mean [\d.]+, max ([\d.]+)",
    }
    found = {}
    for key, pat in pats.items():
        m = re.search(pat, text)
        if m:
            found[key] = m[1]
    return found


def check_your_own_image(c: Checker, tmp: Path | None) -> None:
    """README's "Your own image" numbers against the stored report, and (``tmp``) a rerun's."""
    stored = _report_numbers((FIGURES / "your_own_image" / "report.md").read_text())
    m = c.find(
        "your own image",
        r"\[this run's\]\(docs/figures/your_own_image/report\.md\): (?P<evaluations>[\d,]+) network "
        r"evaluations[^,]*, log-evidence (?P<log_evidence>-?[\d.]+) nats",
    )
    if m is not None:
        for key in ("evaluations", "log_evidence"):
            c.same(f"your own image: {key} (stored report)", m[key], float(stored[key].replace(",", "")))
    m = c.find("your own image std", r"`std.png` \(mean (?P<std_mean>[\d.]+), at most (?P<std_max>[\d.]+)")
    if m is not None:
        for key in ("std_mean", "std_max"):
            c.same(f"your own image: {key} (stored report)", m[key], float(stored[key]))
    if tmp is None:
        return
    digit, mask, out = tmp / "digit.png", tmp / "mask.png", tmp / "my_digit"
    code = (
        "import posterior as ps, sys; x, _ = ps.priors.mnist_heldout(8); "
        "ps.io.save_image(x[0], sys.argv[1]); "
        "ps.io.save_image(ps.operators.half_mask((28, 28)).float() * 2 - 1, sys.argv[2])"
    )
    run([sys.executable, "-c", code, str(digit), str(mask)])
    settings = re.search(r"posterior sample (--prior mnist .*?--out) \S+", c.readme)
    if settings is None:
        c.failures.append("your own image: the README's posterior sample command was not found")
        return
    args = settings[1].replace("out/digit.png", str(digit)).replace("out/mask.png", str(mask))
    args = args.replace("\\", " ").split()[:-1]  # without --out
    run([sys.executable, "-m", "posterior.cli", "sample", *args, "--quiet", "--out", str(out)])
    rerun = _report_numbers((out / "report.md").read_text())
    for key, shown in stored.items():
        c.same(f"your own image: {key} (rerun)", shown, float(rerun[key].replace(",", "")))


def check_example(c: Checker, name: str, methods: list[str]) -> None:
    """An example's README table (PSNR, coverage) against its JSON in docs/figures."""
    numbers = json.loads((FIGURES / f"{name}.json").read_text())["methods"]
    for method in methods:
        m = c.find(
            f"{name} {method}",
            rf"\| {method}[^|]* \| (?P<psnr>[\d.]+) \| (?P<cov>[\d.]+) \|",
            after=f"python examples/{name}.py",
        )
        if m is None:
            continue
        c.same(f"{name}: {method} PSNR", m["psnr"], numbers[method]["psnr_mean_db"])
        c.same(f"{name}: {method} coverage", m["cov"], numbers[method]["coverage_90"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", action="store_true", help="also rerun the README's 'Your own image' command")
    p.add_argument("--tolerance", type=int, default=0, help="allowed difference in units of the last digit")
    args = p.parse_args(argv)
    c = Checker(README.read_text(), args.tolerance)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        checks = [
            ("demo", lambda: check_demo(c, tmp)),
            ("demo image", lambda: check_demo_image(c)),
            ("your own image", lambda: check_your_own_image(c, tmp if args.image else None)),
            (
                "mnist_inpainting",
                lambda: check_example(c, "mnist_inpainting", ["tds", "smc", "mcgdiff", "dps"]),
            ),
            ("photon_limited_mnist", lambda: check_example(c, "photon_limited_mnist", ["tds", "dps"])),
        ]
        for name, check in checks:
            try:
                check()
            except (OSError, KeyError, ValueError, subprocess.CalledProcessError) as err:
                c.failures.append(f"{name}: {type(err).__name__}: {err}")
    for text in c.failures:
        print(f"MISMATCH {text}")
    print(f"{c.checked} numbers checked, {len(c.failures)} mismatches")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
