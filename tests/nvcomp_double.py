"""TEST DOUBLE of the parts of ``nvidia.nvcomp`` (>= 6) and ``cupy`` that gpuds uses. Not nvCOMP.

It runs on the CPU and mimics nvCOMP's *documented* behaviour (the docstrings of
nvidia-nvcomp 6.0: ``Codec``, ``as_arrays``, ``BatchArray``) closely enough to drive the
orchestration in ``gpuds.codecs.nvcomp`` in CPU tests: batching, the lz4 framing, size checks,
alignment, the byte shuffle. Passing tests that use it say nothing about nvCOMP itself; only the
``@pytest.mark.gpu`` tests, on a machine with a GPU, verify that.

What it emulates, RAW bitstreams only:

- ``Zstd``: a standard zstd frame (numcodecs.Zstd);
- ``LZ4``: a bare LZ4 block (numcodecs.LZ4 without its 4-byte prefix); the decoded size is found by
  walking the block, as nvCOMP does for RAW LZ4;
- ``Gzip``: a gzip member (Python's gzip module);
- any other algorithm: the ``Codec`` builds (options are checked), but encoding or decoding raises
  :class:`NotEmulated`.

Documented behaviour it copies: unknown ``Codec`` keyword arguments raise
``ValueError("Unsupported argument: ...")``; decoding into ``out=`` raises ``ValueError`` when an
entry is too small; ``BatchArray.buffer_sizes`` reports each entry's used size. Each entry's
address must meet :attr:`Codec.ALIGNMENT` (nvCOMP's real alignments are per algorithm and unknown
here; the double picks 8 so that misaligned inputs are caught). ``Codec.calls`` counts
``encode``/``decode`` calls and :class:`FakeCupy` counts host/device transfers, so tests can assert
one batched call per batch.
"""

from __future__ import annotations

import gzip
import types
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numcodecs import LZ4, Zstd

__all__ = ["FakeCupy", "NotEmulated", "install", "make_nvcomp"]


class NotEmulated(RuntimeError):
    """The double cannot produce this algorithm's bitstream."""


