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

    A counting pass learns ``N`` (and the class sizes, block by block) and plans, block by block,
    how many of the block's samples to keep (hypergeometric over what remains); the apply pass
    picks which ones, seeded by the block's number. Exactly ``count`` samples are kept with every
    subset equally likely.
    Asking for more samples than reach the op is an error.
    """

    name = "sample"
    keys = ("count", "fraction", "stratify", "seed")
    drops = True

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
        self._kept = 0
        self._seen = 0

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
        # How many of each block's samples of each class to keep, drawn in block order.
        rng = np.random.default_rng([self.seed, 0x5A3B])
        left_keep = dict(self._keep)
        left_total = dict(self._counter.counts)
        self._plan = {}
        for key, counts in enumerate(self._blocks):
            plan = {}
            for c in sorted(counts):
                n, total_c, want_c = counts[c], left_total[c], left_keep[c]
                take = int(rng.hypergeometric(n, total_c - n, want_c)) if want_c else 0
                left_keep[c] = want_c - take
                left_total[c] = total_c - n
                plan[c] = (n, take)
            self._plan[key] = plan

    def reset(self) -> None:
        self._next = 0
        self._kept = self._seen = 0

    def apply(self, block: Block) -> Block:
        n = len(block)
        key = self.block_key(block)
        plan = self._plan.get(key, {})
        classes = class_values(block.fields[self.stratify] if self.stratify else None, n)
        keep = np.zeros(n, dtype=bool)
        rng = np.random.default_rng([self.seed, 0x5A3B, 1, key])
        for c in np.unique(classes).tolist():
            where = np.flatnonzero(classes == c)
            planned = plan.get(int(c))
            if planned is None or planned[0] != len(where):
                raise ConfigError(
                    f"op 'sample': the data changed between the counting pass and this one "
                    f"(class {c}, block {key}); rerun preprocess"
                )
            take = planned[1]
            if take:
                keep[where[rng.choice(len(where), size=take, replace=False)]] = True
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
