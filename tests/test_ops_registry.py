"""The op registry, make_op, and what ops declare to the engine; rebuilding a store's fitted ops."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import gpuds
import gpuds.ops as ops_package
from gpuds.errors import ConfigError
from gpuds.ops import MODULES, Op, make_op, registry
from gpuds.ops.base import BarrierInput, Block, Spec
from gpuds.ops.stats import FittedOp


def test_registry_holds_every_op_defined_in_the_op_modules_by_its_name():
    ops = registry()
    assert all(cls.name == name for name, cls in ops.items())
    # Listed in the order of MODULES (a module may define several: resize, center_crop).
    order = [MODULES.index(cls.__module__.rsplit(".", 1)[1]) for cls in ops.values()]
    assert order == sorted(order) and list(ops)[6:8] == ["resize", "center_crop"]
    # Every op class of the package: a module left out of MODULES would be missed.
    modules = [
        importlib.import_module(m.name)
        for m in pkgutil.iter_modules(ops_package.__path__, "gpuds.ops.")
    ]
    defined = {
        cls
        for module in modules
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, Op) and "name" in vars(cls)
    }
    assert defined == set(ops.values())
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in modules) == sorted(
        [*MODULES, "base", "counting", "stats"]
    )
    with pytest.raises(ConfigError, match=f"unknown op 'sort'; valid: {', '.join(ops)}$"):
        make_op({"op": "sort"}, "ops[0]")


def test_ops_declare_what_the_engine_needs():
    ops = registry()
    assert [n for n, c in ops.items() if c.barrier] == ["shuffle"]
    assert [n for n, c in ops.items() if c.assigns_split] == ["split"]
    # dedupe's fit pass decides which samples repeat: it sees every split.
    assert [n for n, c in ops.items() if not c.fits_on_split] == ["dedupe", "sample", "split"]
    assert sorted(n for n, c in ops.items() if c.drops) == ["dedupe", "drop_invalid", "sample"]
    fitted = [n for n, c in ops.items() if issubclass(c, FittedOp)]
    assert fitted == ["standardize", "normalize", "clip", "fill_missing"]
    with pytest.raises(TypeError, match="op 'cast' is not a barrier"):
        cast = make_op({"op": "cast", "fields": "x", "dtype": "int8"}, "s")
        cast.materialize(iter([]), {}, BarrierInput(Path("."), 0, 1.0, False))


def test_make_op_seed_is_the_default_the_config_can_override():
    assert make_op({"op": "shuffle"}, "s", seed=7).seed == 7
    assert make_op({"op": "shuffle", "seed": 3}, "s", seed=7).seed == 3
    assert make_op({"op": "cast", "fields": "x", "dtype": "int8"}, "s", seed=7).seed == 7
    with pytest.raises(ConfigError, match=r"op 'split': seed: expected a number >= 0"):
        make_op({"op": "split", "fractions": [0.5, 0.5], "seed": -1}, "s")


def test_make_op_stats_only_for_ops_with_statistics():
    with pytest.raises(ConfigError, match=r"field 'x': expected a mapping with mean and std and"):
        make_op({"op": "standardize", "fields": "x"}, "s", stats={})
    fixed = make_op({"op": "clip", "fields": "x", "max": 1}, "s", stats={})
    assert fixed.fit_passes == 0 and fixed.stats() == {}, "fixed bounds: nothing to load"
    with pytest.raises(ConfigError, match=r"op 'split' has no statistics to load, got"):
        make_op({"op": "split", "fractions": [0.5, 0.5]}, "s", stats={"sizes": {"train": 1}})


def test_a_stores_recorded_ops_rebuild_and_reproduce_its_output(tmp_path: Path):
    """The settings and statistics preprocess records are what the ops applied: rebuilt from
    them with make_op, without fitting, the ops turn the input into the output exactly."""
    rng = np.random.default_rng(3)
    x = rng.normal(100, 15, size=(500, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    np.save(tmp_path / "x.npy", x)
    raw = tmp_path / "raw.zarr"
    gpuds.ingest([tmp_path / "x.npy"], raw)
    ops = [
        {"op": "fill_missing", "fields": "x", "strategy": "median", "per": "channel"},
        {"op": "clip", "fields": "x", "lower": 1, "upper": 99, "per": "channel"},
        {"op": "standardize", "fields": "x", "per": "channel", "dtype": "float64"},
        {"op": "normalize", "fields": "x", "range": [-1, 1]},
    ]
    config = {"ops": ops, "block_mb": 0.01}
    gpuds.preprocess(raw, tmp_path / "p.zarr", config=config, device="cpu")
    info = gpuds.read_info(zarr.open_group(tmp_path / "p.zarr", mode="r"), parsed=True)
    stats = {entry["index"]: entry["stats"] for entry in info.stats["ops"]}
    assert sorted(stats) == [0, 1, 2, 3]
    block = Block({"x": x}, np.arange(len(x)))
    specs = {"x": Spec(x.dtype, (3,))}
    for i, recorded in enumerate(info.history[-1]["settings"]["ops"]):
        settings = {k: v for k, v in recorded.items() if k != "seed"}
        op = make_op(settings, f"ops[{i}]", seed=recorded["seed"], stats=stats[i])
        assert op.fit_passes == 0
        specs = op.plan(specs)
        block = op.apply(block)
    written = zarr.open_group(tmp_path / "p.zarr", mode="r")["x"][...]
    assert written.dtype == block.fields["x"].dtype == np.float32
    np.testing.assert_array_equal(written, block.fields["x"])
