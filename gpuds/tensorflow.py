"""TensorFlow adapters: a ``tf.data.Dataset`` of ``(inputs, targets)`` for ``model.fit``, a
dataset function for ``tf.distribute`` input pipelines, and batches as tensors by DLPack.

- :func:`dataset`: its ``element_spec`` is exact before the first batch and its cardinality
  ``len(loader)``; each pass over it is one epoch of the loader, a new shuffle
  (:class:`gpuds.elements.EpochPasses`). Each loader window's batches cross into TensorFlow in
  one call, as one view of the window's memory, and ``Dataset.rebatch`` cuts them back into the
  loader's batches as slices of it: no copy on the CPU for batches that start on a 64-byte
  boundary (TensorFlow copies the others). tf.data keeps elements in host memory, so batches
  decoded on a GPU are copied to the host for it: decode on the CPU for tf.data.
- :func:`dataset_fn`: each input pipeline's loader takes the ``InputContext``'s pipeline id
  and count as its rank and world size.
- :func:`to_tensorflow`: a batch as tensors by DLPack, on the CPU and straight from CuPy on a
  GPU, for custom training loops.

Unsigned 16-, 32- and 64-bit fields become ``int32``/``int64``, exactly
(:func:`gpuds.elements.widen`). docs/tensorflow.md has the details.

>>> import gpuds, gpuds.tensorflow as gtf                     # doctest: +SKIP
>>> train = gpuds.open("data.zarr")["train"].loader(256, fields=["images", "labels"])
... # doctest: +SKIP
>>> model.fit(gtf.dataset(train, inputs="images", targets="labels"), epochs=10)
... # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

try:
    import tensorflow as tf
except ImportError as e:  # pragma: no cover - exercised only without TensorFlow
    raise ImportError("gpuds.tensorflow needs TensorFlow: pip install 'gpuds[tensorflow]'") from e

import numpy as np

from gpuds.backend import to_host
from gpuds.dataset import Dataset
from gpuds.elements import (
    EpochPasses,
    Fields,
    batches_left,
    element,
    field_names,
    fields_read,
    widen,
    widened,
)
from gpuds.errors import ConfigError
from gpuds.loader import ALIGNMENT, Loader

__all__ = ["dataset", "dataset_fn", "to_tensorflow"]


def _address(values: Any) -> int:
    interface = getattr(values, "__cuda_array_interface__", None) or values.__array_interface__
    return int(interface["data"][0])


def _aligned(values: Any) -> Any:
    """``values``, or a copy of them starting on an :data:`ALIGNMENT`-byte boundary: TensorFlow
    aborts the process on a misaligned tensor that a DLPack import would hand it."""
    if _address(values) % ALIGNMENT == 0:
        return values
    if not isinstance(values, np.ndarray):
        return values.copy()  # CuPy's allocations start on 512-byte boundaries
    raw = np.empty(values.nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    out = raw[start : start + values.nbytes].view(values.dtype).reshape(values.shape)
    out[...] = values
    return out


def to_tensorflow(batch: dict[str, Any]) -> dict[str, tf.Tensor]:
    """The batch's arrays as tensors on the batch's device, by DLPack (no copy unless a batch
    is misaligned or its dtype is widened; see the module notes)."""
    return {
        name: tf.experimental.dlpack.from_dlpack(_aligned(widen(name, values)).__dlpack__())
        for name, values in batch.items()
    }


def _field_specs(
    loader: Loader, inputs: Fields, targets: Fields | None
) -> dict[str, tf.TensorSpec]:
    """Each field named by ``inputs`` and ``targets`` (in order, once) with its tensor spec."""
    batch = loader.batch_size if loader.drop_last else None
    specs = {}
    for name in fields_read(loader, inputs, targets):
        array = loader.dataset.arrays[name]
        try:
            dtype = tf.as_dtype(widened(np.dtype(array.dtype)))
        except TypeError as e:
            raise ConfigError(
                f"field {name!r} is {array.dtype}, which TensorFlow has no type for"
            ) from e
        specs[name] = tf.TensorSpec((batch, *array.shape[1:]), dtype)
    return specs


def dataset(loader: Loader, inputs: Fields, targets: Fields | None = None) -> tf.data.Dataset:
    """The loader's batches as a ``tf.data.Dataset`` of ``(inputs, targets)``.

    Parameters
    ----------
    loader
        From ``gpuds.open(path)[split].loader(...)``; it must read every field named. A loader
        whose epoch would deliver nothing (an empty split) raises
        :class:`~gpuds.errors.ConfigError` when it is made, so there is never an empty dataset.
    inputs, targets
        A field name, a tuple of names or a dict of names each; without ``targets`` the
        elements are ``(inputs,)``.

    Returns
    -------
    tf.data.Dataset
        Each pass is one epoch of the loader (see the module notes).

    Examples
    --------
    >>> loader = gpuds.open("data.zarr")["train"].loader(32, fields=["images", "labels"])
    ... # doctest: +SKIP
    >>> dataset(loader, "images", "labels").element_spec          # doctest: +SKIP
    (TensorSpec(shape=(None, 28, 28, 3), dtype=tf.float32, name=None),
     TensorSpec(shape=(None,), dtype=tf.int64, name=None))
    """
    return _dataset(loader, inputs, targets, counted=True)


def _dataset(
    loader: Loader, inputs: Fields, targets: Fields | None, *, counted: bool
) -> tf.data.Dataset:
    """:func:`dataset`; ``counted=False`` leaves its cardinality unknown."""
    specs = _field_specs(loader, inputs, targets)
    fields = list(specs)
    runs = _Runs(EpochPasses(loader), fields)

    # One Python call per run of batches (a loader window: 16 batches with the defaults), which
    # TensorFlow's rebatch cuts back into the loader's batches, sharing their memory: a call
    # per batch (tf.numpy_function) would cost about what the loader spends on a batch. Each
    # iterator counts its runs from 0, so run 0 starts a pass; an empty run ends it.
    def run(index: np.ndarray) -> list[np.ndarray]:
        arrays = runs.next(int(index))
        return [to_host(widen(name, values)) for name, values in zip(fields, arrays, strict=True)]

    def one_run(index: tf.Tensor) -> tuple[Any, ...]:
        tensors = tf.numpy_function(
            run, [index], [specs[f].dtype for f in fields], stateful=True, name="gpuds_run"
        )
        for name, tensor in zip(fields, tensors, strict=True):
            tensor.set_shape((None, *specs[name].shape[1:]))
        return element(dict(zip(fields, tensors, strict=True)), inputs, targets)

    def rows(*element: Any) -> tf.Tensor:
        return tf.shape(tf.nest.flatten(element)[0])[0] > 0

    data = (
        tf.data.Dataset.range(np.iinfo(np.int64).max)
        .map(one_run)
        .take_while(rows)
        .rebatch(loader.batch_size, drop_remainder=loader.drop_last)
    )
    if counted and batches_left(loader) in (0, len(loader)):  # else the first pass is shorter
        data = data.apply(tf.data.experimental.assert_cardinality(len(loader)))
    return data


def _owner(values: np.ndarray) -> Any:
    while isinstance(values.base, np.ndarray):
        values = values.base
    return values if values.base is None else values.base


def _follows(first: Any, second: Any) -> bool:
    """Whether ``second`` starts where ``first`` ends, in the memory of the same array."""
    return (
        isinstance(first, np.ndarray)
        and isinstance(second, np.ndarray)
        and first.dtype == second.dtype
        and first.shape[1:] == second.shape[1:]
        and first.flags.c_contiguous
        and second.flags.c_contiguous
        and _address(first) + first.nbytes == _address(second)
        and _owner(first) is _owner(second)
    )


def _joined(parts: list[Any]) -> Any:
    """One array of ``parts``: a view of their memory when they lie back to back in one array
    (as the batches of one loader window do), a copy otherwise."""
    if len(parts) == 1:
        return parts[0]
    if not all(_follows(a, b) for a, b in itertools.pairwise(parts)):
        return np.concatenate([to_host(part) for part in parts])
    # as_strided keeps the first part, and so the array it is a view of, alive.
    return np.lib.stride_tricks.as_strided(
        parts[0], (sum(len(part) for part in parts), *parts[0].shape[1:])
    )


def _run_lengths(loader: Loader) -> list[int]:
    """How many batches each run of the loader's current epoch holds, from where it stands.

    A run is a sequence of consecutive batches from one window of the loader, which hands them
    out as consecutive views of the window's memory; a batch across two windows (a new array)
    is a run of its own.
    """
    plan = loader.plan()
    first = np.arange(plan.lo + int(loader.state_dict()["position"]), plan.hi, loader.batch_size)
    last = np.minimum(first + loader.batch_size, plan.hi) - 1
    if loader.drop_last:
        full = last - first + 1 == loader.batch_size
        first, last = first[full], last[full]
    if not len(first):
        return []
    starts = np.array([window.start for window in plan.windows])
    # Stream positions past the end wrap around (remainder="pad").
    window = np.searchsorted(starts, first % plan.n, side="right")
    whole = (window == np.searchsorted(starts, last % plan.n, side="right")) & (
        last % plan.n >= first % plan.n
    )
    joins = whole[1:] & whole[:-1] & (window[1:] == window[:-1])
    ends = np.append(np.flatnonzero(~joins), len(first) - 1)
    return np.diff(ends, prepend=-1).tolist()


class _Runs:
    """The loader's batches in runs (:func:`_run_lengths`), each as one array per field, pass
    by pass (:class:`~gpuds.elements.EpochPasses`); run 0 starts a pass."""

    def __init__(self, passes: EpochPasses, fields: list[str]) -> None:
        self.passes = passes
        arrays = passes.loader.dataset.arrays
        self.empty = {f: np.empty((0, *arrays[f].shape[1:]), arrays[f].dtype) for f in fields}
        self._lock = threading.Lock()
        self._lengths: list[int] = []  # of the runs left, the next last
        self._taken = 0

    def next(self, index: int) -> list[Any]:
        """Run ``index`` of the current pass, one array per field (no rows after the last)."""
        with self._lock:
            if index == 0:
                self.passes.begin()
                self._lengths = _run_lengths(self.passes.loader)[::-1]
                self._taken = 0
            elif index != self._taken:
                raise ConfigError(
                    "two iterators over one gpuds dataset were read at once: iterate one "
                    "pass at a time (each pass is an epoch of one loader)"
                )
            self._taken += 1
            if not self._lengths:
                return list(self.empty.values())
            batches = [self.passes.next() for _ in range(self._lengths.pop())]
        return [_joined([batch[f] for batch in batches]) for f in self.empty]


def dataset_fn(
    data: Dataset,
    batch_size: int,
    *,
    inputs: Fields,
    targets: Fields | None = None,
    **options: Any,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A dataset function for ``strategy.distribute_datasets_from_function``.

    Each input pipeline reads a disjoint share of ``data`` (a split from ``gpuds.open``): its
    loader's rank and world size are the ``InputContext``'s ``input_pipeline_id`` and
    ``num_input_pipelines``, its batch size ``batch_size`` (the global batch) divided by the
    replicas in sync. ``options`` go to ``data.loader(...)``; ``fields`` defaults to the fields
    that ``inputs`` and ``targets`` name. When a pipeline feeds several replicas (several GPUs
    in one worker), TensorFlow would count the pipeline's batches as steps, so the dataset's
    cardinality is left unknown there.

    Examples
    --------
    >>> strategy = tf.distribute.MirroredStrategy()                 # doctest: +SKIP
    >>> train = strategy.distribute_datasets_from_function(
    ...     dataset_fn(gpuds.open("data.zarr")["train"], 256, inputs="images", targets="labels")
    ... )                                                            # doctest: +SKIP
    """
    taken = {"rank", "world_size"} & set(options)
    if taken:
        raise ConfigError(
            f"dataset_fn sets {' and '.join(sorted(taken))} from the strategy's InputContext; "
            "do not pass them"
        )
    names = field_names(inputs, "inputs")
    if targets is not None:
        names += field_names(targets, "targets")
    options.setdefault("fields", list(dict.fromkeys(names)))

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        loader = data.loader(
            context.get_per_replica_batch_size(batch_size),
            rank=context.input_pipeline_id,
            world_size=context.num_input_pipelines,
            **options,
        )
        # With several replicas per pipeline, TensorFlow would report the pipeline's batches
        # as the distributed dataset's steps, several times too many: leave them unknown.
        counted = context.num_replicas_in_sync <= context.num_input_pipelines
        return _dataset(loader, inputs, targets, counted=counted)

    return make
