"""The GPU implementation of the chunk codecs: NVIDIA nvCOMP (>= 6) through its Python API, CuPy.

One :class:`NvcompChunkCodec` serves one codec name (``zstd``, ``lz4``, ``gzip``, ``gdeflate``,
``bitcomp``, ``ans``, ``cascaded``) for one dtype. A batch of chunks goes to the device in one
copy, is byte-shuffled there (:func:`~gpuds.codecs.base.shuffle_bytes`), and is compressed or
decompressed by **one** batched nvCOMP call. :meth:`NvcompChunkCodec.decode_device` is the loader's
entry point: one device buffer holding a shard's compressed chunks in, one device buffer holding
the decoded chunks out, with no host round trip for the data.

What nvCOMP does, and where that is written down
------------------------------------------------
Sources: the docstrings of the installed package (``help(nvcomp.Codec)``,
``help(nvcomp.as_arrays)``, ``help(nvcomp.BatchArray)`` in nvidia-nvcomp-cu13 6.0.0.12, the
authoritative reference for the API used here); the *Python API* page
(docs.nvidia.com/cuda/nvcomp/py_api.html); the *Release notes* page (6.0.0, 5.3.0); the C headers
shipped in nvidia-libnvcomp 6.0.0 (``nvcomp/*.h``, ``nvcomp/*.hpp``); NVIDIA's sample
``nvCOMP/examples/high_level_quickstart_example.cpp`` in NVIDIA/CUDALibrarySamples.

- ``Codec(algorithm=..., bitstream_kind=BitstreamKind.RAW)``: RAW "compresses input data as is,
  just using the underlying compression algorithm" with no nvCOMP header (Python API page), so RAW
  Zstd is a standard zstd frame, RAW LZ4 a bare LZ4 block, RAW Gzip a gzip member. Unknown keyword
  arguments raise ``ValueError("Unsupported argument")``: Zstd has no level argument at all
  (``nvcompBatchedZstdCompressOpts_t`` is reserved bytes only). Per algorithm: LZ4 ``data_type``,
  ``bitshuffle_mode``; Gzip/Deflate/GDeflate ``algorithm_type`` 0-5 (0 entropy only, 1 default,
  2 "beats zlib level 1", 4 "beats zlib level 6", 5 highest ratio); Bitcomp ``algorithm_type``
  (0 default, 1 sparse), ``data_type`` (integers, ``<f2 <f4 <f8``), ``mode``, ``delta``; ANS
  ``data_type`` in ``|u1 |i1 |f1 <f2 <f4``; Cascaded ``data_type`` (integers), ``mode``,
  ``compression_level`` (default 3). Gzip *encoding* exists since nvCOMP 5.3 (release notes).
- **uncomp_chunk_size and RAW**: "With BitstreamKind::RAW, the manager doesn't split the input
  data into smaller chunks like it does with default (NVCOMP_NATIVE)" and "Chunk_size is ignored
  when we use BitstreamKind::RAW" (NVIDIA's quickstart sample); every RAW buffer is one nvCOMP
  chunk, so one Zarr chunk = one nvCOMP chunk. The value is still validated by the managers
  (``zstd.hpp``: "uncomp_chunk_size must be <= nvcompZstdCompressionMaxAllowedChunkSize"). gpuds
  sets it to :data:`MAX_CHUNK_BYTES` for the codec, a power of two within nvCOMP's limit, and
  refuses to encode any chunk larger than that, so no chunk could be split even by a release that
  honoured the setting under RAW.
- Limits per chunk (nvCOMP 6 headers): compression ``1 << 24`` (16 MiB) for LZ4, ANS, Bitcomp,
  Cascaded (and Snappy); ``2**31 - 1`` for Zstd, ``2**31`` for GDeflate and Deflate, more for
  Gzip. Decompression: LZ4 ``2**32 - 1``, Zstd ``2**31 - 1``, ANS and Bitcomp ``1 << 25``,
  Cascaded ``(1 << 24) + 8``, GDeflate ``2**32 + 288``, Gzip ``2**32 - 1``.
- Batches (6.0): ``as_arrays(list)`` and ``as_arrays(buffer, offsets, sizes)`` return a
  ``BatchArray`` (the latter carves one device buffer without copying; each entry's address must
  meet ``Codec.get_required_(de)compression_alignment()``); ``encode(batch)`` /
  ``decode(batch, out=batch)`` return a ``BatchArray``; indexing it waits for the work and gives
  an ``Array`` view (with ``__cuda_array_interface__``) that must not outlive the batch;
  ``BatchArray.cpu()`` copies every entry to the host; ``buffer_sizes`` lists the entry sizes.
  nvCOMP 4/5 took and returned plain lists, so gpuds requires nvCOMP >= 6.
- Decoded sizes: for RAW, nvCOMP derives them from the stream (Zstd frame header; LZ4 by walking
  the stream; ``get_uncomp_buffer_size``). A ``decode(..., out=batch)`` output "keeps its fixed
  capacity and a ValueError is raised when any of them is too small". gpuds always decodes into
  preallocated outputs of exactly the expected sizes, so a chunk that claims more never makes
  nvCOMP allocate more; before that, the sizes written in the payloads (the lz4 prefix, the zstd
  frame content size, the gzip ISIZE) are checked on the host.
- Streams: a ``Codec`` must not be shared between threads (Python API page, "Thread-safety"), so
  each thread gets its own, bound to that thread's current CuPy stream and device at first use.
- Known issue (release notes): the Cascaded, GDeflate, Zstd, Deflate, Gzip and Bitcomp
  decompressors "can only operate on valid input data". The size checks stop over-allocation,
  not a malformed stream inside a chunk: decode stores you trust, or protect chunks with crc32c.

Not verifiable without a GPU (``scripts/gpu-check.sh`` and the ``gpu`` tests check them): that
nvCOMP's RAW LZ4/Zstd/Gzip output decodes with lz4/libzstd/zlib (third-party reports say yes);
that ``BatchArray.buffer_sizes`` after ``decode(out=...)`` reports the decoded sizes rather than
the capacities (if not, the post-decode size check is vacuous for the nvCOMP-only codecs; the
portable ones are covered by the header checks); that a failed chunk makes ``decode`` raise
rather than leave garbage; the alignment values; that the Python ``Codec`` ignores
``uncomp_chunk_size`` under RAW like the C++ manager. CPU tests drive this module through a test
double of nvCOMP (tests/nvcomp_double.py): they check the orchestration, not nvCOMP.

Decisions: a level maps to nvCOMP's own knob where one exists (gzip: zlib level 0/1/2-6/7-9 to
``algorithm_type`` 0/2/4/5; gdeflate: ``algorithm_type`` 0-5; cascaded: ``compression_level``).
nvCOMP's Zstd and LZ4 have no level, so on the GPU the level of ``zstd``/``lz4`` is ignored (it is
an encoder hint; the stream stays standard). ``ans`` and ``bitcomp`` take no level. The nvCOMP
``data_type`` is the field's dtype when the algorithm supports it and bytes are not shuffled,
else ``|u1``.
"""

