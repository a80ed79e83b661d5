"""Keras 3 adapter: a ``keras.utils.PyDataset`` over a loader, for ``model.fit`` on any backend.

``PyDataset(loader, inputs="images", targets="labels")`` hands Keras ``(inputs, targets)``
batches as the backend's own arrays, through the matching gpuds adapter: TensorFlow tensors
(:func:`gpuds.tensorflow.to_tensorflow`), JAX arrays (:func:`gpuds.jax.to_jax`, with its
64-bit checks), PyTorch tensors (:func:`gpuds.torch.to_torch`), all by DLPack, so batches decoded
on a GPU stay there; NumPy arrays for the ``numpy`` backend. Unsigned 16-, 32- and 64-bit fields
become ``int32``/``int64`` first, exactly (:func:`gpuds.elements.widen`).

Each Keras epoch is one epoch of the loader, a new shuffle: ``on_epoch_begin`` starts the next
one (:class:`gpuds.elements.EpochPasses`: an epoch Keras abandoned, e.g. after peeking at a
batch to build the model, is delivered again). gpuds already shuffles, so the batch index
Keras asks for does not pick the batch: batches come in the loader's order, whatever order
``fit(shuffle=True)`` asks for them in, each exactly once per epoch. For the TensorFlow backend
:func:`gpuds.tensorflow.dataset` is the better fit (tf.data, no Python call per index); this
class is for Keras with the JAX or PyTorch backend.

>>> import gpuds, gpuds.keras                                   # doctest: +SKIP
>>> train = gpuds.open("data.zarr")["train"].loader(64, fields=["images", "labels"])
... # doctest: +SKIP
>>> model.fit(gpuds.keras.PyDataset(train, "images", "labels"), epochs=10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import keras
except ImportError as e:  # pragma: no cover - exercised only without Keras
    raise ImportError(
        "gpuds.keras needs Keras 3: pip install keras (or 'gpuds[tensorflow]')"
    ) from e

from gpuds.backend import to_host
from gpuds.elements import EpochPasses, Fields, batches_left, element, fields_read, widen
from gpuds.errors import ConfigError
from gpuds.loader import Loader

__all__ = ["PyDataset"]


def _converter(backend: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The gpuds adapter that turns a batch into ``backend``'s arrays (imported when used)."""
    if backend == "tensorflow":
        from gpuds.tensorflow import to_tensorflow

        return to_tensorflow
    if backend == "jax":
        from gpuds.jax import to_jax

        return to_jax
    if backend == "torch":
        from gpuds.torch import to_torch

        return to_torch
    return lambda batch: {name: to_host(values) for name, values in batch.items()}


class PyDataset(keras.utils.PyDataset):
    """A loader's batches as a Keras ``PyDataset`` of ``(inputs, targets)``.

    Parameters
    ----------
    loader
        From ``gpuds.open(path)[split].loader(...)``, at the start of an epoch (Keras counts
        whole epochs: to resume, ``loader.set_epoch(e)`` and ``fit(initial_epoch=e)``).
    inputs, targets
        A field name, a tuple of names or a dict of names each; without ``targets`` the
        batches are ``(inputs,)``.
    **kwargs
        Keras's ``max_queue_size``. ``workers`` stays 1 and ``use_multiprocessing`` False:
        the loader decodes on threads of its own (``workers=`` of ``.loader()``).
    """

    def __init__(
        self, loader: Loader, inputs: Fields, targets: Fields | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if self.workers != 1 or self.use_multiprocessing:
            raise ConfigError(
                "gpuds.keras.PyDataset runs with workers=1 and use_multiprocessing=False: the "
                "loader already decodes on its own threads (set them with .loader(workers=N))"
            )
        self._fields = fields_read(loader, inputs, targets)
        if batches_left(loader) not in (0, len(loader)):
            raise ConfigError(
                "the loader stands in the middle of an epoch, and Keras counts whole epochs: "
                "start it at an epoch (loader.set_epoch(e)) and fit(..., initial_epoch=e)"
            )
        self.loader = loader
        self.inputs, self.targets = inputs, targets
        self._passes = EpochPasses(loader)
        self._convert = _converter(keras.backend.backend())

    def __len__(self) -> int:
        return len(self.loader)

    def on_epoch_begin(self) -> None:
        self._passes.begin()

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        # The index does not pick the batch (see the module notes): the next one does.
        if not self._passes.remaining:
            self._passes.begin()
        batch = self._passes.next()
        values = self._convert({name: widen(name, batch[name]) for name in self._fields})
        return element(values, self.inputs, self.targets)
