"""``sample``: keep a seeded random subset of exactly ``count`` samples (or a ``fraction``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError
from gpuds.ops.base import Block, parse_number
from gpuds.ops.counting import (
    CountingOp,
    check_draw_limit,
    class_values,
    largest_remainder,
)

__all__ = ["Sample"]


class Sample(CountingOp):
    """Keep a uniformly random subset of the samples, in their original order.

    Config: ``count`` (an integer) or ``fraction`` (0 to 1; the count is
    ``round(fraction * N)``), ``stratify`` (optional integer field: each class keeps its share,
    split by largest remainder, so class proportions hold to within one sample), ``seed``
    (optional; default: the config's seed).

    A counting pass learns ``N`` (and the class sizes); the apply pass then draws, block by
    block, how many of the block's samples to keep (hypergeometric over what remains) and which
    ones, so exactly ``count`` samples are kept with every subset equally likely, in O(1) memory.
    Asking for more samples than reach the op is an error.
    """

    name = "sample"
    keys = ("count", "fraction", "stratify", "seed")

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        where = self.where
        if ("count" in config) == ("fraction" in config):
            raise ConfigError(f"{where}: give exactly one of 'count' or 'fraction'")
        self.count: int | None = None
        self.fraction: float | None = None
        if "count" in config:
            count = config["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"{where}: expected 'count' to be an integer >= 0, got {count!r}")
            self.count = count
        else:
            self.fraction = parse_number(config["fraction"], f"{where}: fraction", minimum=0.0)
            if self.fraction > 1:
                raise ConfigError(
                    f"{where}: expected 'fraction' between 0 and 1, got {self.fraction}"
                )
        self._keep: dict[int, int] = {}
        self._left_keep: dict[int, int] = {}
        self._left_total: dict[int, int] = {}
        self._kept = 0
        self._seen = 0
        self._rng = np.random.default_rng(0)

    def fit_end(self, pass_index: int) -> None:
        check_draw_limit(self._counter.total, "sample")
        total = self._counter.total
        want = self.count if self.count is not None else round((self.fraction or 0.0) * total)
        if want > total:
            raise ConfigError(f"op 'sample': asks for {want} samples but only {total} reach it")
        classes = sorted(self._counter.counts)
        sizes = [self._counter.counts[c] for c in classes]
        shares = largest_remainder(want, [s / total for s in sizes]) if total else []
        self._keep = dict(zip(classes, shares, strict=True))

    def reset(self) -> None:
        self._rng = np.random.default_rng([self.seed, 0x5A3B])
        self._left_keep = dict(self._keep)
        self._left_total = dict(self._counter.counts)
        self._kept = self._seen = 0

    def apply(self, block: Block) -> Block:
        n = len(block)
        classes = class_values(block.fields[self.stratify] if self.stratify else None, n)
        keep = np.zeros(n, dtype=bool)
        for c in np.unique(classes).tolist():
            where = np.flatnonzero(classes == c)
            total = self._left_total.get(int(c), 0)
            if total < len(where):
                raise ConfigError(
                    f"op 'sample': the data changed between the counting pass and this one "
                    f"(class {c}); rerun preprocess"
                )
            want = self._left_keep.get(int(c), 0)
            take = (
                int(self._rng.hypergeometric(len(where), total - len(where), want)) if want else 0
            )
            if take:
                keep[where[self._rng.choice(len(where), size=take, replace=False)]] = True
            self._left_keep[int(c)] = want - take
            self._left_total[int(c)] = total - len(where)
        self._kept += int(keep.sum())
        self._seen += n
        xp = array_module(block.index)
        return block.select(xp.asarray(keep))

    def stats(self) -> dict[str, Any]:
        return {
            "keep": {str(c): k for c, k in self._keep.items()},
            "available": {str(c): n for c, n in self._counter.counts.items()},
        }

    def counts(self) -> dict[str, Any]:
        return {"kept": self._kept, "dropped": self._seen - self._kept}
