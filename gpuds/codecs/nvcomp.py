"""The GPU implementation of the chunk codecs: NVIDIA nvCOMP (>= 6) through its Python API, CuPy.

One :class:`NvcompChunkCodec` serves one registered codec with an nvCOMP implementation
(:attr:`~gpuds.codecs.spec.CodecSpec.gpu`: zstd, lz4, gzip and the nvCOMP-only family) for one
dtype. A batch of chunks goes to the device in one copy, is byte-shuffled there
(:func:`~gpuds.codecs.base.shuffle_bytes`), and is compressed or decompressed by **one** batched
nvCOMP call. :meth:`NvcompChunkCodec.decode_to_device` is the chunk service's entry point (stored
payloads on the host in, the decoded chunks in one device buffer out);
:meth:`NvcompChunkCodec.decode_device` takes payloads already on the device.

What nvCOMP does, and where that is written down
------------------------------------------------
Sources: the docstrings of the installed package (``help(nvcomp.Codec)``,
``help(nvcomp.as_arrays)``, ``help(nvcomp.BatchArray)`` in nvidia-nvcomp-cu13 6.0.0.12, the
authoritative reference for the API used here); the *Python API* page
(docs.nvidia.com/cuda/nvcomp/py_api.html); the *Release notes* page (6.0.0, 5.3.0); the C headers
shipped in nvidia-libnvcomp 6.0.0 (``nvcomp/*.h``, ``nvcomp/*.hpp``); NVIDIA's sample
``nvCOMP/examples/high_level_quickstart_example.cpp`` in NVIDIA/CUDALibrarySamples.

- ``Codec(algorithm=..., bitstream_kind=BitstreamKind.RAW)``: RAW "Compresses input data as is,
  just using underlying compression algorithm. Does not add header with nvCOMP metadata."
  (``help(nvcomp.BitstreamKind)``), so RAW Zstd is a standard zstd frame, RAW LZ4 a bare LZ4
  block, RAW Gzip a gzip member. Unknown keyword arguments raise ``ValueError("Unsupported
  argument")``, before CUDA starts; the parser knows every documented argument whatever the
  algorithm, so passing each algorithm its own options is gpuds' job: Zstd has no level argument
  at all. The options per algorithm, and what a gpuds level maps to, are declared by each codec
  module (:class:`~gpuds.codecs.spec.GpuImpl`). Gzip *encoding* exists since nvCOMP 5.3.
- **uncomp_chunk_size and RAW**: "With BitstreamKind::RAW, the manager doesn't split the input
  data into smaller chunks" (NVIDIA's quickstart sample); every RAW buffer is one nvCOMP chunk,
  so one Zarr chunk = one nvCOMP chunk. The value is still validated, so gpuds passes the codec's
  ``max_chunk_bytes`` (within nvCOMP's limit) and refuses to encode a larger chunk.
- Batches (6.0): ``as_arrays(buffer, offsets, sizes)`` carves one contiguous buffer into a
  ``BatchArray`` without copying ("If in doubt, use 16B alignment"; each entry's address must
  meet ``Codec.get_required_(de)compression_alignment()``); an empty table is refused
  ("Cannot create a BatchArray from an empty sizes table"), so gpuds never builds one.
  ``encode(batch)`` / ``decode(batch, out=batch)`` return a ``BatchArray``; indexing it waits for
  the work and gives an ``Array`` view that must not outlive the batch; ``cpu()`` copies every
  entry to the host. nvCOMP 4/5 took and returned plain lists, so gpuds requires nvCOMP >= 6.
- Streams: a ``Codec`` runs on the ``cuda_stream`` it was made with and must not be shared
  between threads (Python API page, "Thread-safety"), so each thread gets its own, made for the
  stream current on that thread, and a new one when the thread's current stream changes.

Decoded sizes, whichever way ``buffer_sizes`` behaves
-----------------------------------------------------
nvCOMP documents that the buffers of a ``decode(..., out=batch)`` output "keep their fixed
capacity and a ValueError is raised when any of them is too small to hold the decompressed data".
It does not say whether ``buffer_sizes`` of that batch then reports the decoded sizes or the
capacities. gpuds relies on neither reading:

1. every output entry has exactly the expected size as its capacity, so a chunk that decodes to
   more raises (documented), and nvCOMP never allocates for a chunk's claim;
2. before anything is decoded, each chunk's decoded size is established another way and
   compared with the expected size: from the payload's own header where a valid stream decodes to
   exactly what it declares (the zstd frame's content size, the gzip trailer), and otherwise
   (LZ4 blocks, whose numcodecs size prefix is framing, a zstd frame without a content size, and
   the nvCOMP-only formats) with ``Codec.get_uncomp_buffer_size``, documented to derive it "by
   calling each format's native size-query path" (a header field for Bitcomp, ANS and Cascaded;
   a walk of the stream for LZ4 and GDeflate; each call synchronises the codec's stream);
3. after decoding, ``buffer_sizes`` is still compared: it catches a short decode where nvCOMP
   reports decoded sizes, and is harmless where it reports capacities.

Known issue (release notes): the Cascaded, GDeflate, Zstd, Deflate, Gzip and Bitcomp
decompressors "can only operate on valid input data". The size checks stop over-allocation and
valid streams of the wrong size, not a malformed stream inside a chunk: the ``crc32c`` of every
chunk (checked on the host before this module sees it) stops damage, not a crafted store.

Checked without a GPU against the installed package (tests/test_surface_nvcomp.py): every
class, method, enum member and keyword used here, the options per algorithm and the values the
docstrings permit, that the real ``Codec`` accepts every set of arguments gpuds makes, the chunk
limits (the C headers) and the quotations above. Not verifiable without a GPU
(``scripts/gpu-check.sh`` checks each, and the ``gpu`` tests): that nvCOMP's RAW LZ4/Zstd/Gzip
output decodes with lz4/libzstd/zlib and the reverse; that RAW ignores ``uncomp_chunk_size``;
what ``buffer_sizes`` reports after ``decode(out=...)``; that a failed chunk makes ``decode``
raise rather than leave garbage; the alignment values; the cost of ``get_uncomp_buffer_size``
for LZ4. CPU tests drive this module through a test double of nvCOMP (tests/nvcomp_double.py)
that mirrors the documented behaviour and runs under both readings of ``buffer_sizes``: they
check the orchestration, not nvCOMP.
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

from gpuds.codecs import registry
from gpuds.codecs.base import ChunkCodec, CodecConfig, shuffle_bytes, unshuffle_bytes
from gpuds.errors import ConfigError, CorruptChunkError, DeviceError

__all__ = ["DECODE_LIMIT_BYTES", "MAX_CHUNK_BYTES", "NVCOMP_ALGORITHMS", "NvcompChunkCodec"]

INSTALL_HINT = "install gpuds[gpu-cu12] or gpuds[gpu-cu13] (the one matching your CUDA)"

NVCOMP_ALGORITHMS: dict[str, str] = {
    s.name: s.gpu.algorithm for s in registry.specs() if s.gpu is not None
}
"""gpuds codec name -> nvCOMP algorithm, from the registry."""
MAX_CHUNK_BYTES: dict[str, int] = {
    s.name: s.gpu.max_chunk_bytes for s in registry.specs() if s.gpu is not None
}
"""Largest chunk gpuds hands nvCOMP to compress, also passed as ``uncomp_chunk_size``."""
DECODE_LIMIT_BYTES: dict[str, int] = {
    s.name: s.gpu.decode_limit_bytes for s in registry.specs() if s.gpu is not None
}
"""nvCOMP 6's decompression limits per chunk (nvcomp/*.h, *DecompressionMaxAllowedChunkSize)."""


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
    """``[shuffle] -> codec`` on the GPU with nvCOMP, for one element size.

    Building one imports nothing; CuPy and nvCOMP are imported, and the ``nvcomp.Codec`` is made,
    at first use. An instance may be used from several threads: each gets its own ``nvcomp.Codec``
    bound to that thread's current CuPy stream. ``none`` needs no nvCOMP: payloads are the raw
    chunks, and only their sizes are checked.

    Parameters
    ----------
    config
        A registered codec with an nvCOMP implementation (or ``none``), level, shuffle, and
        nvCOMP's ``data_type`` when the codec records one (a stored chain says which).
    itemsize
        Element size in bytes: the byte shuffle's stride.
    dtype
        The field's dtype, if known: without ``config.data_type`` it decides nvCOMP's
        ``data_type`` for bitcomp, ans and cascaded (:meth:`~gpuds.codecs.spec.GpuImpl.data_type`).

    Examples
    --------
    >>> codec = NvcompChunkCodec(CodecConfig("gzip", 6, True), itemsize=4)
    >>> codec.nvcomp_options
    {'algorithm_type': 4}
    >>> NvcompChunkCodec(CodecConfig("cascaded", 2, False), 4, "int32").nvcomp_options
    {'compression_level': 2, 'data_type': '<i4'}
    """

    def __init__(self, config: CodecConfig, itemsize: int, dtype: Any = None) -> None:
        spec = registry.get(config.name)
        if spec.gpu is None and not spec.stores_raw:
            names = ", ".join(n for n in registry.names() if registry.get(n).gpu is not None)
            raise ConfigError(f"Expected a codec in {names} or none, got {config.name!r}")
        self.spec = spec
        self.config = config
        self.name = config.name
        self.level = config.level
        self.itemsize = int(itemsize)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        if self.dtype is not None and self.dtype.itemsize != self.itemsize:
            raise ConfigError(f"Expected a dtype of {itemsize} bytes, got {self.dtype}")
        self.shuffle = bool(config.shuffle) and self.itemsize > 1 and not spec.stores_raw
        self.data_type = config.data_type
        if self.data_type is None and spec.gpu is not None:
            self.data_type = spec.gpu.data_type(self.dtype, self.shuffle)
        self.nvcomp_options = spec.gpu.options(self.level, self.data_type) if spec.gpu else {}

    def __repr__(self) -> str:
        return f"NvcompChunkCodec({self.config!r}, itemsize={self.itemsize}, dtype={self.dtype})"

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
        """This thread's ``nvcomp.Codec`` for the thread's current stream, and that stream."""
        local = self._local
        cp, nv = self._cp, self._nv
        stream = int(cp.cuda.get_current_stream().ptr)
        if getattr(local, "stream", None) != stream:
            assert self.spec.gpu is not None
            local.codec = nv.Codec(
                algorithm=self.spec.gpu.algorithm,
                bitstream_kind=nv.BitstreamKind.RAW,
                uncomp_chunk_size=self.spec.gpu.max_chunk_bytes,
                device_id=int(cp.cuda.Device().id),
                cuda_stream=stream,
                **self.nvcomp_options,
            )
            local.stream = stream
        return local.codec, local.stream

    # -- ChunkCodec --------------------------------------------------------------------------------

    def encode(self, chunks: Sequence[np.ndarray]) -> list[bytes]:
        """Compress raw chunks with one nvCOMP call; returns the stored payloads, in order."""
        raws = [np.ascontiguousarray(c).reshape(-1) for c in chunks]
        gpu = self.spec.gpu
        limit = gpu.max_chunk_bytes if gpu is not None else 0
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
        if gpu is None:
            return [raw.tobytes() for raw in raws]
        if not raws:
            return []
        cp, nv = self._cp, self._nv
        codec, stream = self._codec()
        sizes = [int(r.size) for r in raws]
        host, offsets = _pack(raws, max(1, int(codec.get_required_compression_alignment())))
        device = cp.asarray(host)
        if self.shuffle:
            for o, n in zip(offsets, sizes, strict=True):
                device[o : o + n] = shuffle_bytes(device[o : o + n], self.itemsize)
        compressed = codec.encode(nv.as_arrays(device, offsets, sizes, cuda_stream=stream)).cpu()
        lengths = [int(n) for n in compressed.buffer_sizes]
        payloads = [np.asarray(compressed[i])[: lengths[i]].tobytes() for i in range(len(raws))]
        if gpu.size_prefix:  # numcodecs.lz4 framing: 4-byte little-endian size, then the block
            payloads = [n.to_bytes(4, "little") + p for n, p in zip(sizes, payloads, strict=True)]
        return payloads

    def decode(
        self, payloads: Sequence[bytes | memoryview], sizes: Sequence[int], keys: Sequence[str]
    ) -> list[np.ndarray]:
        """Decode payloads to raw chunks of exactly ``sizes`` bytes with one nvCOMP call."""
        _same_length(payloads=payloads, sizes=sizes, keys=keys)
        if not payloads:
            return []
        if self.spec.gpu is None:  # none: the payloads are the chunks
            expected = self._check_sizes(sizes)
            for payload, size, key in zip(payloads, expected, keys, strict=True):
                self.spec.check_declared_size(payload, size, key)
            return [np.frombuffer(p, dtype=np.uint8) for p in payloads]
        decoded = self._cp.asnumpy(self.decode_to_device(payloads, sizes, keys))
        bounds = np.cumsum([0, *(int(n) for n in sizes)])
        return [decoded[a:b] for a, b in itertools.pairwise(bounds)]

    # -- device level, for the chunk service -----------------------------------------------------

    def decode_to_device(
        self, payloads: Sequence[bytes | memoryview], sizes: Sequence[int], keys: Sequence[str]
    ) -> Any:
        """Decode stored payloads (host memory) into one device buffer with one nvCOMP call.

        Every size check runs on the host first; the payloads then go to the device in one copy
        (from page-locked memory where CuPy offers it), laid out at nvCOMP's alignment.

        Parameters
        ----------
        payloads
            The stored payloads (checksums already checked and removed).
        sizes
            The raw size of each chunk; anything else is a :class:`CorruptChunkError`.
        keys
            Names of the chunks, for error messages.

        Returns
        -------
        A 1-D CuPy ``uint8`` array: the raw chunks concatenated in order.

        Examples
        --------
        >>> out = codec.decode_to_device([p0, p1], [4096, 4096], ["c/0", "c/1"])
        ... # doctest: +SKIP
        """
        _same_length(payloads=payloads, sizes=sizes, keys=keys)
        cp = self._cp
        if not payloads:
            return cp.empty(0, dtype=cp.uint8)
        expected = self._check_sizes(sizes)
        blocks, known = [], []
        for payload, size, key in zip(payloads, expected, keys, strict=True):
            view = np.frombuffer(payload, dtype=np.uint8)
            known.append(self.spec.check_declared_size(view, size, key))
            blocks.append(view[4:] if self._prefixed else view)
        if self.spec.gpu is None:
            staging, _ = _stage(cp, blocks, 1)
            return cp.asarray(staging, blocking=True)
        codec, _ = self._codec()
        align = max(1, int(codec.get_required_decompression_alignment()))
        staging, offsets = _stage(cp, blocks, align)
        # blocking: the page-locked staging buffer is reused once this returns
        device = cp.asarray(staging, blocking=True)
        lengths = [int(b.size) for b in blocks]
        return self._decode(device, offsets, lengths, expected, known, keys)

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
        if buffer.ndim != 1 or buffer.dtype != np.uint8:
            raise ValueError(f"Expected a 1-D uint8 buffer, got {buffer.dtype} {buffer.shape}")
        if not buffer.flags.c_contiguous:  # nvCOMP carves one contiguous buffer
            buffer = cp.ascontiguousarray(buffer)
        starts, lengths = [int(o) for o in offsets], [int(n) for n in sizes]
        total = int(buffer.shape[0])
        for start, length, key in zip(starts, lengths, keys, strict=True):
            if start < 0 or length < 0 or start + length > total:
                raise CorruptChunkError(
                    f"corrupt chunk {key}: bytes {start}..{start + length} lie outside the "
                    f"{total}-byte buffer"
                )
        spec = self.spec
        heads, tails = _peek(cp, buffer, starts, lengths, spec.head_bytes, spec.tail_bytes)
        known = []
        for i, key in enumerate(keys):
            n = lengths[i]
            head = heads[i, :n].tobytes()  # rows of short payloads repeat their edges: cut them
            tail = tails[i, max(0, spec.tail_bytes - n) :].tobytes()
            known.append(spec.check_header(head, tail, n, expected[i], key))
        if spec.gpu is None:
            return cp.concatenate([buffer[s : s + n] for s, n in zip(starts, lengths, strict=True)])
        if self._prefixed:
            starts, lengths = [s + 4 for s in starts], [n - 4 for n in lengths]
        codec, _ = self._codec()
        align = max(1, int(codec.get_required_decompression_alignment()))
        if any((_address(buffer) + s) % align for s in starts):
            buffer, starts = _repack(cp, buffer, starts, lengths, align)
        return self._decode(buffer, starts, lengths, expected, known, keys)

    # -- internals -----------------------------------------------------------------------------

    @property
    def _prefixed(self) -> bool:
        return self.spec.gpu is not None and self.spec.gpu.size_prefix

    def _check_sizes(self, sizes: Sequence[int]) -> list[int]:
        expected = [int(n) for n in sizes]
        limit = self.spec.gpu.decode_limit_bytes if self.spec.gpu is not None else 0
        for n in expected:
            if n <= 0 or (self.shuffle and n % self.itemsize):
                raise ValueError(f"Expected positive multiples of {self.itemsize} bytes, got {n}")
            if limit and n > limit:
                raise DeviceError(
                    f"a chunk of {n} bytes exceeds nvCOMP's {limit}-byte {self.name} decoding "
                    "limit; decode it on the CPU (--device cpu)"
                )
        return expected

    def _decode(
        self,
        device: Any,
        starts: list[int],
        lengths: list[int],
        expected: list[int],
        known: list[bool],
        keys: Sequence[str],
    ) -> Any:
        """Size query where the header did not pin the size, one nvCOMP call into outputs of
        exactly the expected capacity, the reported sizes, unshuffle, concatenate."""
        cp, nv = self._cp, self._nv
        codec, stream = self._codec()
        sources = nv.as_arrays(device, starts, lengths, cuda_stream=stream)
        for i, key in enumerate(keys):
            if not known[i]:
                self._check_queried_size(codec, sources[i], expected[i], key)
        align = max(1, int(codec.get_required_decompression_alignment()))
        out_starts = _aligned_offsets(expected, align)
        out = cp.empty(out_starts[-1] + expected[-1], dtype=cp.uint8)
        targets = nv.as_arrays(out, out_starts, expected, cuda_stream=stream)
        try:
            got = [int(n) for n in codec.decode(sources, out=targets).buffer_sizes]
        except Exception as e:  # nvCOMP raises ValueError (output too small) or RuntimeError
            culprit = self._find_culprit(device, starts, lengths, out, out_starts, expected, keys)
            if culprit is None:
                raise
            raise culprit from e
        for n, size, key in zip(got, expected, keys, strict=True):
            if n != size:  # reachable only where buffer_sizes reports decoded sizes (docstring)
                raise CorruptChunkError(
                    f"corrupt chunk {key}: decoded to {n} bytes, expected {size}"
                )
        if self.shuffle:
            for o, n in zip(out_starts, expected, strict=True):
                out[o : o + n] = unshuffle_bytes(out[o : o + n], self.itemsize)
        if out_starts == _aligned_offsets(expected, 1):
            return out
        return cp.concatenate([out[o : o + n] for o, n in zip(out_starts, expected, strict=True)])

    @staticmethod
    def _check_queried_size(codec: Any, source: Any, expected: int, key: str) -> None:
        """nvCOMP's own size query for a chunk whose header does not pin its decoded size."""
        try:
            size = int(codec.get_uncomp_buffer_size(source))
        except Exception as e:  # nvCOMP raises RuntimeError for a stream it cannot read
            raise CorruptChunkError(
                f"corrupt chunk {key}: nvCOMP cannot read its decoded size ({e})"
            ) from e
        if size != expected:
            raise CorruptChunkError(
                f"corrupt chunk {key}: nvCOMP finds it decodes to {size} bytes, expected {expected}"
            )

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