_COMMON = {
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
# Algorithm-specific options, from help(nvcomp.Codec.__init__) in nvCOMP 6.0.
_OPTIONS = {
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
_ANS_TYPES = {"|u1", "|i1", "|f1", "<f2", "<f4"}


class Array:
    """One buffer (a NumPy array standing in for device memory) and its used size."""

    def __init__(self, data: np.ndarray, used: int | None = None) -> None:
        self.data = data
        self.used = data.size if used is None else used

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return self.data[: self.used].__array_interface__

    @property
    def buffer_size(self) -> int:
        return self.used


class BatchArray:
    """A batch of :class:`Array`; ``len``, indexing, iteration, ``cpu()``, ``buffer_sizes``."""

    def __init__(self, arrays: list[Array]) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> Array:
        return self.arrays[index]

    def __iter__(self) -> Iterator[Array]:
        return iter(self.arrays)

    def cpu(self) -> BatchArray:
        return self

    def cuda(self, synchronize: bool = True, cuda_stream: int = 0) -> BatchArray:
        return self

    @property
    def buffer_sizes(self) -> list[int]:
        return [a.used for a in self.arrays]


def _as_arrays(*args: Any, cuda_stream: int = 0) -> BatchArray:
    """``as_arrays(sources)`` or ``as_arrays(buffer, offsets, sizes)``, as in nvCOMP 6."""
    if len(args) == 1:
        return BatchArray([Array(np.asarray(a).reshape(-1).view(np.uint8)) for a in args[0]])
    buffer, offsets, sizes = args
    buffer = np.asarray(buffer)
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


class Codec:
    """``nvcomp.Codec`` for RAW Zstd, LZ4 and Gzip (see the module docstring)."""

    ALIGNMENT: ClassVar[int] = 8
    calls: ClassVar[Counter[str]] = Counter()
    instances: ClassVar[list[Codec]] = []

    def __init__(self, **kwargs: Any) -> None:
        algorithm = str(kwargs.get("algorithm", "")).lower()
        if algorithm not in _OPTIONS:
            raise ValueError(f'Unknown algorithm: "{kwargs.get("algorithm")}".')
        for name in kwargs:
            if name not in _COMMON | _OPTIONS[algorithm]:
                raise ValueError(f'Unsupported argument: "{name}".')
        if kwargs.get("bitstream_kind") != BitstreamKind.RAW:
            raise NotEmulated("the double emulates BitstreamKind.RAW only")
        if algorithm == "ans" and kwargs.get("data_type", "|u1") not in _ANS_TYPES:
            raise ValueError(f"ANS does not support data_type {kwargs['data_type']!r}")
        self.algorithm = algorithm
        self.kwargs = kwargs
        Codec.instances.append(self)

    def get_required_compression_alignment(self) -> int:
        return self.ALIGNMENT

    def get_required_decompression_alignment(self) -> int:
        return self.ALIGNMENT

    def _check_alignment(self, batch: BatchArray) -> None:
        for array in batch.arrays:
            if array.data.__array_interface__["data"][0] % self.ALIGNMENT:
                raise ValueError(f"buffer is not aligned to {self.ALIGNMENT} bytes")

    def encode(self, srcs: BatchArray, out: Any = None, compression_config: Any = None) -> Any:
        Codec.calls["encode"] += 1
        self._check_alignment(srcs)
        return BatchArray([Array(self._compress(a.data[: a.used].tobytes())) for a in srcs])

    def decode(
        self,
        srcs: BatchArray,
        data_type: str = "",
        out: BatchArray | None = None,
        decompression_config: Any = None,
    ) -> BatchArray:
        Codec.calls["decode"] += 1
        self._check_alignment(srcs)
        decoded = [self._decompress(a.data[: a.used].tobytes()) for a in srcs]
        if out is None:
            return BatchArray([Array(np.frombuffer(d, dtype=np.uint8).copy()) for d in decoded])
        self._check_alignment(out)
        if len(out) != len(decoded):
            raise ValueError("out has a different batch size")
        for target, data in zip(out.arrays, decoded, strict=True):
            if len(data) > target.data.size:
                raise ValueError("an output buffer is too small to hold the decompressed data")
        for target, data in zip(out.arrays, decoded, strict=True):
            target.data[: len(data)] = np.frombuffer(data, dtype=np.uint8)
            target.used = len(data)
        return out

    def _compress(self, data: bytes) -> np.ndarray:
        if self.algorithm == "zstd":
            payload = bytes(Zstd().encode(data))
        elif self.algorithm == "lz4":
            payload = bytes(LZ4().encode(data))[4:]
        elif self.algorithm == "gzip":
            payload = gzip.compress(data, mtime=0)
        else:
            raise NotEmulated(f"the nvCOMP double cannot emulate {self.algorithm}")
        return np.frombuffer(payload, dtype=np.uint8).copy()

    def _decompress(self, payload: bytes) -> bytes:
        try:
            if self.algorithm == "zstd":
                return bytes(Zstd().decode(payload))
            if self.algorithm == "lz4":
                size = _lz4_block_size(payload)
                return bytes(LZ4().decode(size.to_bytes(4, "little") + payload))
            if self.algorithm == "gzip":
                return gzip.decompress(payload)
        except NotEmulated:
            raise
        except Exception as e:
            raise RuntimeError(f"nvcompErrorCannotDecompress: {e}") from e
        raise NotEmulated(f"the nvCOMP double cannot emulate {self.algorithm}")


class BitstreamKind:
    NVCOMP_NATIVE = "NVCOMP_NATIVE"
    RAW = "RAW"
    WITH_UNCOMPRESSED_SIZE = "WITH_UNCOMPRESSED_SIZE"


def make_nvcomp() -> types.ModuleType:
    """A fresh ``nvidia.nvcomp`` double, with its call counters reset."""
    Codec.calls = Counter()
    Codec.instances = []
    Codec.ALIGNMENT = 8
    module = types.ModuleType("nvidia.nvcomp")
    module.__dict__.update(
        __version__="6.0.0-double",
        Codec=Codec,
        Array=Array,
        BatchArray=BatchArray,
        BitstreamKind=BitstreamKind,
        as_arrays=_as_arrays,
    )
    return module


class FakeCupy(types.ModuleType):
    """TEST DOUBLE of the CuPy subset gpuds.codecs.nvcomp uses; "device" arrays are NumPy arrays.

    ``asarray`` and ``asnumpy`` copy (as a real host/device transfer does) and are counted in
    ``transfers``.
    """

    uint8 = np.uint8

    def __init__(self) -> None:
        super().__init__("cupy")
        self.transfers: Counter[str] = Counter()
        stream = types.SimpleNamespace(ptr=0)
        self.cuda = types.SimpleNamespace(
            get_current_stream=lambda: stream, Device=lambda: types.SimpleNamespace(id=0)
        )

    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        self.transfers["to_device"] += 1
        return np.array(x, dtype=dtype, copy=True)

    def asnumpy(self, x: Any) -> np.ndarray:
        self.transfers["to_host"] += 1
        return np.array(x, copy=True)

    @staticmethod
    def empty(shape: Any, dtype: Any = np.float64) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def concatenate(arrays: Any) -> np.ndarray:
        return np.concatenate(list(arrays))


def install(monkeypatch: Any, module: Any) -> tuple[types.ModuleType, FakeCupy]:
    """Point ``module``'s lazy import hooks ``_import_nvcomp``/``_import_cupy`` at the doubles."""
    nvcomp, cupy = make_nvcomp(), FakeCupy()
    monkeypatch.setattr(module, "_import_nvcomp", lambda: nvcomp)
    monkeypatch.setattr(module, "_import_cupy", lambda: cupy)
    return nvcomp, cupy
