"""The codec contract: what one ``--codec`` name declares, in one module of its own.

A :class:`CodecSpec` says everything gpuds does with a codec name: the Zarr v3 codec it writes
after ``bytes [numcodecs.shuffle]`` and how a stored chain is recognised as it, its levels, its
CPU implementation (numcodecs) and its GPU one (:class:`GpuImpl`, nvCOMP), the size a payload
declares before it is decoded, its decode speed class for ``--codec auto``, and the words the
docs and ``--help`` use for it. The generic machinery (:mod:`gpuds.codecs.cpu`,
:mod:`gpuds.codecs.nvcomp`, :func:`gpuds.chunks.parse_chain`, :mod:`gpuds.codecs.auto`) reads
these declarations and never names a codec. :mod:`gpuds.codecs.registry` lists the modules;
docs/DEVELOPING.md shows how to add one.

Nothing here imports numcodecs, zarr, CuPy or nvCOMP: a spec imports what it needs when it is
used, so listing the codecs (``gpuds --help``) costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuds.errors import CorruptChunkError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PORTABILITY", "CodecSpec", "GpuImpl"]

PORTABILITY = {
    "any": "any Zarr v3 reader",
    "zarr-python": "zarr-python (numcodecs codecs)",
    "gpuds-gpu": "gpuds with a GPU (nvCOMP codecs)",
}
"""Who can read a chain, from the most portable: spec codecs only; plus ``numcodecs.*``; plus
``gpuds.nvcomp``. ``gpuds inspect`` reports the least portable level of a field's chain."""

SHUFFLE_NAME = "numcodecs.shuffle"
"""The byte shuffle's name in a chain (it costs the ``zarr-python`` portability level)."""


@dataclass(frozen=True)
class GpuImpl:
    """How nvCOMP (>= 6, ``BitstreamKind.RAW``) encodes and decodes a codec's chunks.

    Parameters
    ----------
    algorithm
        nvCOMP's name for it (``nvcomp.Codec(algorithm=...)``).
    max_chunk_bytes
        The largest chunk gpuds hands nvCOMP to compress, also passed as ``uncomp_chunk_size``
        (see :mod:`gpuds.codecs.nvcomp`).
    decode_limit_bytes
        nvCOMP's largest chunk to decompress (``*DecompressionMaxAllowedChunkSize``).
    size_prefix
        Payloads carry numcodecs.lz4's 4-byte size prefix before nvCOMP's raw block.
    data_types
        The ``data_type`` values gpuds may pass (empty: it passes none).
    level_option, level_values
        The nvCOMP option a gpuds level sets, and the value per level (None: the level itself).
        No option: the level is an encoder hint nvCOMP does not take; the stream stays standard.
    note
        What the docs' codec table says about it.
    """

    algorithm: str
    max_chunk_bytes: int
    decode_limit_bytes: int
    size_prefix: bool = False
    data_types: frozenset[str] = frozenset()
    level_option: str | None = None
    level_values: tuple[int, ...] | None = None
    note: str = ""

    def options(self, level: int | None, data_type: str | None) -> dict[str, Any]:
        """The algorithm options for ``nvcomp.Codec`` (decoding needs the same ones).

        Examples
        --------
        >>> GpuImpl("Gzip", 1, 1, level_option="algorithm_type",
        ...         level_values=(0, 2, 4, 4, 4, 4, 4, 5, 5, 5)).options(6, None)
        {'algorithm_type': 4}
        """
        options: dict[str, Any] = {}
        if level is not None and self.level_option is not None:
            values = self.level_values
            options[self.level_option] = values[level] if values is not None else level
        if data_type is not None:
            options["data_type"] = data_type
        return options

    def data_type(self, dtype: np.dtype[Any] | None, shuffled: bool) -> str | None:
        """The ``data_type`` for a field of ``dtype``: the field's own (little-endian) type when
        nvCOMP takes it and the bytes are not shuffled, else bytes (``|u1``); None when the
        algorithm takes no data type."""
        if not self.data_types:
            return None
        if dtype is None or shuffled or dtype.kind not in "iuf":
            return "|u1"
        typestr = dtype.newbyteorder("<").str if dtype.itemsize > 1 else dtype.str
        return typestr if typestr in self.data_types else "|u1"


