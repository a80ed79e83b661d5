"""TEST DOUBLE of the parts of ``nvidia.nvcomp`` (>= 6) and ``cupy`` that gpuds uses. Not nvCOMP.

It runs on the CPU and mirrors nvCOMP's *documented* behaviour, taken from the docstrings of
nvidia-nvcomp-cu13 6.0.0.12 (``help(nvcomp.Codec)``, ``help(nvcomp.as_arrays)``,
``help(nvcomp.BatchArray)``, ``help(nvcomp.Array)``), closely enough to drive the orchestration
in ``gpuds.codecs.nvcomp`` in CPU tests: batching, the lz4 framing, size checks, alignment, the
byte shuffle, threads and streams. Passing tests that use it say nothing about nvCOMP itself;
only the ``@pytest.mark.gpu`` tests, on a machine with a GPU, verify that.

Documented behaviour it copies:

- ``Codec(**kwargs)``: an unknown algorithm or keyword raises ``ValueError`` ("Unsupported
  argument"); the algorithm options are the ones ``help(nvcomp.Codec.__init__)`` lists.
- ``as_arrays(buffer, offsets, sizes)`` "wraps one contiguous buffer": a non-contiguous or
  non-1-D buffer, an entry outside it, and an empty table are refused with ``ValueError``
  ("Cannot create a BatchArray from an empty sizes table", the real module's message, which it
  raises before touching CUDA); ``as_arrays(sources)`` likewise ("... empty list of sources").
- Alignment: ``get_required_(de)compression_alignment()`` returns 16 (the docstrings' "if in
  doubt, use 16B" and "the conservative maximum alignment of 16 bytes"), and an entry whose
  address is not a multiple of it is refused. Device allocations (:class:`FakeCupy`) are
  256-byte aligned, as ``cudaMalloc``'s.
- ``decode(srcs, out=batch)``: the output "buffers keep their fixed capacity and a ValueError is
  raised when any of them is too small to hold the decompressed data". Without ``out`` a new
  batch holds the decoded data. ``encode`` returns a new batch of the compressed sizes ("the
  compressed sizes are read back from the device").
- ``get_uncomp_buffer_size(array)``: the RAW size query (zstd: the frame header's content size;
  LZ4 and Gzip: the length the stream decodes to, found by walking it).

Where the docs leave a behaviour open, the double picks one reading and lets tests pick the
other, so the code is tested under both:

- ``BatchArray.buffer_sizes`` after ``decode(out=batch)``: "Sizes in bytes of every entry", with
  capacities that stay fixed. :data:`Codec.BUFFER_SIZES` is ``"capacity"`` (the default: the
  sizes the output entries were made with) or ``"decoded"`` (the decoded sizes).
- An option documented for another algorithm (``Codec(algorithm="Zstd", algorithm_type=1)``):
  the installed nvCOMP 6.0 accepts it when the codec is made (its argument parser knows every
  documented name, whatever the algorithm); the double refuses it, the stricter reading. gpuds
  passes each algorithm its own options only (tests/test_surface_nvcomp.py checks them against
  the docstrings).

What it adds that nvCOMP does not document, to make misuse visible rather than silent (the
attributes tests use for it are listed in :data:`CONTROLS`; everything else the doubles offer,
the installed nvCOMP and CuPy offer too: tests/test_surface_nvcomp.py and
tests/test_surface_array_module.py check it):

- A ``Codec`` used from a thread other than the one that made it raises ``RuntimeError`` (the
  Python API page says a codec must not be shared between threads; real nvCOMP would misbehave
  silently). Counters and the call log are thread-safe.
- Every ``encode``/``decode`` call is logged with its thread, the codec's ``cuda_stream`` and the
  stream current on that thread (:class:`FakeCupy` keeps a current stream per thread, as CuPy
  does), so tests can check that work runs on the stream it was queued on.
- ``GDeflate``, ``Bitcomp``, ``ANS`` and ``Cascaded`` cannot be produced here. The double writes
  a **stand-in** bitstream for them (a header naming the algorithm, the ``data_type`` and the
  size, then zlib data) so that stores of those codecs can be written and read through gpuds's
  orchestration; the stand-in is NOT nvCOMP's format and no test may check its bytes. Decoding a
  stand-in with another algorithm or another ``data_type`` than it was written with raises
  ``RuntimeError`` (for Cascaded the docs say the options "must match compression"; a RAW stream
  does not record them).
"""

