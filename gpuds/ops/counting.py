"""Exact seeded selection over a stream, for ``sample`` and ``split``.

Both ops first count the samples of each block (per class) in a fit pass. At the end of it they
plan, block by block in order, how many of the block's samples of each class go to each target,
with a (multivariate) hypergeometric draw over what remains; applying a block then picks which
ones with a random permutation seeded by the block's number. This gives *exact* totals, every
subset of the stream equally likely, and a result that depends only on the seed and the stream
(blocks can be applied anywhere, in any order)... up to the draws themselves: the same seed with
a different block size gives a different (equally valid) choice, so the engine keeps the block
size fixed for a given input. The plan takes one entry per block and class.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Op, Spec, require_fields

__all__ = [
    "MAX_DRAW",
    "ClassCounter",
    "CountingOp",
    "check_draw_limit",
    "class_values",
    "largest_remainder",
]

MAX_DRAW = 10**9
"""NumPy's hypergeometric draws need fewer samples than this."""


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (which sum to 1).

    Each part is ``floor(total * w)``; the samples left over go one by one to the parts with the
    largest fractional remainders (ties: the earlier part). So every part is within one of its
    exact share and the parts sum to ``total``.

    Examples
    --------
    >>> largest_remainder(10, [0.8, 0.1, 0.1])
    [8, 1, 1]
    >>> largest_remainder(7, [0.5, 0.25, 0.25])  # 3.5, 1.75, 1.75: the .75s get the two left
    [3, 2, 2]
    """
    exact = [total * w for w in weights]
    parts = [int(np.floor(x)) for x in exact]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


class ClassCounter:
    """Counts samples per class value (any integer field; one class when no field is given)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, counts: dict[int, int]) -> None:
        for c, k in counts.items():
            self.counts[c] = self.counts.get(c, 0) + k

    def update(self, values: Any | None, n: int) -> None:
        if values is None:
            self.counts[0] = self.counts.get(0, 0) + n
            return
        host = values.get() if hasattr(values, "get") else np.asarray(values)
        classes, counts = np.unique(host, return_counts=True)
        for c, k in zip(classes.tolist(), counts.tolist(), strict=True):
            self.counts[int(c)] = self.counts.get(int(c), 0) + int(k)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def class_values(block_field: Any | None, n: int) -> np.ndarray:
    """The class of each sample of a block, on the host (all 0 without a stratify field)."""
    if block_field is None:
        return np.zeros(n, dtype=np.int64)
    host = block_field.get() if hasattr(block_field, "get") else np.asarray(block_field)
    return host.astype(np.int64).reshape(n)


def check_draw_limit(total: int, op: str) -> None:
    """Refuse streams too long for NumPy's hypergeometric generator."""
    if total >= MAX_DRAW:
        raise ConfigError(
            f"op {op!r}: {total} samples reach it; exact sampling supports fewer than {MAX_DRAW}"
        )


class CountingOp(Op):
    """An op that counts the samples reaching it (per class of the config's ``stratify`` field,
    optional) in one fit pass."""

    fit_passes = 1
    fits_on_split = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        stratify = config.get("stratify")
        if stratify is not None and not isinstance(stratify, str):
            raise ConfigError(
                f"{self.where}: expected 'stratify' to be a field name, got {stratify!r}"
            )
        self.stratify: str | None = stratify
        self._counter = ClassCounter()
        self._blocks: list[dict[int, int]] = []
        self._next = 0
        self._plan: dict[int, dict[int, Any]] = {}
        """Per block number: per class, what the op decided for the block's samples of it."""

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        if self.stratify is not None:
            where = self.where
            require_fields(specs, [self.stratify], f"{where}: stratify")
            spec = specs[self.stratify]
            if spec.dtype.kind not in "iub" or spec.sample_shape != ():
                raise ConfigError(
                    f"{where}: stratify field {self.stratify!r} must hold one integer class per "
                    f"sample (labels or category codes), got {spec.dtype} {spec.sample_shape}"
                )
        return specs

    def fit_start(self, pass_index: int) -> None:
        self._counter = ClassCounter()
        self._blocks = []
        self._next = 0

    def fit_block(self, block: Block) -> None:
        values = block.fields[self.stratify] if self.stratify else None
        counter = ClassCounter()
        counter.update(values, len(block))
        self._counter.add(counter.counts)
        self._blocks.append(counter.counts)

    def fit_partial(self, pass_index: int) -> Any:
        return list(self._blocks)

    def fit_merge(self, partial: Any, pass_index: int) -> None:
        # One entry per block of the pass, an empty block's too: blocks are planned by number.
        merged: dict[int, int] = {}
        for counts in partial:
            for c, k in counts.items():
                merged[c] = merged.get(c, 0) + k
        self._counter.add(merged)
        self._blocks.append(merged)

    def block_key(self, block: Block) -> int:
        """The block's number: its ``key``, or (blocks applied in order by the caller) the
        count of blocks applied since :meth:`reset`."""
        key = block.key if block.key is not None else self._next
        self._next += 1
        return key

    def for_block(self, key: int) -> Op:
        # A task needs its own block's plan only: the plans of all blocks are O(blocks x classes).
        op = copy.copy(self)
        op._blocks = []
        op._plan = {key: self._plan[key]} if key in self._plan else {}
        return op
