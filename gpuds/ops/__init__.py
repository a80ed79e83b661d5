"""Preprocessing operations, one module each, registered by their :attr:`Op.name`.

The contract is :mod:`gpuds.ops.base`; ops with fitted statistics build on
:class:`gpuds.ops.stats.FittedOp`. A new op is one module here plus its line in :data:`MODULES`
(docs/DEVELOPING.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any

from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Op, Spec

__all__ = ["MODULES", "Block", "Op", "Spec", "make_op", "registry"]

MODULES = (
    "cast",
    "standardize",
    "normalize",
    "clip",
    "fill_missing",
    "drop_invalid",
    "resize",
    "dedupe",
    "sample",
    "shuffle",
    "split",
)
"""The modules of ``gpuds.ops`` that define ops, in the order ops are listed to users; each op
class defined in one (a subclass of :class:`Op` with its own ``name``) is registered."""


def registry() -> dict[str, type[Op]]:
    """Every op class by its ``name`` (importing the op modules on first use).

    Examples
    --------
    >>> list(registry())[:3]
    ['cast', 'standardize', 'normalize']
    """
    return dict(_registry())


@cache
def _registry() -> dict[str, type[Op]]:
    found: dict[str, type[Op]] = {}
    for module_name in MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for cls in vars(module).values():
            if (
                isinstance(cls, type)
                and issubclass(cls, Op)
                and cls.__module__ == module.__name__
                and "name" in vars(cls)
            ):
                if cls.name in found:
                    raise RuntimeError(f"two ops are named {cls.name!r}")
                found[cls.name] = cls
    return found


def make_op(
    config: Mapping[str, Any],
    where: str,
    *,
    seed: int | None = None,
    stats: Mapping[str, Any] | None = None,
) -> Op:
    """Build the op ``config["op"]`` from its config mapping.

    Parameters
    ----------
    config
        The op's settings, as in a pipeline config (``{"op": "clip", "fields": ...}``) or as
        :meth:`Op.to_dict` gives them.
    where
        How errors name the config (``ops[3]``).
    seed
        The op's seed when its config sets none (the engine derives one per op from the
        pipeline's ``seed``).
    stats
        Statistics the op fitted before (:meth:`Op.stats`, a store's ``stats.ops[k].stats``):
        the op applies them instead of fitting.

    Examples
    --------
    >>> op = make_op({"op": "clip", "fields": "x", "upper": 99}, "ops[0]",
    ...              stats={"x": {"max": [4.5], "per": "none"}})
    >>> op.fit_passes, op.stats()
    (0, {'x': {'max': [4.5], 'per': 'none'}})
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping with an 'op' key, got {config!r}")
    ops = registry()
    name = config.get("op")
    if name not in ops:
        raise ConfigError(f"{where}: unknown op {name!r}; valid: {', '.join(ops)}")
    op = ops[str(name)](config)
    if seed is not None and "seed" not in config:
        op.seed = seed
    if stats is not None:
        op.load_stats(stats)
    return op
