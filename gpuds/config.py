"""Pipeline configuration files (YAML or TOML) for ``gpuds preprocess``.

A config is a mapping with these keys (every one optional except ``ops``)::

    seed: 0              # seeds every random op (shuffle, split, sample) unless an op sets its own
    fit_split: train     # after a split, ops fit their statistics on this split only
    memory_mb: 512       # memory budget of the run: blocks, shuffle buckets, write buffers
    block_mb: 64         # samples are streamed in blocks of at most this size (memory_mb / 8)
    chunk_mb: 1.0        # target chunk size of the output fields
    ops:                 # applied in order
      - {op: standardize, fields: [images], per: channel}

Unknown keys are errors that list the valid ones; so are unknown ops and op keys. How
``memory_mb`` bounds the run's memory is :mod:`gpuds.preprocess`'s business (docs/preprocess.md).

:class:`Shortcuts` are the ``gpuds preprocess`` options that stand for a config (``--split``,
``--cast``, ...), and :func:`pipeline_config` resolves a config file or shortcuts, with the
``--seed`` and ``--memory-mb`` overrides, into the :class:`PipelineConfig` that runs.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpuds.errors import ConfigError

__all__ = [
    "BLOCKS_PER_BUDGET",
    "DEFAULT_MEMORY_MB",
    "PipelineConfig",
    "Shortcuts",
    "load_config",
    "parse_names",
    "pipeline_config",
    "read_mapping",
]

_KEYS = ("seed", "fit_split", "memory_mb", "block_mb", "chunk_mb", "ops")
DEFAULT_MEMORY_MB = 512.0
DEFAULT_BLOCK_MB = 64.0
BLOCKS_PER_BUDGET = 8
"""``block_mb`` is at most ``memory_mb / BLOCKS_PER_BUDGET``: a streaming pass holds a few blocks
(an op's input, its float64 temporaries, its output, the split parts being written)."""


@dataclass
class PipelineConfig:
    """A validated pipeline: ops (as mappings) and the settings that apply to all of them.

    Examples
    --------
    >>> PipelineConfig.from_dict({"ops": [{"op": "shuffle"}], "seed": 3}).seed
    3
    """

    ops: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    fit_split: str = "train"
    memory_mb: float = DEFAULT_MEMORY_MB
    block_mb: float = DEFAULT_BLOCK_MB
    """Upper bound of a block, counted at 8 bytes per value; without ``block_mb`` in the
    mapping it is ``min(64, memory_mb / 8)``."""
    chunk_mb: float = 1.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> PipelineConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with an 'ops' list, got {data!r}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_KEYS)}"
            )
        ops = data.get("ops")
        if not isinstance(ops, list) or not ops:
            raise ConfigError(f"{where}: 'ops' must be a non-empty list of operations")
        for i, op in enumerate(ops):
            if not isinstance(op, Mapping) or "op" not in op:
                raise ConfigError(
                    f"{where}: ops[{i}] must be a mapping with an 'op' key, got {op!r}"
                )
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}: 'seed' must be an integer >= 0, got {seed!r}")
        fit_split = data.get("fit_split", "train")
        if not isinstance(fit_split, str):
            raise ConfigError(f"{where}: 'fit_split' must be a split name, got {fit_split!r}")
        sizes = {}
        for key, default in (("memory_mb", DEFAULT_MEMORY_MB), ("chunk_mb", 1.0)):
            sizes[key] = _positive(data.get(key, default), key, where)
        most = sizes["memory_mb"] / BLOCKS_PER_BUDGET
        if "block_mb" in data:
            block_mb = _positive(data["block_mb"], "block_mb", where)
            if block_mb > most:
                raise ConfigError(
                    f"{where}: 'block_mb' {block_mb:g} is more than memory_mb / "
                    f"{BLOCKS_PER_BUDGET} = {most:g} (a pass holds several blocks at once); "
                    f"lower block_mb or raise memory_mb to {block_mb * BLOCKS_PER_BUDGET:g}"
                )
        else:
            block_mb = min(DEFAULT_BLOCK_MB, most)
        return cls([dict(op) for op in ops], seed, fit_split, block_mb=block_mb, **sizes)

    def with_memory(self, memory_mb: float) -> PipelineConfig:
        """This config with another memory budget (``block_mb`` follows it unless it still
        fits).

        Examples
        --------
        >>> PipelineConfig.from_dict({"ops": [{"op": "shuffle"}]}).with_memory(64).block_mb
        8.0
        """
        data = self.to_dict()
        data["memory_mb"] = memory_mb
        if self.block_mb > _positive(memory_mb, "memory_mb", "--memory-mb") / BLOCKS_PER_BUDGET:
            data.pop("block_mb")
        return PipelineConfig.from_dict(data, "--memory-mb")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "fit_split": self.fit_split,
            "memory_mb": self.memory_mb,
            "block_mb": self.block_mb,
            "chunk_mb": self.chunk_mb,
            "ops": [dict(op) for op in self.ops],
        }