from __future__ import annotations

import importlib
import itertools
import threading
from collections.abc import Sequence
from functools import cached_property
from types import ModuleType
from typing import Any

import numpy as np

from gpuds.codecs.base import ChunkCodec, CodecConfig, shuffle_bytes, unshuffle_bytes
from gpuds.codecs.cpu import zstd_content_size
from gpuds.errors import ConfigError, CorruptChunkError, DeviceError

__all__ = ["DECODE_LIMIT_BYTES", "MAX_CHUNK_BYTES", "NVCOMP_ALGORITHMS", "NvcompChunkCodec"]

INSTALL_HINT = "install gpuds[gpu-cu12] or gpuds[gpu-cu13] (the one matching your CUDA)"

NVCOMP_ALGORITHMS: dict[str, str] = {
    "zstd": "Zstd",
    "lz4": "LZ4",
    "gzip": "Gzip",
    "gdeflate": "GDeflate",
    "bitcomp": "Bitcomp",
    "ans": "ANS",
    "cascaded": "Cascaded",
}

_MIB = 1 << 20
# Largest chunk gpuds hands nvCOMP to compress, also passed as uncomp_chunk_size (see docstring):
# nvCOMP's limit for the 16 MiB formats; for the others a gpuds cap well above any sane Zarr chunk.
MAX_CHUNK_BYTES: dict[str, int] = {
    "zstd": 256 * _MIB,
    "gzip": 256 * _MIB,
    "gdeflate": 256 * _MIB,
    "lz4": 16 * _MIB,
    "ans": 16 * _MIB,
    "bitcomp": 16 * _MIB,
    "cascaded": 16 * _MIB,
}
# nvCOMP 6's decompression limits per chunk (nvcomp/*.h, *DecompressionMaxAllowedChunkSize).
DECODE_LIMIT_BYTES: dict[str, int] = {
    "zstd": (1 << 31) - 1,
    "gzip": (1 << 32) - 1,
    "gdeflate": (1 << 32) + 288,
    "lz4": (1 << 32) - 1,
    "ans": 1 << 25,
    "bitcomp": 1 << 25,
    "cascaded": (1 << 24) + 8,
}

