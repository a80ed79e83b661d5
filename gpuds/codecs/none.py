"""``--codec none``: chunks stored as their bytes (``bytes``, then ``crc32c``), no shuffle.

What ``--codec auto`` writes for a field nothing compresses. Any Zarr v3 reader reads it; on
the GPU the payloads are copied as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuds.codecs.spec import CodecSpec

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CODECS"]


class Raw(CodecSpec):
    def declared_size(self, head: bytes, tail: bytes, length: int) -> int | None:
        return length

    def cpu_decode(self, compressor: Any, payload: bytes | memoryview, size: int) -> np.ndarray:
        import numpy as np

        return np.frombuffer(payload, dtype=np.uint8)


CODECS = (
    Raw(
        name="none",
        summary="the bytes as they are (what auto stores when nothing compresses)",
        zarr_name=None,
        portability="any",
        cpu="NumPy",
        size_header="length",
        header_is_exact=True,
    ),
)
