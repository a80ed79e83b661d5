"""``gpuds.open``: a store (or one of its splits) as a dataset a training job can read.

>>> ds = gpuds.open("data.zarr")                               # doctest: +SKIP
>>> train = ds["train"]; len(train), train.fields["images"]     # doctest: +SKIP
(96, FieldInfo(shape=(28, 28, 3), dtype=dtype('float32'), kind='image'))
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from gpuds.errors import ConfigError, StoreError
from gpuds.storage import Location, is_url, location
from gpuds.store import FIELD_ATTR, open_store, read_info

if TYPE_CHECKING:
    from gpuds.loader import Loader

__all__ = ["Dataset", "FieldInfo", "open_dataset"]


@dataclass(frozen=True)
class FieldInfo:
    """A field's per-sample shape, dtype and kind."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    kind: str


class Dataset:
    """The samples of a store (unsplit) or of one split; ``len()``, ``fields``, ``stats``.

    Parameters
    ----------
    group
        The Zarr group holding the fields.
    info
        The store's ``gpuds`` attribute (statistics, classes, history).
    name
        ``""`` for the root, else the split name.
    """

    def __init__(
        self, group: zarr.Group, info: dict[str, Any], name: str = "", path: str = ""
    ) -> None:
        self._group = group
        self.info = info
        self.name = name
        self.path = path
        with warnings.catch_warnings():
            # zarr warns at every numcodecs.* codec it reads; gpuds writes them on purpose and
            # reports each field's portability itself (`inspect`).
            warnings.filterwarnings(
                "ignore", message="Numcodecs codecs are not in the Zarr version 3"
            )
            arrays = sorted(group.arrays(), key=lambda kv: kv[0])
        self.arrays: dict[str, zarr.Array] = dict(arrays)
        lengths = {a.shape[0] for a in self.arrays.values()}
        if len(lengths) > 1:
            raise StoreError(f"{path}: fields of {name or 'the root'} have different lengths")
        self._length = lengths.pop() if lengths else 0

    @property
    def splits(self) -> list[str]:
        """Split names (only on the root of a split store)."""
        return list(self.info.get("splits", [])) if not self.name else []

    def __getitem__(self, split: str) -> Dataset:
        if self.name:
            raise KeyError(f"{self.name!r} is already a split")
        if split not in self.splits:
            raise KeyError(
                f"no split {split!r} in {self.path}; splits: {', '.join(self.splits) or '(none)'}"
            )
        return Dataset(self._group[split], self.info, split, self.path)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        where = f"{self.path}[{self.name!r}]" if self.name else self.path
        return f"Dataset({where}, {len(self)} samples, fields={list(self.fields)})"

    @property
    def fields(self) -> dict[str, FieldInfo]:
        out = {}
        for name, arr in self.arrays.items():
            attrs = arr.attrs.get(FIELD_ATTR)
            kind = str(attrs.get("kind", "array")) if isinstance(attrs, dict) else "array"
            out[name] = FieldInfo(tuple(arr.shape[1:]), np.dtype(arr.dtype), kind)
        return out

    @property
    def stats(self) -> dict[str, Any]:
        """Statistics fitted by ``preprocess``, by op: ``{"standardize": {"images": {...}}}``.

        When an op occurs twice, the later entry is ``"<op>#<index>"``.
        """
        out: dict[str, Any] = {}
        for entry in self.info.get("stats", {}).get("ops", []):
            key = entry["op"] if entry["op"] not in out else f"{entry['op']}#{entry['index']}"
            out[key] = entry["stats"]
        return out

    @property
    def classes(self) -> dict[str, list[str]]:
        """Class names per label field."""
        return dict(self.info.get("classes", {}))

    def loader(self, batch_size: int, **options: Any) -> Loader:
        """A :class:`~gpuds.loader.Loader` over this dataset (see its parameters)."""
        from gpuds.loader import Loader

        if self.splits:
            raise ConfigError(
                f"{self.path} is split ({', '.join(self.splits)}): load one split, "
                f"e.g. gpuds.open(path)['{self.splits[0]}'].loader(...)"
            )
        return Loader(self, batch_size, **options)


def open_dataset(
    path: str | Path | Location, storage_options: Mapping[str, str] | None = None
) -> Dataset:
    """Open a complete gpuds store for reading: a local path or an object-store URL
    (``s3://bucket/data.zarr``, ``gs://``, ``az://``; other fsspec URLs read through zarr-python).

    ``storage_options`` (endpoint, region, credentials, ...) add to the standard environment
    variables (docs/storage.md).

    Examples
    --------
    >>> ds = gpuds.open("s3://bucket/data.zarr", storage_options={"region": "eu-west-1"})
    ... # doctest: +SKIP
    """
    group = open_store(path, storage_options=storage_options)
    shown = str(path) if not is_url(str(path)) else location(path).url
    return Dataset(group, read_info(group), "", shown)
