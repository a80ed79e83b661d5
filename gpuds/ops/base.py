"""The operation contract of ``gpuds preprocess``.

An :class:`Op` transforms a stream of :class:`Block` objects (consecutive samples of every field,
on NumPy or CuPy). The engine (:mod:`gpuds.preprocess`) drives each op through three phases:

1. **Plan.** :meth:`Op.plan` receives the fields as they will reach the op (name → :class:`Spec`),
   checks that the op's fields exist and have a dtype it accepts, and returns the fields as they
   leave it (a cast changes the dtype, a resize the shape). All checking happens here, before any
   data is read, so a bad config fails in a second.
2. **Fit** (only ops with ``fit_passes > 0``). For each fit pass the engine replays the ops before
   this one over the whole input and calls :meth:`Op.fit_block` on every block, then
   :meth:`Op.fit_end`. Statistics are merged per block in float64 with numerically stable
   parallel formulas, so the result does not depend on the block size beyond float rounding.
3. **Apply.** :meth:`Op.reset` is called at the start of every pass that applies the op (it
   restores the op's seeded random state), then :meth:`Op.apply` on each block, in order.

Array code is written once against ``xp = array_module(x)``; no op imports CuPy.
Everything persisted round-trips: :meth:`Op.to_dict` gives the settings as they were configured,
:meth:`Op.stats` the fitted statistics (JSON-safe), and ``from_dict`` rebuilds the op.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError

__all__ = [
    "Block",
    "Op",
    "RunningMoments",
    "Spec",
    "check_keys",
    "parse_fields",
    "parse_number",
    "reduce_axes",
]


@dataclass(frozen=True)
class Spec:
    """A field as it flows through the pipeline: per-sample shape, dtype and kind."""

    dtype: np.dtype[Any]
    sample_shape: tuple[int, ...]
    kind: str = "array"
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.sample_shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class Block:
    """Consecutive samples of every field, plus the split each sample is assigned to.

    ``split`` holds split indices (``-1`` = not assigned) and is None until a split op ran.
    ``index`` holds the samples' positions in the input (before any drop or shuffle).
    """

    fields: dict[str, Any]
    index: Any
    split: Any = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def select(self, keep: Any) -> Block:
        """The samples where the boolean mask ``keep`` is True, all fields together."""
        return Block(
            {name: values[keep] for name, values in self.fields.items()},
            self.index[keep],
            None if self.split is None else self.split[keep],
        )

    def take(self, order: Any) -> Block:
        """The samples at positions ``order`` (an integer array), all fields together."""
        return Block(
            {name: values[order] for name, values in self.fields.items()},
            self.index[order],
            None if self.split is None else self.split[order],
        )


class Op(ABC):
    """One preprocessing operation; subclasses are registered by :attr:`name`."""

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]] = ()
    """Config keys this op accepts besides ``op``."""
    fit_passes: ClassVar[int] = 0
    """Streaming passes the op needs to fit its statistics (0: nothing to fit)."""
    fits_on_split: ClassVar[bool] = True
    """Whether, after a split, the op fits on the fit split only (e.g. ``train``)."""
    seed: int = 0
    """Seed of the op's random choices; the engine sets it from the config's ``seed``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        check_keys(config, self.keys, f"op {self.name!r}")
        self.config = dict(config)

    def to_dict(self) -> dict[str, Any]:
        """The op's settings, as configured (``{"op": name, ...}``)."""
        return {"op": self.name, **self.config}

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        """Check the op against the fields reaching it; return the fields leaving it."""
        return specs

    def fit_start(self, pass_index: int) -> None:  # noqa: B027 - ops without statistics skip it
        """A fit pass begins."""

    def fit_block(self, block: Block) -> None:  # noqa: B027
        """Accumulate statistics from one block (already filtered to the fit split)."""

    def fit_end(self, pass_index: int) -> None:  # noqa: B027
        """A fit pass ended: finalise what it measured."""

    def reset(self) -> None:  # noqa: B027 - stateless ops have nothing to reset
        """A pass that applies this op begins: restore seeded state."""

    def apply(self, block: Block) -> Block:
        """Transform one block."""
        return block

    def stats(self) -> dict[str, Any]:
        """Fitted statistics, JSON-safe (empty for ops that fit nothing)."""
        return {}

    def counts(self) -> dict[str, Any]:
        """Counters of the last apply pass (e.g. samples dropped), JSON-safe."""
        return {}


def check_keys(config: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    """Refuse keys not in ``valid`` (``op`` is always allowed), listing the valid ones."""
    unknown = sorted(set(config) - set(valid) - {"op"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}"
        )


def parse_fields(config: Mapping[str, Any], where: str, *, required: bool = True) -> list[str]:
    """The op's ``fields`` (a name or a list of names)."""
    value = config.get("fields")
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing key 'fields' (a field name or a list of names)")
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"{where}: expected 'fields' to be a name or a list of names, got {value!r}"
        )
    return list(names)


def parse_number(value: Any, where: str, *, minimum: float | None = None) -> float:
    """A finite number, optionally at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: expected a number >= {minimum}, got {value!r}")
    return float(value)


def require_fields(specs: Mapping[str, Spec], names: Sequence[str], where: str) -> None:
    """Every name must be a field reaching the op."""
    missing = [n for n in names if n not in specs]
    if missing:
        raise ConfigError(
            f"{where}: no field(s) {', '.join(map(repr, missing))} at this point; "
            f"available: {', '.join(specs) or '(none)'}"
        )


def reduce_axes(ndim: int, per: str) -> tuple[int, ...]:
    """Axes a statistic reduces over: all of them (``per="none"``), or all but the last
    (``per="channel"``: the channel of ``(N, H, W, C)`` images, the column of ``(N, F)`` features).
    """
    if per == "none" or ndim == 1:
        return tuple(range(ndim))
    return tuple(range(ndim - 1))


class RunningMoments:
    """Count, mean and M2 (sum of squared deviations) merged block by block.

    Uses the pairwise update of Chan, Golub and LeVeque in float64: each block's mean and M2 are
    computed around the block's own mean, then merged, so a large offset (values ~1e8 + N(0, 1))
    does not cancel the variance as the naive sum of squares does. NaNs are ignored.
    """

    def __init__(self) -> None:
        self.count: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, values: Any, axes: tuple[int, ...]) -> None:
        xp = array_module(values)
        x = values.astype(xp.float64)
        valid = ~xp.isnan(x)
        n = valid.sum(axis=axes).astype(xp.float64)
        total = xp.where(valid, x, 0).sum(axis=axes)
        mean = xp.where(n > 0, total / xp.maximum(n, 1), 0)
        shape = [1 if a in axes else s for a, s in enumerate(x.shape)]
        centred = xp.where(valid, x - mean.reshape(shape), 0)
        m2 = (centred * centred).sum(axis=axes)
        n_h, mean_h, m2_h = (np.asarray(_host(v), dtype=np.float64) for v in (n, mean, m2))
        if self.count is None or self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n_h, mean_h, m2_h
            return
        total_n = self.count + n_h
        safe = np.maximum(total_n, 1)
        delta = mean_h - self.mean
        self.mean = self.mean + delta * n_h / safe
        self.m2 = self.m2 + m2_h + delta * delta * self.count * n_h / safe
        self.count = total_n

    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0)."""
        assert self.count is not None and self.m2 is not None
        return np.sqrt(self.m2 / np.maximum(self.count, 1))


def _host(x: Any) -> Any:
    get = getattr(x, "get", None)
    return get() if get is not None else x
