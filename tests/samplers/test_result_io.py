"""``Result.save`` / ``ps.Result.load``: one safetensors file, exact round trip, no pickle."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import posterior as ps
from posterior.samplers.result_io import FORMAT, save_result


def _assert_same(a: ps.Result, b: ps.Result) -> None:
    for name in a.__dataclass_fields__:
        va, vb = getattr(a, name), getattr(b, name)
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), name
        elif name == "stats":
            assert va.keys() == vb.keys()
            for k in va:
                assert va[k].dtype == vb[k].dtype and torch.equal(va[k], vb[k]), k
        else:
            assert type(va) is type(vb) and va == vb, name


@pytest.mark.parametrize("batched", [False, True])
def test_round_trip_of_a_run_is_exact(tmp_path: Path, batched: bool) -> None:
    problem = ps.problems.gmm_benchmark(dim=4, obs_dim=2, seed=0)
    if batched:
        problem = ps.problems.simulate(problem.prior, problem.operator, 0.5, num_problems=3, seed=1)
    result = ps.sample(problem, "tds", num_particles=16, num_steps=5, seed=0, prior_var=math.inf)
    assert result.options["prior_var"] == math.inf and result.resampled.dtype == torch.bool
    path = result.save(tmp_path / "run.safetensors")
    back = ps.Result.load(path)
    _assert_same(result, back)
    assert back.batched == batched and back.log_evidence.shape == ((3,) if batched else ())


def test_options_of_every_kind_and_absent_fields(tmp_path: Path) -> None:
    r = ps.Result(
        samples=torch.randn(5, 2, dtype=torch.float64),
        method="x",
        ess=torch.arange(3.0),
        num_evals=7,
        wall_time=0.1 + 0.2,  # not a short decimal: JSON must keep every bit
        options={
            "a": (1, 2.5, "s"),
            "b": [None, True, {"c": float("nan"), "d": -math.inf}],
            "t": torch.tensor([1, 2], dtype=torch.int32),
        },
        stats={"acc": torch.ones(3, dtype=torch.float16), "flags": torch.tensor([True, False])},
        batched=False,
    )
    r.save(tmp_path / "r.safetensors")
    back = ps.Result.load(tmp_path / "r.safetensors")
    assert back.log_evidence is None and back.truth is None and back.wall_time == 0.1 + 0.2
    assert back.options["a"] == (1, 2.5, "s") and back.options["b"][:2] == [None, True]
    assert math.isnan(back.options["b"][2]["c"]) and back.options["b"][2]["d"] == -math.inf
    assert torch.equal(back.options["t"], r.options["t"]) and back.options["t"].dtype == torch.int32
    r.options = back.options = {}  # NaN != NaN: the rest compared field by field
    _assert_same(r, back)


def test_file_is_plain_safetensors_with_json_metadata(tmp_path: Path) -> None:
    r = ps.Result(samples=torch.zeros(2, 3), method="x", batched=False)
    r.save(tmp_path / "r.safetensors")
    with safe_open(str(tmp_path / "r.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"samples"}
        meta = json.loads(f.metadata()[FORMAT])
    assert meta["method"] == "x" and meta["present"] == ["samples"]


def test_objects_that_are_not_data_come_back_as_their_repr(tmp_path: Path) -> None:
    r = ps.Result(samples=torch.zeros(2, 3), method="x", options={"move": print}, batched=False)
    with pytest.warns(UserWarning, match=r"options\.move cannot be stored"):
        r.save(tmp_path / "r.safetensors")
    assert ps.Result.load(tmp_path / "r.safetensors").options["move"] == repr(print)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no saved Result"):
        ps.Result.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="cannot read"):
        ps.Result.load(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="not a saved Result"):
        ps.Result.load(tmp_path / "weights.safetensors")
    with pytest.raises(TypeError, match="must be a Result"):
        save_result("nope", tmp_path / "x.safetensors")


def test_option_keys_with_dots_keep_their_own_tensors(tmp_path: Path) -> None:
    """``{"a.b": t1, "a": {"b": t2}}`` and ``{"x.0": t3, "x": [t4]}`` would share a tensor name if
    names were the dotted paths alone; each option gets its own tensor back."""
    t = [torch.full((2,), float(i)) for i in range(4)]
    options = {"a.b": t[0], "a": {"b": t[1]}, "x.0": t[2], "x": [t[3]]}
    r = ps.Result(samples=torch.zeros(2, 3), method="x", options=options, stats={"a.b": t[0]}, batched=False)
    back = ps.Result.load(r.save(tmp_path / "r.safetensors"))
    assert torch.equal(back.options["a.b"], t[0]) and torch.equal(back.options["a"]["b"], t[1])
    assert torch.equal(back.options["x.0"], t[2]) and torch.equal(back.options["x"][0], t[3])
    assert torch.equal(back.stats["a.b"], t[0])


def test_numpy_scalars_and_arrays_come_back_as_numbers_and_arrays(tmp_path: Path) -> None:
    import numpy as np

    options = {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "arr": np.arange(3.0)}
    r = ps.Result(samples=torch.zeros(2, 3), method="x", options=options, batched=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all of them are data: no "saved as its repr" warning
        back = ps.Result.load(r.save(tmp_path / "r.safetensors"))
    assert back.options["f"] == 0.5 and type(back.options["f"]) is float
    assert back.options["i"] == 3 and type(back.options["i"]) is int
    assert back.options["b"] is True
    assert isinstance(back.options["arr"], np.ndarray) and np.array_equal(back.options["arr"], np.arange(3.0))


@pytest.mark.parametrize(
    "metadata",
    [
        "{not json",
        "[1, 2]",
        '{"version": 1}',
        '{"version": 1, "present": ["samples"], "method": "x", "num_evals": 0, "num_vjps": 0, '
        '"wall_time": 0.0, "batched": false, "stats": [], "options": {"__what__": 1}}',
        '{"version": 1, "present": ["samples"], "method": "x", "num_evals": 0, "num_vjps": 0, '
        '"wall_time": 0.0, "batched": false, "stats": ["gone"], "options": {"__dict__": {}}}',
    ],
)
def test_malformed_metadata_is_one_line_naming_the_file(tmp_path: Path, metadata: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"samples": torch.zeros(2, 3)}, str(path), metadata={FORMAT: metadata})
    with pytest.raises(ValueError, match=r"bad\.safetensors.*malformed") as err:
        ps.Result.load(path)
    assert "\n" not in str(err.value)
