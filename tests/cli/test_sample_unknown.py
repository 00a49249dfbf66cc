"""``posterior sample --noise ? --operator blur:gaussian:?``: parsing, the problem it builds, and the
report's table of the unknowns (the full command runs in minutes on a CPU: checked by hand)."""

from __future__ import annotations

from types import SimpleNamespace

import pyro.distributions as dist
import pytest
import torch

import posterior as ps
from posterior.cli import build_parser
from posterior.cli.operator_spec import build_operator, parse_operator
from posterior.cli.sample import JOINT_METHOD, _noise, noise_level
from posterior.diagnostics.parameters import parameter_lines, plot_parameters, rhat
from posterior.parameters import Parameters


def test_question_marks_parse_to_unknowns() -> None:
    args = build_parser().parse_args(
        ["sample", "--observation", "y.png", "--operator", "blur:gaussian:?", "--noise", "?"]
    )
    assert args.noise == "?" and noise_level("0.2") == 0.2 and JOINT_METHOD == "pmmh"
    spec = parse_operator("blur:gaussian:?")
    assert spec.unknown and spec.kind == "blur" and not parse_operator("blur:gaussian:1.5").unknown
    prior = ps.problems.gmm_prior_grid(4, torch.Generator().manual_seed(0))
    with pytest.raises(Exception, match="image prior"):
        build_operator(spec, prior)
    image = SimpleNamespace(event_shape=(1, 8, 8), device=torch.device("cpu"), dtype=torch.float32)
    op = build_operator(spec, image)  # the family of Gaussian blurs over the unknown width
    assert set(op.unknowns) == {"width"} and op.in_shape == (1, 8, 8)
    assert torch.equal(op.at(width=2.0).kernel, ps.operators.gaussian_kernel(2.0))
    noise = _noise("?")
    assert noise.unknowns["std"].name == "noise_std" and _noise(0.1) == 0.1


def test_report_lines_and_figure_of_the_unknowns() -> None:
    base = ps.problems.gmm_benchmark(4, 2, seed=0)
    noise = ps.noise.Gaussian(ps.Unknown(dist.LogNormal(-1.0, 0.5)))
    problem = ps.InverseProblem(base.prior, base.operator, base.y, noise)
    assert Parameters(problem).names == ["std"]
    r = ps.sample(problem, "pmmh", 8, 3, seed=0, particles=4, iterations=6, burn_in=2)
    lines = "\n".join(parameter_lines(r, truth={"std": 0.4}))
    assert "| std |" in lines and "90% interval" in lines and "0.4" in lines and "Acceptance" in lines
    fig = plot_parameters(r, truth={"std": 0.4})
    assert len(fig.axes) == 1
    chains = torch.randn(4, 500, generator=torch.Generator().manual_seed(0))
    assert abs(rhat(chains) - 1) < 0.01 and rhat(chains + torch.arange(4.0)[:, None] * 3) > 1.5