@dataclass(frozen=True)
class CodecSpec:
    """One ``--codec`` name. Subclass it in the codec's module for what is code, not data.

    Parameters
    ----------
    name
        The ``--codec`` name.
    summary
        One line for ``--help`` and the docs.
    zarr_name
        The Zarr v3 codec written after ``bytes [numcodecs.shuffle]`` (None: nothing, raw).
    portability
        A key of :data:`PORTABILITY`: who reads a chain of this codec without the shuffle.
    default_level, levels, level_word
        Level used when none is given; the valid range (``(low, None)``: no upper bound; None:
        the codec takes no level); what a level is called in messages ("levels",
        "accelerations").
    speed_class
        Decode speed class for ``--codec auto`` (0 fastest); None: not an ``auto`` candidate.
    cpu
        What decodes it on a CPU, for the docs (None: nothing; gpuds refuses without a GPU).
    gpu
        Its nvCOMP implementation (None: none; ``none`` needs none, its payloads are the bytes).
    size_header
        What declares a payload's decoded size (``zstd frame header``), for messages.
    header_is_exact
        A valid stream decodes to exactly the size its header declares (zstd, gzip). When False
        the GPU asks nvCOMP for the size before decoding (:mod:`gpuds.codecs.nvcomp`).
    head_bytes, tail_bytes
        How many bytes from each end of a payload :meth:`declared_size` reads.
    decodes_in_place
        :meth:`cpu_decode_into` writes straight into the caller's buffer (no copy).
    chain_note
        What the docs' codec table adds about the stored bytes.
    """

    name: str
    summary: str
    zarr_name: str | None
    portability: str
    default_level: int | None = None
    levels: tuple[int, int | None] | None = None
    level_word: str = "levels"
    speed_class: int | None = None
    cpu: str | None = None
    gpu: GpuImpl | None = None
    size_header: str = ""
    header_is_exact: bool = False
    head_bytes: int = 0
    tail_bytes: int = 0
    decodes_in_place: bool = False
    chain_note: str = ""

    # -- levels ---------------------------------------------------------------------------------

    def level_error(self, level: int) -> str | None:
        """Why ``level`` is not valid for this codec (None when it is)."""
        if self.levels is None:
            return f"codec {self.name} takes no level, got {level}"
        low, high = self.levels
        if high is None:
            if level >= low:
                return None
            return f"{self.name} {self.level_word} are {low} or more, got {level}"
        if low <= level <= high:
            return None
        return f"{self.name} {self.level_word} are {low} to {high}, got {level}"

    def level(self, level: int | None) -> int | None:
        """``level``, or the default when it is None."""
        return self.default_level if level is None else level

    # -- the chain -----------------------------------------------------------------------------

    @property
    def stores_raw(self) -> bool:
        """The payload is the chunk's bytes (no compressor, no shuffle)."""
        return self.zarr_name is None

    def zarr_codec(self, level: int | None, data_type: str | None) -> Any:
        """The zarr-python codec object written after the shuffle (None when nothing is)."""
        return None

    def recognize(self, codecs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """The settings of a stored chain's codecs after ``bytes [numcodecs.shuffle]`` (before
        ``crc32c``) when they are this codec's: ``{}``, or ``{"level", "data_type"}`` when
        decoding needs them; None when they are another codec's."""
        names = [c.get("name") for c in codecs]
        return {} if names == ([self.zarr_name] if self.zarr_name else []) else None

    # -- sizes ---------------------------------------------------------------------------------

    def declared_size(self, head: bytes, tail: bytes, length: int) -> int | None:
        """The decoded size a payload of ``length`` bytes declares, from its first
        :attr:`head_bytes` (``head``) and last :attr:`tail_bytes` (``tail``); None when it
        declares none. Raises ``ValueError`` when the header is not this codec's."""
        return None

    def check_declared_size(
        self, payload: bytes | memoryview | np.ndarray, expected: int, key: str
    ) -> bool:
        """Refuse a payload whose header declares another size than ``expected``, before
        anything is allocated; True when the header pins the decoded size (so no other check of
        it is needed before decoding), False when only decoding can tell."""
        import numpy as np

        view = payload if isinstance(payload, np.ndarray) else np.frombuffer(payload, np.uint8)
        length = int(view.size)
        head = view[: self.head_bytes].tobytes()
        tail = view[max(0, length - self.tail_bytes) :].tobytes() if self.tail_bytes else b""
        return self.check_header(head, tail, length, expected, key)

    def check_header(self, head: bytes, tail: bytes, length: int, expected: int, key: str) -> bool:
        """:meth:`check_declared_size` given the payload's ends (e.g. read from device memory)."""
        try:
            declared = self.declared_size(head, tail, length)
        except ValueError as e:
            raise CorruptChunkError(f"corrupt chunk {key}: {e}") from None
        if declared is not None and declared != expected:
            raise CorruptChunkError(
                f"corrupt chunk {key}: its {self.size_header} says {declared} bytes, "
                f"expected {expected}"
            )
        return declared is not None and self.header_is_exact

    # -- the CPU implementation (numcodecs) ----------------------------------------------------

    def cpu_compressor(self, level: int | None) -> Any:
        """The numcodecs object that encodes and decodes it (None when :attr:`cpu` says the
        payload is the bytes themselves)."""
        return None

    def cpu_encode(self, compressor: Any, data: np.ndarray) -> bytes:
        return bytes(data) if compressor is None else bytes(compressor.encode(data))

    def cpu_decode(self, compressor: Any, payload: bytes | memoryview, size: int) -> np.ndarray:
        """Decode one payload whose header was checked (the result's size is checked after)."""
        import numpy as np

        out = np.empty(size, dtype=np.uint8)
        compressor.decode(payload, out=out)
        return out

    def cpu_decode_into(
        self, compressor: Any, payload: bytes | memoryview, out: np.ndarray
    ) -> None:
        """Decode one payload straight into ``out`` (only when :attr:`decodes_in_place`)."""
        compressor.decode(payload, out=out)
