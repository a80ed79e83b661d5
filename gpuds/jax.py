"""JAX adapters: loader batches as JAX arrays by DLPack, with ranks from JAX's processes.

``to_jax(batch)`` turns each array of a loader batch into a ``jax.Array`` with
``jax.numpy.from_dlpack``. On the CPU, XLA shares the batch's memory when it starts on a 64-byte
boundary (the loader aligns its windows, so a batch of ``b`` samples of ``s`` bytes does when
``b * s`` is a multiple of 64, e.g. 256 images of 3,072 bytes) and copies it otherwise; on a GPU
(CuPy batches) it takes the device memory without a host round trip. The loader never writes a
batch's memory again once handed out, which is what a JAX array (immutable) requires.

64-bit fields: with JAX's default ``jax_enable_x64=False``, JAX turns ``int64`` into ``int32``
and would silently wrap values that do not fit. ``to_jax`` checks instead: a 64-bit integer field
whose values fit is converted to 32 bits (a copy), one that does not fit raises
:class:`~gpuds.errors.ConfigError` naming the field. ``float64`` becomes ``float32``, JAX's
documented default. With ``jax.config.update("jax_enable_x64", True)`` nothing is converted.

``loader(dataset, batch_size, ...)`` is ``dataset.loader(...)`` with the rank and world size
taken from ``jax.process_index()`` and ``jax.process_count()`` (multi-host jobs after
``jax.distributed.initialize()``), unless given.

>>> import gpuds, gpuds.jax                                   # doctest: +SKIP
>>> train = gpuds.open("data.zarr")["train"]                  # doctest: +SKIP
>>> for batch in gpuds.jax.batches(gpuds.jax.loader(train, 256)):  # doctest: +SKIP
...     params = step(params, batch["images"], batch["labels"])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

try:
    import jax
    import jax.numpy as jnp
except ImportError as e:  # pragma: no cover - exercised only without jax
    raise ImportError("gpuds.jax needs JAX: pip install jax (or 'gpuds[jax]')") from e

import numpy as np

from gpuds.dataset import Dataset
from gpuds.errors import ConfigError
from gpuds.loader import Loader

__all__ = ["batches", "loader", "to_jax"]


def _fit_x64(name: str, values: Any) -> Any:
    """``values`` as JAX will hold them when 64-bit types are disabled, checked for loss."""
    dtype = np.dtype(values.dtype)
    if dtype.itemsize != 8 or dtype.kind not in "iu" or jax.config.read("jax_enable_x64"):
        return values
    narrow = np.dtype(f"{dtype.kind}4")
    info = np.iinfo(narrow)
    if len(values) and (values.min() < info.min or values.max() > info.max):
        raise ConfigError(
            f"field {name!r} is {dtype} with values outside {narrow}'s range, and JAX runs "
            "with 64-bit types disabled (it would wrap them silently): enable them with "
            "jax.config.update('jax_enable_x64', True), or cast the field in preprocess"
        )
    return values.astype(narrow)


def to_jax(batch: dict[str, Any]) -> dict[str, jax.Array]:
    """The batch's arrays as JAX arrays on the batch's device (DLPack; see the module notes
    on when the memory is shared and on 64-bit fields)."""
    return {name: jnp.from_dlpack(_fit_x64(name, values)) for name, values in batch.items()}


def batches(source: Loader) -> Iterator[dict[str, jax.Array]]:
    """Iterate ``source``'s batches as JAX arrays."""
    for batch in source:
        yield to_jax(batch)


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    **options: Any,
) -> Loader:
    """``dataset.loader(batch_size, ...)`` with this JAX process's share of the data: rank and
    world size default to ``jax.process_index()`` and ``jax.process_count()``."""
    return dataset.loader(
        batch_size,
        rank=jax.process_index() if rank is None else rank,
        world_size=jax.process_count() if world_size is None else world_size,
        **options,
    )
