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

What else the engine needs an op declares with class attributes, never by its type:
``fits_on_split`` (after a split, fit on the fit split only), ``barrier`` (the op needs every
sample before it emits one: the engine hands it the whole stream, :meth:`Op.materialize`) and
``assigns_split`` (the op sets each sample's split, :attr:`Op.split_names`).

Array code is written once against ``xp = array_module(x)``; no op imports CuPy.
Everything persisted round-trips: :meth:`Op.to_dict` gives the settings as they were configured,
:meth:`Op.stats` what the op fitted (JSON-safe), and :func:`gpuds.ops.make_op` rebuilds the op
from both (:class:`gpuds.ops.stats.FittedOp`).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from gpuds.errors import ConfigError

__all__ = [
    "CODE_KINDS",
    "BarrierInput",
    "Block",
    "Op",
    "Replay",
    "Spec",
    "check_keys",
    "parse_fields",
    "parse_number",
    "require_fields",
]


CODE_KINDS = frozenset({"category", "label", "mask"})
"""Field kinds that hold codes, not quantities (docs/FORMAT.md)."""


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
    ``key`` numbers the block in the pass that read it (0, 1, ...): ops whose choices are planned
    per block (``split``, ``sample``, ``dedupe``) or drawn at random key them by it, so a block
    gives the same result whichever worker applies it, in whatever order. None when the caller
    applies an op to blocks in order itself (the op then numbers them).
    """

    fields: dict[str, Any]
    index: Any
    split: Any = None
    key: int | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def with_fields(self, fields: dict[str, Any]) -> Block:
        """The same samples with new values of the fields."""
        return Block(fields, self.index, self.split, self.key)

    def select(self, keep: Any) -> Block:
        """The samples where the boolean mask ``keep`` is True, all fields together."""
        return Block(
            {name: values[keep] for name, values in self.fields.items()},
            self.index[keep],
            None if self.split is None else self.split[keep],
            self.key,
        )

    def take(self, order: Any) -> Block:
        """The samples at positions ``order`` (an integer array), all fields together."""
        return Block(
            {name: values[order] for name, values in self.fields.items()},
            self.index[order],
            None if self.split is None else self.split[order],
            self.key,
        )


@dataclass(frozen=True)
class BarrierInput:
    """What the engine hands a barrier op besides the stream (:meth:`Op.materialize`)."""

    workdir: Path
    """A scratch folder of its own (inside the partial output, removed before the commit)."""
    samples: int
    """At most this many samples arrive."""
    memory_bytes: float
    """The memory the op may hold."""
    has_split: bool
    """The blocks carry each sample's split, which must come out with it."""


class Replay(Protocol):
    """What a barrier op leaves for the ops after it: its samples, readable any number of
    times, in order or unit by unit (by tasks anywhere that see its files)."""

    def __len__(self) -> int: ...

    def blocks(self, block_samples: int) -> Iterator[Block]: ...

    def units(self, block_samples: int) -> list[Any]: ...

    def read(self, unit: Any, key: int | None = None) -> Block: ...


class Op(ABC):
    """One preprocessing operation; registered by :attr:`name` (:mod:`gpuds.ops`)."""

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]] = ()
    """Config keys this op accepts besides ``op``."""
    fit_passes: int = 0
    """Streaming passes the op needs to fit its statistics (0: nothing to fit); an op whose
    config decides it sets it in ``__init__``."""
    fits_on_split: ClassVar[bool] = True
    """Whether, after a split, the op fits on the fit split only (e.g. ``train``)."""
    barrier: ClassVar[bool] = False
    """The op needs every sample before it emits one (``shuffle``): the engine ends a segment
    with it and hands it the segment's whole stream (:meth:`materialize`)."""
    drops: ClassVar[bool] = False
    """The op may drop samples: the engine counts what each block keeps before the write."""
    assigns_split: ClassVar[bool] = False
    """The op sets each sample's split (``Block.split`` indexes :attr:`split_names`); the output
    then holds one subgroup per split. A pipeline holds at most one such op."""
    split_names: Sequence[str] = ()
    """The splits an ``assigns_split`` op assigns, in order."""
    seed: int = 0
    """Seed of the op's random choices: the config's ``seed`` key for ops that accept one, else
    the seed the engine gives (:func:`gpuds.ops.make_op`)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        check_keys(config, self.keys, self.where)
        self.config = dict(config)
        if "seed" in config:
            self.seed = int(parse_number(config["seed"], f"{self.where}: seed", minimum=0))

    @property
    def where(self) -> str:
        """How messages name the op: ``op 'clip'``."""
        return f"op {self.name!r}"

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

    def fit_partial(self, pass_index: int) -> Any:
        """What :meth:`fit_block` accumulated on this copy of the op since
        ``fit_start(pass_index)``, as host data for :meth:`fit_merge` on the engine's copy
        (ops that fit nothing: None)."""
        return None

    def fit_merge(self, partial: Any, pass_index: int) -> None:  # noqa: B027
        """Add ``partial`` (:meth:`fit_partial` of a copy that fitted one block) to this op's
        statistics. The engine calls it once per block of the pass, empty blocks included, in
        block order: the result is the one :meth:`fit_block` on every block in order gives."""

    def fit_end(self, pass_index: int) -> None:  # noqa: B027
        """A fit pass ended: finalise what it measured."""

    def for_block(self, key: int) -> Op:
        """The op as a task applying block ``key`` needs it (an op holding a plan per block
        keeps that block's only, so that tasks stay small)."""
        return self

    def reset(self) -> None:  # noqa: B027 - stateless ops have nothing to reset
        """A pass that applies this op begins: restore seeded state."""

    def apply(self, block: Block) -> Block:
        """Transform one block."""
        return block

    # -- barrier ops (``barrier = True``): the engine runs each pass as tasks ---------------------
    def barrier_begin(self, specs: dict[str, Spec], at: BarrierInput) -> int:
        """Prepare for the fields ``specs`` within ``at``; return how many units the second pass
        (:meth:`barrier_gather`) has."""
        # The engine calls the barrier methods only on ops that declare `barrier`: a bug guard.
        raise TypeError(f"{self.where} is not a barrier")

    def barrier_scatter(self, block: Block) -> Any:
        """First pass, one block (numbered by ``block.key``); what it returns reaches
        :meth:`barrier_gather` and :meth:`barrier_end`, in block order."""
        raise TypeError(f"{self.where} is not a barrier")

    def barrier_gather(self, unit: int, scattered: Sequence[Any]) -> Any:
        """Second pass, one unit."""
        raise TypeError(f"{self.where} is not a barrier")

    def barrier_end(self, scattered: Sequence[Any], gathered: Sequence[Any]) -> Replay:
        """What the ops after it read."""
        raise TypeError(f"{self.where} is not a barrier")

    def materialize(
        self, blocks: Iterator[Block], specs: dict[str, Spec], at: BarrierInput
    ) -> Replay:
        """(``barrier`` ops) Consume ``blocks`` of the fields ``specs`` within ``at``, in this
        process, pass after pass; return what the ops after it read."""
        units = self.barrier_begin(specs, at)
        scattered = []
        for key, block in enumerate(blocks):
            scattered.append(
                self.barrier_scatter(
                    block
                    if block.key is not None
                    else Block(block.fields, block.index, block.split, key)
                )
            )
            del block
        gathered = [self.barrier_gather(unit, scattered) for unit in range(units)]
        return self.barrier_end(scattered, gathered)

    def stats(self) -> dict[str, Any]:
        """What the op fitted, JSON-safe (empty for ops that fit nothing), recorded in the
        store's ``stats``."""
        return {}

    def load_stats(self, stats: Mapping[str, Any]) -> None:
        """Apply statistics :meth:`stats` gave instead of fitting them (ops with statistics:
        :class:`gpuds.ops.stats.FittedOp`); other ops have none to load."""
        if stats:
            raise ConfigError(f"{self.where} has no statistics to load, got {stats!r}")

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