from __future__ import annotations

import gzip
import struct
import threading
import types
import zlib
from collections import Counter
from typing import Any, ClassVar

import numpy as np
from numcodecs import LZ4, Zstd

__all__ = [
    "ANS_TYPES",
    "COMMON",
    "CONTROLS",
    "OPTIONS",
    "FakeCupy",
    "NotEmulated",
    "install",
    "make_nvcomp",
]

ALIGNMENT = 16
DEVICE_ALIGNMENT = 256


CONTROLS: dict[str, frozenset[str]] = {
    "Codec": frozenset(
        {
            "ALIGNMENT",
            "BUFFER_SIZES",
            "calls",
            "current_stream",
            "instances",
            "kwargs",
            "lock",
            "log",
        }
    ),
    "FakeCupy": frozenset({"transfers"}),
    "Stream": frozenset({"synchronized"}),
}
"""What tests set and read to steer and watch the doubles, by class: none of it is nvCOMP's or
CuPy's API. Everything else the doubles offer, the real modules offer too (the ``surface`` tests
check it against the installed packages)."""


class NotEmulated(RuntimeError):
    """The double cannot do this (only BitstreamKind.RAW is emulated)."""


COMMON = {
    "algorithm",
    "device_id",
    "cuda_stream",
    "uncomp_chunk_size",
    "bitstream_kind",
    "execution_policy",
    "checksum_policy",
    "decompress_backend",
    "use_de_sort",
}
# Algorithm-specific options, from help(nvcomp.Codec.__init__) in nvCOMP 6.0 (the surface test
# checks COMMON, OPTIONS and ANS_TYPES against the installed docstrings).
OPTIONS = {
    "zstd": set(),
    "lz4": {"data_type", "bitshuffle_mode"},
    "gzip": {"algorithm_type"},
    "deflate": {"algorithm_type"},
    "gdeflate": {"algorithm_type"},
    "bitcomp": {"algorithm_type", "data_type", "mode", "delta"},
    "ans": {
        "data_type",
        "states_per_lane",
        "histogram_reduction_log2",
        "max_sub_chunk_count",
        "skip_validate",
    },
    "cascaded": {
        "data_type",
        "mode",
        "compression_level",
        "terminal_codecs",
        "fine_grained_encodings",
        "coarse_grained_encodings",
    },
    "snappy": set(),
}
ANS_TYPES = {"|u1", "|i1", "|f1", "<f2", "<f4"}
_STAND_IN = ("gdeflate", "bitcomp", "ans", "cascaded")
_STAND_IN_MAGIC = b"DBL!"
_STAND_IN_HEADER = struct.Struct("<4s12s4sQ")  # magic, algorithm, data_type, size


def _address(data: np.ndarray) -> int:
    return int(data.__array_interface__["data"][0])


def _aligned(nbytes: int, align: int = DEVICE_ALIGNMENT) -> np.ndarray:
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -_address(raw) % align
    return raw[start : start + nbytes]


class Array:
    """One buffer (a NumPy array standing in for device memory): its capacity and its size."""

    def __init__(self, src_object: np.ndarray, cuda_stream: int = 0) -> None:
        self._data = src_object
        self.size = src_object.size

    @property
    def capacity(self) -> int:
        return int(self._data.size)

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return self._data[: self.size].__array_interface__

    @property
    def buffer_size(self) -> int:
        return self.size