def _stage(
    cp: ModuleType, blocks: Sequence[np.ndarray], align: int
) -> tuple[np.ndarray, list[int]]:
    """:func:`_pack` into page-locked host memory from CuPy (fast copies to the device), or plain
    memory where the array module offers none."""
    offsets = _aligned_offsets([b.size for b in blocks], align)
    nbytes = offsets[-1] + blocks[-1].size
    alloc = getattr(getattr(cp, "cuda", None), "alloc_pinned_memory", None)
    if alloc is None or nbytes == 0:
        host = np.empty(nbytes, dtype=np.uint8)
    else:
        host = np.frombuffer(alloc(nbytes), dtype=np.uint8, count=nbytes)
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
    if total == 0 or head + tail == 0:
        return np.zeros((len(starts), head), np.uint8), np.zeros((len(starts), tail), np.uint8)
    first = np.minimum(np.asarray(starts, dtype=np.int64), total - 1)
    last = np.maximum(first + np.asarray(lengths, dtype=np.int64) - 1, first)
    head_index = np.minimum(first[:, None] + np.arange(head), last[:, None])
    tail_index = np.maximum(last[:, None] - np.arange(tail)[::-1], first[:, None])
    index = cp.asarray(np.concatenate([head_index, tail_index], axis=1).reshape(-1))
    rows = cp.asnumpy(buffer[index]).reshape(len(starts), head + tail)
    return rows[:, :head], rows[:, head:]
