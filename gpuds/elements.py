"""Loader batches as ``(inputs, targets)`` elements, epoch by epoch, for Keras and tf.data.

What ``gpuds.tensorflow`` and ``gpuds.keras`` share, free of any framework import:

- **Structures**: ``inputs`` and ``targets`` name fields as a field name (one array), a tuple or
  list of names (a tuple of arrays) or a dict of names (a dict of arrays, e.g. keyed by a
  functional model's input names); :func:`element` builds ``(inputs, targets)`` from a batch, or
  ``(inputs,)`` without targets (what Keras's ``predict`` takes).
- **Unsigned integers**: TensorFlow has no ``uint16``/``uint32``/``uint64`` kernels for most ops
  (``one_hot``, ``gather``, ``matmul``, sparse cross-entropy), Keras's PyTorch backend refuses
  ``uint64``, and Keras wants ``int32``/``int64`` labels. :func:`widen` hands such fields over as
  the signed type that holds every value: ``uint16`` as ``int32`` and ``uint32`` as ``int64``
  (a copy), ``uint64`` as ``int64`` when every value of the batch fits (the same memory; a value
  of 2**63 or more raises :class:`~gpuds.errors.ConfigError` naming the field, it is never
  wrapped). Every other dtype is handed over as stored.
- **Epochs as passes**: frameworks iterate a dataset again for every epoch; :class:`EpochPasses`
  makes each new pass the loader's next epoch (a new shuffle), repeats a pass that was
  abandoned before its last batch, and respects a loader moved by hand in between.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from gpuds.errors import ConfigError
from gpuds.loader import Loader

__all__ = [
    "EpochPasses",
    "Fields",
    "batches_left",
    "element",
    "field_names",
    "fields_read",
    "widen",
    "widened",
]

Fields = str | Sequence[str] | Mapping[str, str]
"""A field name, a tuple (or list) of names, or a dict of names."""


def field_names(spec: Fields, what: str = "inputs") -> list[str]:
    """The field names ``spec`` refers to, in order; ``what`` names it in errors.

    Examples
    --------
    >>> field_names(("images", "meta"))
    ['images', 'meta']
    >>> field_names({"pixels": "images"})
    ['images']
    """
    if isinstance(spec, str):
        names = [spec]
    elif isinstance(spec, Mapping):
        names = list(spec.values())
        if not all(isinstance(key, str) for key in spec):
            names = []
    elif isinstance(spec, Sequence):
        names = list(spec)
    else:
        names = []
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(
            f"Expected {what} to be a field name, a tuple of field names or a dict of field "
            f"names, got {spec!r}"
        )
    return names


def fields_read(loader: Loader, inputs: Fields, targets: Fields | None) -> list[str]:
    """The fields ``inputs`` and ``targets`` name, once each, checked against the loader's."""
    names = field_names(inputs, "inputs")
    if targets is not None:
        names += field_names(targets, "targets")
    names = list(dict.fromkeys(names))
    missing = [name for name in names if name not in loader.fields]
    if missing:
        raise ConfigError(
            f"the loader does not read {', '.join(map(repr, missing))}; it reads "
            f"{', '.join(loader.fields)} (pass fields=[...] to .loader())"
        )
    return names


def _pack(spec: Fields, values: Mapping[str, Any]) -> Any:
    if isinstance(spec, str):
        return values[spec]
    if isinstance(spec, Mapping):
        return {key: values[name] for key, name in spec.items()}
    return tuple(values[name] for name in spec)


def element(values: Mapping[str, Any], inputs: Fields, targets: Fields | None) -> tuple[Any, ...]:
    """``(inputs, targets)`` (or ``(inputs,)``) of a batch, structured as named.

    Examples
    --------
    >>> element({"x": 1, "y": 2}, "x", "y")
    (1, 2)
    >>> element({"a": 1, "b": 2}, {"first": "a"}, None)
    ({'first': 1},)
    """
    packed = _pack(inputs, values)
    return (packed,) if targets is None else (packed, _pack(targets, values))