def _positive(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return float(value)


def read_mapping(path: str | Path) -> Any:
    """Parse a ``.yaml``/``.yml`` or ``.toml`` file; errors name the file (and line for YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from e
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{line}: invalid YAML ({problem})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from e
    raise ConfigError(f"{path}: config files must end in .yaml, .yml or .toml")


def load_config(path: str | Path) -> PipelineConfig:
    """Read a ``.yaml``/``.yml`` or ``.toml`` pipeline config."""
    return PipelineConfig.from_dict(read_mapping(path), str(path))


def parse_names(text: str) -> list[str]:
    """The names in a comma-separated list, as options such as ``--fields`` take them.

    >>> parse_names("images, labels,,")
    ['images', 'labels']
    """
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass(frozen=True)
class Shortcuts:
    """The ``gpuds preprocess`` options that stand for a config, as the command line gives them.

    :meth:`ops` turns them into ops in a fixed, documented order: drop_invalid, shuffle, split,
    cast, standardize, normalize. Field lists are comma-separated; ``drop_invalid=""`` means every
    field.

    Examples
    --------
    >>> Shortcuts(shuffle=True, split="0.8,0.2", cast=("images=float32",)).ops()
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'op': 'shuffle'}, {'op': 'split', 'fractions': [0.8, 0.2]},
     {'op': 'cast', 'fields': ['images'], 'dtype': 'float32'}]
    """

    shuffle: bool = False
    split: str | None = None
    """Fractions, e.g. ``"0.8,0.1,0.1"``."""
    stratify: str | None = None
    """The label field whose class shares the split keeps (needs ``split``)."""
    cast: Sequence[str] = ()
    """``FIELD=DTYPE`` items, e.g. ``"images=float32"``."""
    standardize: str | None = None
    normalize: str | None = None
    drop_invalid: str | None = None

    def ops(self) -> list[dict[str, Any]]:
        """The ops these shortcuts stand for (empty when none is given)."""
        ops: list[dict[str, Any]] = []
        if self.drop_invalid is not None:
            fields = {"fields": parse_names(self.drop_invalid)} if self.drop_invalid else {}
            ops.append({"op": "drop_invalid", **fields})
        if self.shuffle:
            ops.append({"op": "shuffle"})
        if self.split:
            try:
                fractions = [float(f) for f in self.split.split(",")]
            except ValueError as e:
                raise ConfigError(
                    f"--split: expected fractions like 0.8,0.1,0.1, got {self.split!r}"
                ) from e
            stratify = {"stratify": self.stratify} if self.stratify else {}
            ops.append({"op": "split", "fractions": fractions, **stratify})
        elif self.stratify:
            raise ConfigError("--stratify needs --split")
        for item in self.cast:
            names, _, dtype = item.partition("=")
            if not names or not dtype:
                raise ConfigError(
                    f"--cast: expected FIELD=DTYPE (e.g. images=float32), got {item!r}"
                )
            ops.append({"op": "cast", "fields": parse_names(names), "dtype": dtype})
        if self.standardize:
            ops.append(
                {"op": "standardize", "fields": parse_names(self.standardize), "per": "channel"}
            )
        if self.normalize:
            ops.append({"op": "normalize", "fields": parse_names(self.normalize), "per": "channel"})
        return ops


def pipeline_config(
    path: str | Path | None = None,
    shortcuts: Shortcuts | None = None,
    *,
    seed: int | None = None,
    memory_mb: float | None = None,
) -> PipelineConfig:
    """The pipeline ``gpuds preprocess`` runs: the config file at ``path`` or the ``shortcuts``
    (one of the two), with ``seed`` and ``memory_mb`` overriding the config's when given.

    Examples
    --------
    >>> pipeline_config(shortcuts=Shortcuts(shuffle=True), seed=7).to_dict()["seed"]
    7
    """
    ops = (shortcuts or Shortcuts()).ops()
    if path is not None:
        if ops:
            raise ConfigError("give either --config or shortcut options (--split, ...), not both")
        pipeline = load_config(path)
        if seed is not None:
            pipeline.seed = seed
    elif not ops:
        raise ConfigError("nothing to do: pass --config FILE or shortcuts like --split 0.8,0.2")
    else:
        pipeline = PipelineConfig.from_dict({"seed": seed or 0, "ops": ops}, "shortcuts")
    if memory_mb is not None:
        pipeline = pipeline.with_memory(memory_mb)
    return pipeline
