"""Drive one op the way the preprocess engine does, on in-memory arrays (for op unit tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.ops.base import Block, Op, Spec


def specs_of(
    arrays: Mapping[str, np.ndarray], kinds: Mapping[str, str] | None = None
) -> dict[str, Spec]:
    kinds = kinds or {}
    return {
        name: Spec(a.dtype, tuple(a.shape[1:]), kinds.get(name, "array"))
        for name, a in arrays.items()
    }


def blocks_of(arrays: Mapping[str, np.ndarray], block: int, xp: Any = np) -> list[Block]:
    n = len(next(iter(arrays.values())))
    out = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        out.append(
            Block(
                {k: xp.asarray(v[start:stop]) for k, v in arrays.items()},
                xp.arange(start, stop, dtype=xp.int64),
            )
        )
    return out


def run_op(
    op: Op,
    arrays: Mapping[str, np.ndarray],
    *,
    block: int = 7,
    kinds: Mapping[str, str] | None = None,
    xp: Any = np,
) -> tuple[dict[str, np.ndarray], dict[str, Spec]]:
    """Plan, fit (all passes) and apply ``op`` over ``arrays`` split into blocks of ``block``.

    Returns the concatenated outputs (on the host) and the planned output specs.
    """
    out_specs = op.plan(specs_of(arrays, kinds))
    for p in range(op.fit_passes):
        op.fit_start(p)
        for b in blocks_of(arrays, block, xp):
            op.fit_block(b)
        op.fit_end(p)
    op.reset()
    results = [op.apply(b) for b in blocks_of(arrays, block, xp)]
    merged: dict[str, np.ndarray] = {}
    for name in out_specs:
        parts = [r.fields[name] for r in results]
        parts = [p.get() if hasattr(p, "get") else np.asarray(p) for p in parts]
        merged[name] = np.concatenate(parts) if parts else np.empty((0,))
    return merged, out_specs