def widened(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype a field of ``dtype`` is handed over as (see the module notes).

    Examples
    --------
    >>> [str(widened(np.dtype(t))) for t in ("uint8", "uint16", "uint32", "uint64", "float16")]
    ['uint8', 'int32', 'int64', 'int64', 'float16']
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "u" or dtype.itemsize == 1:
        return dtype
    return np.dtype(f"i{min(2 * dtype.itemsize, 8)}")


def widen(name: str, values: Any) -> Any:
    """``values`` (NumPy or CuPy) as :func:`widened` says, checked: never a wrapped value."""
    dtype = np.dtype(values.dtype)
    target = widened(dtype)
    if target == dtype:
        return values
    if dtype.itemsize == 8:
        if len(values) and int(values.max()) > np.iinfo(np.int64).max:
            raise ConfigError(
                f"field {name!r} is uint64 with values of 2**63 or more; TensorFlow and Keras "
                "have no uint64 for most ops and int64 would wrap them: cast the field in "
                "preprocess (e.g. to float64), or leave it out of inputs and targets"
            )
        return values.view(target)  # the same bits for every value below 2**63
    return values.astype(target)


def batches_left(loader: Loader) -> int:
    """Batches the loader still delivers in its current epoch (all of them at its start)."""
    plan = loader.plan()
    rest = plan.hi - plan.lo - int(loader.state_dict()["position"])
    return rest // loader.batch_size if loader.drop_last else math.ceil(rest / loader.batch_size)


class EpochPasses:
    """A loader's batches handed out pass by pass, each pass one epoch.

    - The first pass continues where the loader stands: epoch 0 of a new loader, or the rest of
      an epoch for one given a ``load_state_dict`` state (the next epoch if nothing is left).
    - Each later pass starts the next epoch (``loader.set_epoch(epoch + 1)``), so every epoch
      is a new shuffle and all ranks stay on the same epoch.
    - A pass abandoned before all its batches were handed out (Keras peeks at a batch to build
      a model, a framework starts an iterator it never reads, ``take(n)``) does not count: the
      next pass delivers that epoch again from where the abandoned one began.
    - When the loader was moved by hand between passes (``set_epoch``, ``load_state_dict``),
      the next pass starts where it was moved to.

    A pass counts as delivered once all its batches were handed out, whether or not the
    framework has used them all (tf.data reads ahead); the loader's state counts them too.
    """

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self._lock = threading.Lock()
        self._batches: Iterator[dict[str, Any]] | None = None
        self._begun: dict[str, Any] = {}  # the loader's state where the current pass began
        self._left: dict[str, Any] | None = None  # its state when this object last moved it
        self._remaining = 0

    def begin(self) -> int:
        """Start a pass; returns how many batches it delivers."""
        with self._lock:
            self._close()
            loader = self.loader
            if self._left is not None and loader.state_dict() == self._left:
                if self._remaining:
                    loader.load_state_dict(self._begun)
                else:
                    loader.set_epoch(loader.epoch + 1)
            elif batches_left(loader) == 0:
                loader.set_epoch(loader.epoch + 1)
            self._begun = loader.state_dict()
            self._remaining = batches_left(loader)
            self._batches = iter(loader)
            self._left = loader.state_dict()
            return self._remaining

    @property
    def remaining(self) -> int:
        """Batches the current pass still delivers."""
        return self._remaining

    def next(self) -> dict[str, Any]:
        """The next batch of the current pass."""
        with self._lock:
            if self._batches is None or not self._remaining:
                raise ConfigError("this pass over the gpuds dataset has no batch left")
            batch = next(self._batches)
            self._remaining -= 1
            if not self._remaining:
                self._close()  # releases the loader's threads now, not when collected
            self._left = self.loader.state_dict()
            return batch

    def _close(self) -> None:
        # Closing the loader's generator stops its decoding threads and leaves its state where
        # the pass stopped (at the end of the epoch after the last batch).
        if self._batches is not None:
            self._batches.close()  # type: ignore[attr-defined]
            self._batches = None