class BatchArray:
    """A batch of :class:`Array`; ``len``, indexing (and so iteration), ``cpu()``,
    ``buffer_sizes``. Made by the double only: nvCOMP documents no constructor for it."""

    def __init__(self, arrays: list[Array]) -> None:
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, index: int) -> Array:
        return self._arrays[index]

    def cpu(self) -> BatchArray:
        return self

    def cuda(self, synchronize: bool = True, cuda_stream: int = 0) -> BatchArray:
        return self

    @property
    def buffer_sizes(self) -> list[int]:
        return [a.size for a in self._arrays]


def _contiguous(data: Any, what: str) -> np.ndarray:
    array = np.asarray(data)
    if not array.flags.c_contiguous:
        raise ValueError(f"{what} must be contiguous")
    return array


def _as_arrays(*args: Any, cuda_stream: int = 0) -> BatchArray:
    """``as_arrays(sources)`` or ``as_arrays(buffer, offsets, sizes)``, as in nvCOMP 6."""
    if len(args) == 1:
        if not args[0]:
            raise ValueError("Cannot create a BatchArray from an empty list of sources")
        sources = [_contiguous(a, "a source").reshape(-1).view(np.uint8) for a in args[0]]
        return BatchArray([Array(s) for s in sources])
    buffer, offsets, sizes = args
    if len(sizes) == 0:
        raise ValueError("Cannot create a BatchArray from an empty sizes table")
    buffer = _contiguous(buffer, "the buffer")
    if buffer.ndim != 1:
        raise ValueError("buffer must be one-dimensional")
    if len(offsets) != len(sizes):
        raise ValueError("offsets and sizes differ in length")
    arrays = []
    for offset, size in zip(offsets, sizes, strict=True):
        if offset < 0 or size < 0 or offset + size > buffer.size:
            raise ValueError(f"entry {offset}+{size} lies outside a buffer of {buffer.size}")
        arrays.append(Array(buffer[offset : offset + size]))
    return BatchArray(arrays)


def _lz4_block_size(block: bytes) -> int:
    """Decoded size of a raw LZ4 block, by walking its sequences (what nvCOMP does for RAW LZ4)."""
    position, size, end = 0, 0, len(block)
    try:
        while position < end:
            token = block[position]
            position += 1
            literals = token >> 4
            if literals == 15:
                while True:
                    extra = block[position]
                    position += 1
                    literals += extra
                    if extra != 255:
                        break
            position += literals
            size += literals
            if position >= end:
                break
            position += 2  # match offset
            match = token & 15
            if match == 15:
                while True:
                    extra = block[position]
                    position += 1
                    match += extra
                    if extra != 255:
                        break
            size += match + 4
    except IndexError:
        raise RuntimeError("nvcompErrorCannotDecompress: truncated LZ4 block") from None
    if position != end:
        raise RuntimeError("nvcompErrorCannotDecompress: malformed LZ4 block")
    return size


def _zstd_frame_size(payload: bytes) -> int:
    view = memoryview(payload)
    if len(view) < 5 or struct.unpack_from("<I", view, 0)[0] != 0xFD2FB528:
        raise RuntimeError("nvcompErrorCannotDecompress: not a zstd frame")
    descriptor = view[4]
    fcs_flag, single, did = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[did]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(view) < pos + size:
        raise RuntimeError("nvcompErrorCannotDecompress: no content size in the frame header")
    value = int.from_bytes(view[pos : pos + size], "little")
    return value + 256 if size == 2 else value