# zlib level -> nvCOMP's Gzip algorithm_type ("2 beats zlib level 1, 4 beats zlib level 6").
_GZIP_TYPES = (0, 2, 4, 4, 4, 4, 4, 5, 5, 5)
_BITCOMP_TYPES = frozenset(
    {"|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"}
)
_ANS_TYPES = frozenset({"|u1", "|i1", "<f2", "<f4"})
_CASCADED_TYPES = frozenset({"|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8"})
_ZSTD_HEADER_MAX = 18  # magic 4 + descriptor 1 + window 1 + dictionary id 4 + content size 8


def _import_cupy() -> ModuleType:
    try:
        return importlib.import_module("cupy")
    except ImportError as e:
        raise ImportError(f"CuPy is not installed ({e}); {INSTALL_HINT}") from e


def _import_nvcomp() -> ModuleType:
    try:
        from nvidia import nvcomp
    except ImportError as e:
        raise ImportError(f"nvCOMP (nvidia.nvcomp) is not installed ({e}); {INSTALL_HINT}") from e
    if not hasattr(nvcomp, "BatchArray"):
        version = getattr(nvcomp, "__version__", "unknown")
        raise ImportError(f"gpuds needs nvCOMP >= 6, found {version}; {INSTALL_HINT}")
    return nvcomp


