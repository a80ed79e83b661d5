"""``split``: assign every sample to one of several splits (train/val/test), seeded and exact."""

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

__all__ = ["Split"]

_DEFAULT_NAMES = ("train", "val", "test")


def parse_fractions(value: Any, where: str) -> dict[str, float]:
    """``{"train": 0.8, "val": 0.2}`` or ``[0.8, 0.1, 0.1]`` (named train, val, test)."""
    if isinstance(value, list | tuple):
        if not 1 < len(value) <= len(_DEFAULT_NAMES):
            raise ConfigError(
                f"{where}: expected 2 or 3 fractions (train, val[, test]), got {value!r}"
            )
        value = dict(zip(_DEFAULT_NAMES, value, strict=False))
    if not isinstance(value, Mapping) or len(value) < 2:
        raise ConfigError(
            f"{where}: expected 'fractions' as a mapping of split name to fraction "
            f"(e.g. {{train: 0.8, val: 0.1, test: 0.1}}) or a list, got {value!r}"
        )
    fractions = {}
    for name, frac in value.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{where}: split name {name!r} must be a simple name like 'train'")
        fractions[name] = parse_number(frac, f"{where}: fraction of {name!r}", minimum=0.0)
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"{where}: fractions must sum to 1, got {total:g} ({value!r})")
    return fractions


class Split(CountingOp):
    """Assign each sample to exactly one split; the output store holds one subgroup per split.

    Config: ``fractions`` (``{train: 0.8, val: 0.1, test: 0.1}`` or ``[0.8, 0.1, 0.1]``),
    ``stratify`` (optional integer field, e.g. ``labels``), ``seed`` (optional; default: the
    config's seed).

    Sizes are exact: split ``i`` gets ``floor(N * f_i)`` samples plus at most one of the
    remainder (largest remainder first), so sizes sum to ``N``. With ``stratify`` the same rule is
    applied within each class, so every split holds each class in its fraction to within one
    sample. Which samples go where is a uniformly random choice among all assignments with those
    sizes, drawn block by block (hypergeometric counts, then a permutation of the block) from the
    seed: the same seed and input give the same splits. Samples keep their order within a split;
    put ``shuffle`` before ``split`` to shuffle them.

    Ops after ``split`` apply to every split but fit their statistics on the fit split only
    (config ``fit_split``, default ``train``), so nothing is learnt from validation or test data.
    """

    name = "split"
    keys = ("fractions", "stratify", "seed")
    assigns_split = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        if "fractions" not in config:
            raise ConfigError(f"{self.where}: missing key 'fractions' (e.g. [0.8, 0.1, 0.1])")
        self.fractions = parse_fractions(config["fractions"], self.where)
        self.split_names = list(self.fractions)
        self._targets: dict[int, np.ndarray] = {}

    def fit_end(self, pass_index: int) -> None:
        check_draw_limit(self._counter.total, "split")
        weights = list(self.fractions.values())
        self._targets = {
            c: np.asarray(largest_remainder(n, weights), dtype=np.int64)
            for c, n in sorted(self._counter.counts.items())
        }
        # How many of each block's samples of each class go to each split, drawn in block order.
        rng = np.random.default_rng([self.seed, 0x5917])
        remaining = {c: t.copy() for c, t in self._targets.items()}
        self._plan = {}
        for key, counts in enumerate(self._blocks):
            plan = {}
            for c in sorted(counts):
                drawn = rng.multivariate_hypergeometric(remaining[c], counts[c])
                remaining[c] -= drawn
                plan[c] = drawn
            self._plan[key] = plan

    def reset(self) -> None:
        self._next = 0

    def apply(self, block: Block) -> Block:
        n = len(block)
        key = self.block_key(block)
        plan = self._plan.get(key, {})
        classes = class_values(block.fields[self.stratify] if self.stratify else None, n)
        assign = np.empty(n, dtype=np.int8)
        rng = np.random.default_rng([self.seed, 0x5917, 1, key])
        for c in np.unique(classes).tolist():
            where = np.flatnonzero(classes == c)
            counts = plan.get(int(c))
            if counts is None or int(counts.sum()) != len(where):
                raise ConfigError(
                    "op 'split': the data changed between the counting pass and this one "
                    f"(class {c}, block {key}); rerun preprocess"
                )
            labels = np.repeat(np.arange(len(self.split_names), dtype=np.int8), counts)
            assign[where] = rng.permutation(labels)
        xp = array_module(block.index)
        return Block(block.fields, block.index, xp.asarray(assign), block.key)

    def sizes(self) -> dict[str, int]:
        total = sum(self._targets.values(), np.zeros(len(self.split_names), dtype=np.int64))
        return {name: int(k) for name, k in zip(self.split_names, total.tolist(), strict=True)}

    def stats(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes(),
            "targets": {str(c): t.tolist() for c, t in self._targets.items()},
        }
