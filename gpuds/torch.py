"""PyTorch adapters: batches as tensors by DLPack, and an ``IterableDataset`` for DataLoader/DDP.

``to_torch(batch)`` wraps each array of a loader batch as a ``torch.Tensor`` with
``torch.from_dlpack``: no copy, on the CPU (NumPy) and on the GPU (CuPy, same device, no host
round trip). The loader never reuses a buffer it handed out, so the tensors stay valid.

``GpudsIterableDataset`` gives each DataLoader worker of each DDP rank its own disjoint share:
the loader's world is ``ranks * workers`` and this worker's rank is
``rank * workers + worker_id`` (rank and world size from the arguments, torch.distributed, or
the ``RANK``/``WORLD_SIZE`` environment). Use it with ``DataLoader(ds, batch_size=None)``: gpuds
already makes the batches.

>>> ds = GpudsIterableDataset("data.zarr", split="train", batch_size=256, device="cpu")
... # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("gpuds.torch needs PyTorch: pip install torch") from e

from gpuds.dataset import open_dataset
from gpuds.loader import Loader, resolve_ranks

__all__ = ["GpudsIterableDataset", "to_torch"]


def to_torch(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The batch's arrays as tensors sharing their memory (DLPack, zero-copy)."""
    return {name: torch.from_dlpack(values) for name, values in batch.items()}


class GpudsIterableDataset(IterableDataset):
    """A gpuds store (or one split) as batches of tensors, sharded over DDP ranks and workers.

    Parameters
    ----------
    path
        The store.
    split
        The split to read (None for an unsplit store).
    batch_size, fields, shuffle, seed, drop_last, device, prefetch, shuffle_window, remainder
        As for :class:`gpuds.loader.Loader`.
    rank, world_size
        This process's DDP rank (default: torch.distributed or the environment).
    """

    def __init__(
        self,
        path: str,
        *,
        batch_size: int,
        split: str | None = None,
        fields: Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.path = path
        self.split = split
        self.batch_size = batch_size
        self.fields = list(fields) if fields is not None else None
        self.rank, self.world_size = resolve_ranks(rank, world_size)
        self.options = options
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (in the main process; workers get it when they start)."""
        self.epoch = epoch

    def loader(self) -> Loader:
        """The loader of this process (and DataLoader worker)."""
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        dataset = open_dataset(self.path)
        if self.split is not None:
            dataset = dataset[self.split]
        loader = dataset.loader(
            self.batch_size,
            fields=self.fields,
            rank=self.rank * workers + worker_id,
            world_size=self.world_size * workers,
            workers=None if worker is None else 1,
            **self.options,
        )
        loader.set_epoch(self.epoch)
        return loader

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader():
            yield to_torch(batch)