class Codec:
    """``nvcomp.Codec`` for RAW Zstd, LZ4, Gzip and stand-ins (see the module docstring)."""

    ALIGNMENT: ClassVar[int] = ALIGNMENT
    BUFFER_SIZES: ClassVar[str] = "capacity"
    calls: ClassVar[Counter[str]] = Counter()
    instances: ClassVar[list[Codec]] = []
    log: ClassVar[list[dict[str, Any]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()
    current_stream: ClassVar[Any] = staticmethod(lambda: 0)

    def __init__(self, **kwargs: Any) -> None:
        algorithm = str(kwargs.get("algorithm", "")).lower()
        if algorithm not in OPTIONS:
            raise ValueError(f'Unknown algorithm: "{kwargs.get("algorithm")}".')
        for name in kwargs:
            if name not in COMMON | OPTIONS[algorithm]:
                raise ValueError(f'Unsupported argument: "{name}".')
        if kwargs.get("bitstream_kind") != BitstreamKind.RAW:
            raise NotEmulated("the double emulates BitstreamKind.RAW only")
        if algorithm == "ans" and kwargs.get("data_type", "|u1") not in ANS_TYPES:
            raise ValueError(f"ANS does not support data_type {kwargs['data_type']!r}")
        self._algorithm = algorithm
        self.kwargs = kwargs
        self._thread = threading.get_ident()
        with Codec.lock:
            Codec.instances.append(self)

    @property
    def _data_type(self) -> str:
        return str(self.kwargs.get("data_type", "|u1"))

    def get_required_compression_alignment(self) -> int:
        return self.ALIGNMENT

    def get_required_decompression_alignment(self) -> int:
        return self.ALIGNMENT

    def _enter(self, op: str, batch: BatchArray) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError("an nvcomp.Codec was used from another thread than its own")
        for array in batch._arrays:
            if _address(array._data) % self.ALIGNMENT:
                raise ValueError(f"buffer is not aligned to {self.ALIGNMENT} bytes")
        with Codec.lock:
            Codec.calls[op] += 1
            Codec.log.append(
                {
                    "op": op,
                    "thread": self._thread,
                    "codec_stream": self.kwargs.get("cuda_stream", 0),
                    "current_stream": Codec.current_stream(),
                    "batch": len(batch),
                }
            )

    def encode(self, srcs: BatchArray, out: Any = None, compression_config: Any = None) -> Any:
        self._enter("encode", srcs)
        return BatchArray(
            [Array(self._compress(a._data[: a.size].tobytes())) for a in srcs._arrays]
        )

    def decode(
        self,
        srcs: BatchArray,
        data_type: str = "",
        out: BatchArray | None = None,
        decompression_config: Any = None,
    ) -> BatchArray:
        self._enter("decode", srcs)
        decoded = [self._decompress(a._data[: a.size].tobytes()) for a in srcs._arrays]
        if out is None:
            return BatchArray([Array(np.frombuffer(d, dtype=np.uint8).copy()) for d in decoded])
        for array in out._arrays:
            if _address(array._data) % self.ALIGNMENT:
                raise ValueError(f"buffer is not aligned to {self.ALIGNMENT} bytes")
        if len(out) != len(decoded):
            raise ValueError("out has a different batch size")
        for target, data in zip(out._arrays, decoded, strict=True):
            if len(data) > target.capacity:
                raise ValueError("an output buffer is too small to hold the decompressed data")
        for target, data in zip(out._arrays, decoded, strict=True):
            target._data[: len(data)] = np.frombuffer(data, dtype=np.uint8)
            target.size = len(data) if Codec.BUFFER_SIZES == "decoded" else target.capacity
        return out

    def get_uncomp_buffer_size(self, source: Array) -> int:
        if threading.get_ident() != self._thread:
            raise RuntimeError("an nvcomp.Codec was used from another thread than its own")
        with Codec.lock:
            Codec.calls["size"] += 1
        payload = np.asarray(source).tobytes()
        if self._algorithm == "zstd":
            return _zstd_frame_size(payload)
        if self._algorithm == "lz4":
            return _lz4_block_size(payload)
        if self._algorithm in _STAND_IN:
            return self._stand_in_header(payload)[1]
        return len(self._decompress(payload))

    # -- the bitstreams -------------------------------------------------------------------------

    def _compress(self, data: bytes) -> np.ndarray:
        if self._algorithm == "zstd":
            payload = bytes(Zstd().encode(data))
        elif self._algorithm == "lz4":
            payload = bytes(LZ4().encode(data))[4:]
        elif self._algorithm == "gzip":
            payload = gzip.compress(data, mtime=0)
        elif self._algorithm in _STAND_IN:
            header = _STAND_IN_HEADER.pack(
                _STAND_IN_MAGIC, self._algorithm.encode(), self._data_type.encode(), len(data)
            )
            payload = header + zlib.compress(data)
        else:
            raise NotEmulated(f"the nvCOMP double cannot emulate {self._algorithm}")
        return np.frombuffer(payload, dtype=np.uint8).copy()

    def _stand_in_header(self, payload: bytes) -> tuple[str, int]:
        if len(payload) < _STAND_IN_HEADER.size:
            raise RuntimeError("nvcompErrorCannotDecompress: truncated stream")
        magic, algorithm, data_type, size = _STAND_IN_HEADER.unpack_from(payload)
        if magic != _STAND_IN_MAGIC or algorithm.rstrip(b"\0").decode() != self._algorithm:
            raise RuntimeError(f"nvcompErrorCannotDecompress: not a {self._algorithm} stream")
        written = data_type.rstrip(b"\0").decode()
        if written != self._data_type:
            raise RuntimeError(
                f"nvcompErrorCannotDecompress: written with data_type {written}, decoded with "
                f"{self._data_type}"
            )
        return written, int(size)

    def _decompress(self, payload: bytes) -> bytes:
        try:
            if self._algorithm == "zstd":
                return bytes(Zstd().decode(payload))
            if self._algorithm == "lz4":
                size = _lz4_block_size(payload)
                return bytes(LZ4().decode(size.to_bytes(4, "little") + payload))
            if self._algorithm == "gzip":
                return gzip.decompress(payload)
            if self._algorithm in _STAND_IN:
                self._stand_in_header(payload)
                return zlib.decompress(payload[_STAND_IN_HEADER.size :])
        except (NotEmulated, RuntimeError):
            raise
        except Exception as e:
            raise RuntimeError(f"nvcompErrorCannotDecompress: {e}") from e
        raise NotEmulated(f"the nvCOMP double cannot emulate {self._algorithm}")


class BitstreamKind:
    NVCOMP_NATIVE = "NVCOMP_NATIVE"
    RAW = "RAW"
    WITH_UNCOMPRESSED_SIZE = "WITH_UNCOMPRESSED_SIZE"


def _as_array(source: Any, cuda_stream: int = 0) -> Array:
    return Array(_contiguous(source, "the source").reshape(-1).view(np.uint8))


def make_nvcomp() -> types.ModuleType:
    """A fresh ``nvidia.nvcomp`` double, with its counters, log and settings reset."""
    Codec.calls = Counter()
    Codec.instances = []
    Codec.log = []
    Codec.ALIGNMENT = ALIGNMENT
    Codec.BUFFER_SIZES = "capacity"
    Codec.current_stream = staticmethod(lambda: 0)
    module = types.ModuleType("nvidia.nvcomp")
    module.__dict__.update(
        __version__="6.0.0-double",
        Codec=Codec,
        Array=Array,
        BatchArray=BatchArray,
        BitstreamKind=BitstreamKind,
        as_array=_as_array,
        as_arrays=_as_arrays,
    )
    return module


class _Stream:
    """Double of ``cupy.cuda.Stream``: entering it makes it the thread's current stream."""

    _next: ClassVar[int] = 1
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, owner: FakeCupy, null: bool = False, non_blocking: bool = False) -> None:
        self._owner = owner
        with _Stream._lock:
            self.ptr = 0 if null else _Stream._next * 0x100
            _Stream._next += 1
        self.synchronized = 0

    def __enter__(self) -> _Stream:
        self._owner._streams().append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._owner._streams().pop()

    def synchronize(self) -> None:
        self.synchronized += 1


class FakeCupy(types.ModuleType):
    """TEST DOUBLE of the CuPy subset gpuds uses; "device" arrays are NumPy arrays.

    ``asarray`` and ``asnumpy`` copy (as a real host/device transfer does) and are counted in
    ``transfers`` (thread-safe). Device allocations are 256-byte aligned. ``cuda.Stream`` keeps a
    current stream per thread, as CuPy does.
    """

    uint8 = np.uint8

    def __init__(self) -> None:
        super().__init__("cupy")
        self.transfers: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        null = _Stream(self, null=True)
        owner = self
        self.cuda = types.SimpleNamespace(
            Stream=lambda non_blocking=False: _Stream(owner, non_blocking=non_blocking),
            get_current_stream=self._current,
            Device=lambda: types.SimpleNamespace(id=0),
            alloc_pinned_memory=lambda size: memoryview(_aligned(size, 4096)),
        )
        self._null = null

    def _streams(self) -> list[_Stream]:
        if not hasattr(self._local, "streams"):
            self._local.streams = []
        stack: list[_Stream] = self._local.streams
        return stack

    def _current(self) -> _Stream:
        stack = self._streams()
        return stack[-1] if stack else self._null

    def _count(self, what: str) -> None:
        with self._lock:
            self.transfers[what] += 1

    def asarray(self, a: Any, dtype: Any = None, blocking: bool = False) -> np.ndarray:
        self._count("to_device")
        host = np.asarray(a, dtype=dtype)
        device = _aligned(host.nbytes).view(host.dtype).reshape(host.shape)
        device[...] = host
        return device

    def asnumpy(self, a: Any) -> np.ndarray:
        self._count("to_host")
        return np.array(a, copy=True)

    @staticmethod
    def empty(shape: Any, dtype: Any = np.float64) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return _aligned(count * dtype.itemsize).view(dtype).reshape(shape)

    @staticmethod
    def ascontiguousarray(a: Any) -> np.ndarray:
        out = FakeCupy.empty(np.shape(a), np.asarray(a).dtype)
        out[...] = a
        return out

    @staticmethod
    def concatenate(tup: Any) -> np.ndarray:
        return np.concatenate(list(tup))

    @staticmethod
    def take(a: Any, indices: Any, axis: int | None = None) -> np.ndarray:
        return np.take(a, indices, axis=axis)


def install(monkeypatch: Any, module: Any) -> tuple[types.ModuleType, FakeCupy]:
    """Point ``module``'s lazy import hooks ``_import_nvcomp``/``_import_cupy`` at the doubles."""
    nvcomp, cupy = make_nvcomp(), FakeCupy()
    nvcomp.Codec.current_stream = staticmethod(lambda: cupy.cuda.get_current_stream().ptr)
    monkeypatch.setattr(module, "_import_nvcomp", lambda: nvcomp)
    monkeypatch.setattr(module, "_import_cupy", lambda: cupy)
    return nvcomp, cupy


def install_gpu(monkeypatch: Any) -> tuple[types.ModuleType, FakeCupy]:
    """Make every ``--device cuda|auto`` in gpuds resolve to the doubles: the nvCOMP codec's
    import hooks, and ``gpuds.backend.probe_cuda`` (so ``resolve`` and the chunk service see a
    "device"). Orchestration only: this is not GPU verification."""
    import gpuds.backend
    import gpuds.codecs.nvcomp as nvcomp_module
    import gpuds.codecs.zarr_nvcomp as zarr_nvcomp

    nvcomp, cupy = install(monkeypatch, nvcomp_module)
    info = {"gpu": "nvCOMP test double", "device_count": 1}
    monkeypatch.setattr(gpuds.backend, "probe_cuda", lambda: (cupy, "", info))
    monkeypatch.setattr(zarr_nvcomp, "_IMPLS", {})  # built with the real modules otherwise
    return nvcomp, cupy
