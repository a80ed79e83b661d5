"""Preprocessing operations, one module each, looked up by name (see :mod:`gpuds.ops.base`)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Op, Spec

__all__ = ["OPS", "Block", "Op", "Spec", "make_op"]

# Name -> "module:class", imported on first use.
OPS: dict[str, str] = {
    "cast": "gpuds.ops.cast:Cast",
    "standardize": "gpuds.ops.standardize:Standardize",
    "normalize": "gpuds.ops.normalize:Normalize",
    "clip": "gpuds.ops.clip:Clip",
    "fill_missing": "gpuds.ops.fill_missing:FillMissing",
    "drop_invalid": "gpuds.ops.drop_invalid:DropInvalid",
    "resize": "gpuds.ops.resize:Resize",
    "center_crop": "gpuds.ops.resize:CenterCrop",
    "dedupe": "gpuds.ops.dedupe:Dedupe",
    "sample": "gpuds.ops.sample:Sample",
    "shuffle": "gpuds.ops.shuffle:Shuffle",
    "split": "gpuds.ops.split:Split",
}


def make_op(config: Mapping[str, Any], where: str, seed: int | None = None) -> Op:
    """Build the op ``config["op"]`` from its config mapping."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping with an 'op' key, got {config!r}")
    name = config.get("op")
    if name not in OPS:
        raise ConfigError(f"{where}: unknown op {name!r}; valid: {', '.join(OPS)}")
    module_name, class_name = OPS[str(name)].split(":")
    cls: type[Op] = getattr(importlib.import_module(module_name), class_name)
    op = cls(config)
    if seed is not None:
        op.seed = seed
    return op