class NvcompChunkCodec(ChunkCodec):
    """``[shuffle] -> name`` on the GPU with nvCOMP, for one element size.

    Building one imports nothing; CuPy and nvCOMP are imported, and the ``nvcomp.Codec`` is made,
    at first use. An instance may be used from several threads: each gets its own ``nvcomp.Codec``
    bound to that thread's current CuPy stream. ``none`` needs no nvCOMP: payloads are the raw
    chunks, and only their sizes are checked.

    Parameters
    ----------
    config
        Codec name (one of :data:`NVCOMP_ALGORITHMS` or ``none``), level and shuffle. A ``None``
        level is nvCOMP's default; see the module docstring for what a level maps to.
    itemsize
        Element size in bytes: the byte shuffle's stride.
    dtype
        The field's dtype, if known: it picks nvCOMP's ``data_type`` for bitcomp, ans and cascaded
        (bytes otherwise).

    Examples
    --------
    >>> codec = NvcompChunkCodec(CodecConfig("gzip", 6, True), itemsize=4)
    >>> codec.nvcomp_options
    {'algorithm_type': 4}
    """

    def __init__(self, config: CodecConfig, itemsize: int, dtype: Any = None) -> None:
        if config.name not in (*NVCOMP_ALGORITHMS, "none"):
            names = ", ".join((*NVCOMP_ALGORITHMS, "none"))
            raise ConfigError(f"Expected a codec in {names}, got {config.name!r}")
        self.config = config
        self.name = config.name
        self.level = config.level
        self.itemsize = int(itemsize)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        if self.dtype is not None and self.dtype.itemsize != self.itemsize:
            raise ConfigError(f"Expected a dtype of {itemsize} bytes, got {self.dtype}")
        self.shuffle = config.shuffle and self.itemsize > 1 and self.name != "none"
        self.nvcomp_options = self._options()

    def __repr__(self) -> str:
        return f"NvcompChunkCodec({self.config!r}, itemsize={self.itemsize}, dtype={self.dtype})"

    def _options(self) -> dict[str, Any]:
        """The algorithm options passed to ``nvcomp.Codec`` (decoding needs the same ones)."""
        name, level = self.name, self.level
        options: dict[str, Any] = {}
        if name == "gzip" and level is not None:
            if not 0 <= level <= 9:
                raise ConfigError(f"Expected a gzip level in 0..9, got {level}")
            options["algorithm_type"] = _GZIP_TYPES[level]
        elif name == "gdeflate" and level is not None:
            if not 0 <= level <= 5:
                raise ConfigError(
                    f"Expected a gdeflate level (nvCOMP's algorithm_type) in 0..5, got {level}"
                )
            options["algorithm_type"] = level
        elif name == "cascaded" and level is not None:
            if level < 0:
                raise ConfigError(f"Expected a cascaded level >= 0, got {level}")
            options["compression_level"] = level
        elif name in ("ans", "bitcomp") and level is not None:
            raise ConfigError(f"nvCOMP's {name} has no level; got {level}, leave it unset")
        supported = {"bitcomp": _BITCOMP_TYPES, "ans": _ANS_TYPES, "cascaded": _CASCADED_TYPES}
        if name in supported:
            dtype = self.dtype
            numeric = dtype is not None and dtype.kind in "iuf"
            typestr = dtype.newbyteorder("<").str if dtype is not None and numeric else ""
            use = typestr in supported[name] and not self.shuffle
            options["data_type"] = typestr if use else "|u1"
        return options

    # -- the lazily built backend ----------------------------------------------------------------

    @cached_property
    def _cp(self) -> ModuleType:
        return _import_cupy()

    @cached_property
    def _nv(self) -> ModuleType:
        return _import_nvcomp()

    @cached_property
    def _local(self) -> threading.local:
        return threading.local()

    def _codec(self) -> tuple[Any, int]:
        """This thread's ``nvcomp.Codec`` and the stream it runs on."""
        local = self._local
        if not hasattr(local, "codec"):
            cp, nv = self._cp, self._nv
            stream = int(cp.cuda.get_current_stream().ptr)
            local.stream = stream
            local.codec = nv.Codec(
                algorithm=NVCOMP_ALGORITHMS[self.name],
                bitstream_kind=nv.BitstreamKind.RAW,
                uncomp_chunk_size=MAX_CHUNK_BYTES[self.name],
                device_id=int(cp.cuda.Device().id),
                cuda_stream=stream,
                **self.nvcomp_options,
            )
        return local.codec, local.stream

    # -- ChunkCodec --------------------------------------------------------------------------------

    def encode(self, chunks: Sequence[np.ndarray]) -> list[bytes]:
        """Compress raw chunks with one nvCOMP call; returns the stored payloads, in order."""
        raws = [np.ascontiguousarray(c).reshape(-1) for c in chunks]
        limit = MAX_CHUNK_BYTES.get(self.name, 0)
        for raw in raws:
            if raw.dtype != np.uint8:
                raise ValueError(f"Expected uint8 chunks, got {raw.dtype}")
            if raw.size == 0:
                raise ValueError("nvCOMP cannot compress an empty chunk")
            if limit and raw.size > limit:
                raise ConfigError(
                    f"a chunk of {raw.size} bytes exceeds the {limit}-byte limit of {self.name} "
                    "on the GPU; choose smaller chunks"
                )
        if self.name == "none":
            return [raw.tobytes() for raw in raws]
        if not raws:
            return []
        cp, nv = self._cp, self._nv
        codec, stream = self._codec()
        host, offsets = _pack(raws, max(1, int(codec.get_required_compression_alignment())))
        sizes = [int(r.size) for r in raws]
        device = cp.asarray(host)
        if self.shuffle:
            for o, n in zip(offsets, sizes, strict=True):
                device[o : o + n] = shuffle_bytes(device[o : o + n], self.itemsize)
        compressed = codec.encode(nv.as_arrays(device, offsets, sizes, cuda_stream=stream)).cpu()
        lengths = [int(n) for n in compressed.buffer_sizes]
        payloads = [np.asarray(compressed[i])[: lengths[i]].tobytes() for i in range(len(raws))]
        if self.name == "lz4":  # numcodecs.lz4 framing: 4-byte little-endian size, then the block
            payloads = [n.to_bytes(4, "little") + p for n, p in zip(sizes, payloads, strict=True)]
        return payloads

    def decode(
        self, payloads: Sequence[bytes | memoryview], sizes: Sequence[int], keys: Sequence[str]
    ) -> list[np.ndarray]:
        """Decode payloads to raw chunks of exactly ``sizes`` bytes with one nvCOMP call."""
        _same_length(payloads=payloads, sizes=sizes, keys=keys)
        if not payloads:
            return []
        expected = self._check_sizes(sizes)
        blocks = []
        for payload, size, key in zip(payloads, expected, keys, strict=True):
            raw = np.frombuffer(payload, dtype=np.uint8)
            self._check_stream(raw[:_ZSTD_HEADER_MAX], raw[-4:], raw.size, size, key)
            blocks.append(raw[4:] if self.name == "lz4" else raw)
        if self.name == "none":
            return blocks
        cp = self._cp
        codec, _ = self._codec()
        host, offsets = _pack(blocks, max(1, int(codec.get_required_decompression_alignment())))
        lengths = [int(b.size) for b in blocks]
        decoded = cp.asnumpy(self._decode(cp.asarray(host), offsets, lengths, expected, keys))
        bounds = np.cumsum([0, *expected])
        return [decoded[a:b] for a, b in itertools.pairwise(bounds)]

    # -- device level, for the loader ------------------------------------------------------------

    def decode_device(
        self,
        buffer: Any,
        offsets: Sequence[int],
        sizes: Sequence[int],
        expected_sizes: Sequence[int],
        keys: Sequence[str],
    ) -> Any:
        """Decode the chunks held in one device buffer with one nvCOMP call.

        Parameters
        ----------
        buffer
            A 1-D CuPy ``uint8`` array holding the stored payloads (e.g. a whole shard).
        offsets, sizes
            Where each payload starts in ``buffer`` and how long it is.
        expected_sizes
            The raw size of each chunk; anything else is a :class:`CorruptChunkError`.
        keys
            Names of the chunks, for error messages.

        Returns
        -------
        A 1-D CuPy ``uint8`` array: the raw chunks concatenated in order.

        Examples
        --------
        >>> out = codec.decode_device(shard, [0, 812], [812, 640], [4096, 4096], ["c/0", "c/1"])
        ... # doctest: +SKIP
        """
        _same_length(offsets=offsets, sizes=sizes, expected_sizes=expected_sizes, keys=keys)
        cp = self._cp
        if not offsets:
            return cp.empty(0, dtype=cp.uint8)
        expected = self._check_sizes(expected_sizes)
        starts, lengths = [int(o) for o in offsets], [int(n) for n in sizes]
        total = int(buffer.shape[0])
        for start, length, key in zip(starts, lengths, keys, strict=True):
            if start < 0 or length < 0 or start + length > total:
                raise CorruptChunkError(
                    f"corrupt chunk {key}: bytes {start}..{start + length} lie outside the "
                    f"{total}-byte buffer"
                )
        if self.name in ("lz4", "zstd", "gzip"):  # they state their size: check it first
            heads, tails = _peek(cp, buffer, starts, lengths, _ZSTD_HEADER_MAX, 4)
        else:
            heads = tails = np.zeros((len(starts), 0), dtype=np.uint8)
        for i, key in enumerate(keys):
            self._check_stream(heads[i], tails[i], lengths[i], expected[i], key)
        if self.name == "none":
            return cp.concatenate([buffer[s : s + n] for s, n in zip(starts, lengths, strict=True)])
        if self.name == "lz4":
            starts, lengths = [s + 4 for s in starts], [n - 4 for n in lengths]
        codec, _ = self._codec()
        align = max(1, int(codec.get_required_decompression_alignment()))
        if any((_address(buffer) + s) % align for s in starts):
            buffer, starts = _repack(cp, buffer, starts, lengths, align)
        return self._decode(buffer, starts, lengths, expected, keys)

    # -- internals -----------------------------------------------------------------------------

    def _check_sizes(self, sizes: Sequence[int]) -> list[int]:
        expected = [int(n) for n in sizes]
        limit = DECODE_LIMIT_BYTES.get(self.name, 0)
        for n in expected:
            if n <= 0 or (self.shuffle and n % self.itemsize):
                raise ValueError(f"Expected positive multiples of {self.itemsize} bytes, got {n}")
            if limit and n > limit:
                raise DeviceError(
                    f"a chunk of {n} bytes exceeds nvCOMP's {limit}-byte {self.name} decoding "
                    "limit; decode it on the CPU (--device cpu)"
                )
        return expected

    def _check_stream(
        self, head: np.ndarray, tail: np.ndarray, length: int, expected: int, key: str
    ) -> None:
        """Check the size a payload declares before any decoding; ``head``/``tail`` are its ends."""
        head, tail = head[: min(length, head.size)], tail[max(0, tail.size - length) :]
        if self.name == "lz4":
            if length <= 4:
                raise CorruptChunkError(f"corrupt chunk {key}: {length} bytes, too short for lz4")
            claimed = int.from_bytes(head[:4].tobytes(), "little")
            if claimed != expected:
                raise CorruptChunkError(
                    f"corrupt chunk {key}: its lz4 size prefix claims {claimed} bytes, "
                    f"expected {expected}"
                )
        elif self.name == "zstd":
            try:
                claimed_or_none = zstd_content_size(head.tobytes())
            except ValueError as e:
                raise CorruptChunkError(f"corrupt chunk {key}: {e}") from None
            if claimed_or_none is not None and claimed_or_none != expected:
                raise CorruptChunkError(
                    f"corrupt chunk {key}: its zstd frame claims {claimed_or_none} bytes, "
                    f"expected {expected}"
                )
        elif self.name == "gzip":
            if length < 18 or head[:2].tobytes() != b"\x1f\x8b":
                raise CorruptChunkError(f"corrupt chunk {key}: not a gzip member")
            claimed = int.from_bytes(tail[-4:].tobytes(), "little")
            if claimed != expected % (1 << 32):
                raise CorruptChunkError(
                    f"corrupt chunk {key}: its gzip trailer claims {claimed} bytes, "
                    f"expected {expected}"
                )
        elif self.name == "none" and length != expected:
            raise CorruptChunkError(f"corrupt chunk {key}: {length} bytes, expected {expected}")
        elif length == 0:
            raise CorruptChunkError(f"corrupt chunk {key}: empty payload")

    def _decode(
        self,
        device: Any,
        starts: list[int],
        lengths: list[int],
        expected: list[int],
        keys: Sequence[str],
    ) -> Any:
        """One nvCOMP call into preallocated outputs, size checks, unshuffle, concatenate."""
        cp, nv = self._cp, self._nv
        codec, stream = self._codec()
        align = max(1, int(codec.get_required_decompression_alignment()))
        out_starts = _aligned_offsets(expected, align)
        out = cp.empty(out_starts[-1] + expected[-1], dtype=cp.uint8)
        sources = nv.as_arrays(device, starts, lengths, cuda_stream=stream)
        targets = nv.as_arrays(out, out_starts, expected, cuda_stream=stream)
        try:
            got = [int(n) for n in codec.decode(sources, out=targets).buffer_sizes]
        except Exception as e:  # nvCOMP raises ValueError (output too small) or RuntimeError
            culprit = self._find_culprit(device, starts, lengths, out, out_starts, expected, keys)
            if culprit is None:
                raise
            raise culprit from e
        for n, size, key in zip(got, expected, keys, strict=True):
            if n != size:
                raise CorruptChunkError(
                    f"corrupt chunk {key}: decoded to {n} bytes, expected {size}"
                )
        if self.shuffle:
            for o, n in zip(out_starts, expected, strict=True):
                out[o : o + n] = unshuffle_bytes(out[o : o + n], self.itemsize)
        if out_starts == _aligned_offsets(expected, 1):
            return out
        return cp.concatenate([out[o : o + n] for o, n in zip(out_starts, expected, strict=True)])

    def _find_culprit(
        self,
        device: Any,
        starts: list[int],
        lengths: list[int],
        out: Any,
        out_starts: list[int],
        expected: list[int],
        keys: Sequence[str],
    ) -> CorruptChunkError | None:
        """After a failed batch: decode chunk by chunk to name the first bad one (error path)."""
        nv = self._nv
        codec, stream = self._codec()
        for i, key in enumerate(keys):
            source = nv.as_arrays(device, [starts[i]], [lengths[i]], cuda_stream=stream)
            target = nv.as_arrays(out, [out_starts[i]], [expected[i]], cuda_stream=stream)
            try:
                (n,) = (int(m) for m in codec.decode(source, out=target).buffer_sizes)
            except Exception as e:
                return CorruptChunkError(
                    f"corrupt chunk {key}: nvCOMP cannot decode it to {expected[i]} bytes ({e})"
                )
            if n != expected[i]:
                return CorruptChunkError(
                    f"corrupt chunk {key}: decoded to {n} bytes, expected {expected[i]}"
                )
        return None


def _same_length(**sequences: Sequence[Any]) -> None:
    lengths = {name: len(seq) for name, seq in sequences.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Expected sequences of one length, got {lengths}")


def _aligned_offsets(sizes: Sequence[int], align: int) -> list[int]:
    offsets, position = [], 0
    for size in sizes:
        offsets.append(position)
        position = -(-(position + size) // align) * align
    return offsets


def _pack(blocks: Sequence[np.ndarray], align: int) -> tuple[np.ndarray, list[int]]:
    """One host buffer holding ``blocks`` at ``align``-ed offsets (one host-to-device copy)."""
    offsets = _aligned_offsets([b.size for b in blocks], align)
    host = np.zeros(offsets[-1] + blocks[-1].size, dtype=np.uint8)
    for offset, block in zip(offsets, blocks, strict=True):
        host[offset : offset + block.size] = block
    return host, offsets


def _address(array: Any) -> int:
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return int(interface["data"][0])


def _repack(
    cp: ModuleType, buffer: Any, starts: list[int], lengths: list[int], align: int
) -> tuple[Any, list[int]]:
    """Copy payloads to ``align``-ed offsets of a new device buffer (nvCOMP's alignment rule)."""
    offsets = _aligned_offsets(lengths, align)
    packed = cp.empty(offsets[-1] + lengths[-1], dtype=cp.uint8)
    for offset, start, length in zip(offsets, starts, lengths, strict=True):
        packed[offset : offset + length] = buffer[start : start + length]
    return packed, offsets


def _peek(
    cp: ModuleType, buffer: Any, starts: list[int], lengths: list[int], head: int, tail: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``head`` and last ``tail`` bytes of every payload, in one device-to-host copy.

    Rows of payloads shorter than that repeat bytes at the edges; callers cut them to the length.
    """
    total = int(buffer.shape[0])
    if total == 0:  # only empty payloads, which the checks reject
        return np.zeros((len(starts), head), np.uint8), np.zeros((len(starts), tail), np.uint8)
    first = np.minimum(np.asarray(starts, dtype=np.int64), total - 1)
    last = np.maximum(first + np.asarray(lengths, dtype=np.int64) - 1, first)
    head_index = np.minimum(first[:, None] + np.arange(head), last[:, None])
    tail_index = np.maximum(last[:, None] - np.arange(tail)[::-1], first[:, None])
    index = cp.asarray(np.concatenate([head_index, tail_index], axis=1).reshape(-1))
    rows = cp.asnumpy(buffer[index]).reshape(len(starts), head + tail)
    return rows[:, :head], rows[:, head:]
