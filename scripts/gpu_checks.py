"""The GPU checklist of scripts/gpu-check.sh: one line, PASS or FAIL, per assumption that gpuds'
docs list as unverifiable without a GPU (gpuds/codecs/nvcomp.py, README's GPU section), checked
on this host's GPU against the CPU libraries.

    python scripts/gpu_checks.py            # every check; exit 0 when all pass, 1 otherwise
    python scripts/gpu_checks.py --list     # the checks, without running them

- formats: nvCOMP's RAW Zstd, LZ4 and Gzip output decodes with numcodecs, and numcodecs' output
  decodes with nvCOMP (chunks of 24 B to 5 MiB, with and without the byte shuffle);
- nvcomp: RAW ignores ``uncomp_chunk_size`` (a 1 MiB chunk is one stream under the default
  64 KiB); what ``buffer_sizes`` reports after ``decode(out=...)``, and that a too-small ``out``
  raises; the alignment values, and CuPy's allocations meeting them;
- corrupt: a chunk nvCOMP cannot decode makes ``decode`` raise, and gpuds turns damaged chunks
  (zero-filled, truncated) into ``CorruptChunkError``, per codec;
- loader: the loader's GPU window path end to end (portable and nvCOMP-only stores), batches on
  the device and equal to the data and to the CPU loader's;
- ops: every registered op gives the same result on CuPy as on NumPy (through ``preprocess``).

Each group runs in a child process of its own, so a CUDA error that poisons the context (an
illegal access on corrupt input, say) fails its own lines only. Without a usable GPU it prints
why and exits 2, checking nothing. tests/test_gpu_checks.py runs the same checks on the CPU
through the test doubles, which keeps them working; that is not GPU verification.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: gpuds from this checkout
    sys.path.insert(0, str(ROOT))

import gpuds  # noqa: E402
from gpuds import backend  # noqa: E402
from gpuds.codecs import registry  # noqa: E402
from gpuds.codecs.base import CodecConfig  # noqa: E402
from gpuds.codecs.cpu import CpuChunkCodec  # noqa: E402
from gpuds.codecs.nvcomp import NvcompChunkCodec  # noqa: E402
from gpuds.errors import CorruptChunkError  # noqa: E402

SIZES = (24, 4096, 1 << 20, 5 << 20)
"""Chunk sizes: tiny, small, and far above nvCOMP's default 64 KiB ``uncomp_chunk_size``."""


@dataclass(frozen=True)
class Line:
    ok: bool
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class Gpu:
    """What the checks run on: the CuPy and nvCOMP modules (the real ones on a GPU host), a
    scratch folder, the device ``preprocess`` and the loader use, and how to tell a device
    array."""

    cp: Any
    nv: Any
    tmp: Path
    device: str = "cuda"
    on_device: Callable[[Any], bool] = lambda x: hasattr(x, "__cuda_array_interface__")


Check = Callable[[Gpu], Iterable[Line]]


def _chunk(nbytes: int, seed: int) -> np.ndarray:
    """Compressible but not trivial bytes: a slow ramp with noise in some bytes."""
    rng = np.random.default_rng(seed)
    ramp = (np.arange(nbytes) // 7 % 251).astype(np.uint8)
    noise = rng.integers(0, 256, nbytes, dtype=np.uint8) * (rng.random(nbytes) < 0.2)
    return ramp ^ noise.astype(np.uint8)


def _address(array: Any) -> int:
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return int(interface["data"][0])


def _portable_gpu_codecs() -> list[str]:
    return [s.name for s in registry.specs() if s.gpu is not None and s.cpu is not None]


# -- formats --------------------------------------------------------------------------------------


def check_formats(gpu: Gpu) -> Iterator[Line]:
    for name in _portable_gpu_codecs():
        to_cpu, to_gpu = [], []
        for itemsize, shuffle in ((1, False), (4, True)):
            config = CodecConfig(name, None, shuffle)
            on_gpu, on_cpu = NvcompChunkCodec(config, itemsize), CpuChunkCodec(config, itemsize)
            chunks = [_chunk(n - n % itemsize, seed) for seed, n in enumerate(SIZES)]
            sizes = [c.size for c in chunks]
            keys = [f"chunk {i}" for i in range(len(chunks))]
            decoded = on_cpu.decode(on_gpu.encode(chunks), sizes, keys)
            to_cpu.append(all(np.array_equal(a, b) for a, b in zip(decoded, chunks, strict=True)))
            decoded = on_gpu.decode(on_cpu.encode(chunks), sizes, keys)
            to_gpu.append(all(np.array_equal(a, b) for a, b in zip(decoded, chunks, strict=True)))
        what = "4 chunks of 24 B to 5 MiB, with and without the byte shuffle"
        yield Line(
            all(to_cpu),
            f"{name} GPU to CPU",
            f"nvCOMP's RAW output decodes with numcodecs ({what})",
        )
        yield Line(
            all(to_gpu), f"{name} CPU to GPU", f"numcodecs' output decodes with nvCOMP ({what})"
        )


# -- nvCOMP's own behaviour ----------------------------------------------------------------------


def _codec(gpu: Gpu, algorithm: str, **options: Any) -> tuple[Any, int]:
    stream = int(gpu.cp.cuda.get_current_stream().ptr)
    raw = gpu.nv.BitstreamKind.RAW
    codec = gpu.nv.Codec(algorithm=algorithm, bitstream_kind=raw, cuda_stream=stream, **options)
    return codec, stream


def _encode(gpu: Gpu, codec: Any, stream: int, chunks: list[np.ndarray]) -> list[bytes]:
    align = max(1, int(codec.get_required_compression_alignment()))
    offsets = [i * -(-max(c.size for c in chunks) // align) * align for i in range(len(chunks))]
    host = np.zeros(offsets[-1] + chunks[-1].size, np.uint8)
    for offset, chunk in zip(offsets, chunks, strict=True):
        host[offset : offset + chunk.size] = chunk
    device = gpu.cp.asarray(host)
    sizes = [c.size for c in chunks]
    batch = codec.encode(gpu.nv.as_arrays(device, offsets, sizes, cuda_stream=stream)).cpu()
    lengths = [int(n) for n in batch.buffer_sizes]
    return [np.asarray(batch[i])[: lengths[i]].tobytes() for i in range(len(chunks))]


def _upload(gpu: Gpu, payloads: list[bytes], align: int) -> tuple[Any, list[int], list[int]]:
    lengths = [len(p) for p in payloads]
    offsets = [i * -(-max(lengths) // align) * align for i in range(len(payloads))]
    host = np.zeros(offsets[-1] + lengths[-1], np.uint8)
    for offset, payload in zip(offsets, payloads, strict=True):
        host[offset : offset + len(payload)] = np.frombuffer(payload, np.uint8)
    return gpu.cp.asarray(host), offsets, lengths


def check_uncomp_chunk_size(gpu: Gpu) -> Iterator[Line]:
    results = []
    for name in _portable_gpu_codecs():
        spec = registry.get(name)
        assert spec.gpu is not None
        codec, stream = _codec(gpu, spec.gpu.algorithm)  # the default 64 KiB uncomp_chunk_size
        raw = _chunk(1 << 20, 7)
        (payload,) = _encode(gpu, codec, stream, [raw])
        if spec.gpu.size_prefix:
            payload = raw.size.to_bytes(4, "little") + payload
        cpu = CpuChunkCodec(CodecConfig(name, None, False), 1)
        (back,) = cpu.decode([payload], [raw.size], ["chunk"])
        results.append((spec.gpu.algorithm, np.array_equal(back, raw)))
    detail = ", ".join(f"{a} {'one stream' if ok else 'NOT one stream'}" for a, ok in results)
    yield Line(
        all(ok for _, ok in results),
        "uncomp_chunk_size under RAW",
        f"a 1 MiB chunk encoded under the default 64 KiB decodes with numcodecs as one ({detail})",
    )


def check_buffer_sizes(gpu: Gpu) -> Iterator[Line]:
    codec, stream = _codec(gpu, "LZ4")
    chunks = [_chunk(n, n) for n in (1000, 2000, 3000)]
    payloads = _encode(gpu, codec, stream, chunks)
    align = max(1, int(codec.get_required_decompression_alignment()))
    device, offsets, lengths = _upload(gpu, payloads, align)
    capacity = 4096
    out = gpu.cp.empty(capacity * len(chunks), dtype=gpu.cp.uint8)
    out_offsets = [i * capacity for i in range(len(chunks))]
    sources = gpu.nv.as_arrays(device, offsets, lengths, cuda_stream=stream)
    targets = gpu.nv.as_arrays(out, out_offsets, [capacity] * len(chunks), cuda_stream=stream)
    got = [int(n) for n in codec.decode(sources, out=targets).buffer_sizes]
    host = gpu.cp.asnumpy(out)
    same = all(
        np.array_equal(host[o : o + c.size], c) for o, c in zip(out_offsets, chunks, strict=True)
    )
    reading = {
        (capacity,) * len(chunks): "the capacities",
        tuple(c.size for c in chunks): "the decoded sizes",
    }.get(tuple(got))
    yield Line(
        reading is not None and same,
        "buffer_sizes after decode(out=...)",
        f"reports {reading or f'neither capacities nor decoded sizes: {got}'} (gpuds works "
        f"with either); decoded bytes {'equal' if same else 'DIFFER from'} the input",
    )
    small = gpu.nv.as_arrays(out, out_offsets, [500] * len(chunks), cuda_stream=stream)
    try:
        codec.decode(sources, out=small).buffer_sizes  # noqa: B018 (waits for the work)
    except ValueError as e:
        yield Line(True, "decode(out=...) too small", f"raises ValueError ({e})")
    except Exception as e:
        detail = f"raises {type(e).__name__}, not ValueError ({e})"
        yield Line(False, "decode(out=...) too small", detail)
    else:
        yield Line(False, "decode(out=...) too small", "returned without an error")


def check_alignment(gpu: Gpu) -> Iterator[Line]:
    values: dict[str, set[int]] = {}
    for spec in registry.specs():
        if spec.gpu is None:
            continue
        data_types: list[str | None] = [*sorted(spec.gpu.data_types)] or [None]
        for data_type in data_types:
            codec, _ = _codec(gpu, spec.gpu.algorithm, **spec.gpu.options(None, data_type))
            found = values.setdefault(spec.gpu.algorithm, set())
            found.add(int(codec.get_required_compression_alignment()))
            found.add(int(codec.get_required_decompression_alignment()))
    every = set().union(*values.values())
    allocations = [_address(gpu.cp.empty(n, dtype=gpu.cp.uint8)) for n in (1, 17, 4096, 1 << 20)]
    aligned = all(a % max(every) == 0 for a in allocations)
    ok = all(v > 0 and v & (v - 1) == 0 and 256 % v == 0 for v in every) and aligned
    detail = ", ".join(f"{a} {sorted(v)}" for a, v in values.items())
    yield Line(
        ok,
        "alignment values",
        f"{detail} bytes: powers of two dividing 256; CuPy allocations "
        f"{'meet' if aligned else 'do NOT meet'} the largest",
    )


# -- damaged chunks ----------------------------------------------------------------------------


def check_corrupt(gpu: Gpu) -> Iterator[Line]:
    for spec in registry.specs():
        if spec.gpu is None:
            continue
        gpuds_codec = NvcompChunkCodec(CodecConfig(spec.name, None, False), 1)
        good = gpuds_codec.encode([_chunk(8000, 3)])[0]
        prefix = 4 if spec.gpu.size_prefix else 0
        zeros = good[:prefix] + bytes(len(good) - prefix)
        truncated = good[: prefix + (len(good) - prefix) // 2]
        codec, stream = _codec(gpu, spec.gpu.algorithm, **gpuds_codec.nvcomp_options)
        align = max(1, int(codec.get_required_decompression_alignment()))
        device, offsets, lengths = _upload(gpu, [zeros[prefix:]], align)
        out = gpu.cp.empty(8000, dtype=gpu.cp.uint8)
        nvcomp_error = ""
        try:
            sources = gpu.nv.as_arrays(device, offsets, lengths, cuda_stream=stream)
            targets = gpu.nv.as_arrays(out, [0], [8000], cuda_stream=stream)
            sizes = [int(n) for n in codec.decode(sources, out=targets).buffer_sizes]
            gpu.cp.cuda.get_current_stream().synchronize()
            raised = f"returned without an error (buffer_sizes {sizes})"
        except Exception as e:
            raised = ""
            nvcomp_error = f"{type(e).__name__}"
        caught = []
        for what, payload in (("zero-filled", zeros), ("truncated", truncated)):
            try:
                gpuds_codec.decode([good, payload], [8000, 8000], ["c/0", "c/1"])
                caught.append(f"{what}: NOT refused")
            except CorruptChunkError as e:
                caught.append("" if "c/1" in str(e) else f"{what}: refused without naming c/1")
        gpuds_ok = not any(caught)
        if spec.cpu is not None:  # zstd, lz4, gzip: their decoders validate every stream
            ok = not raised and gpuds_ok
            nvcomp_says = raised or f"nvCOMP's decode raises ({nvcomp_error})"
        else:  # the release notes' known issue: these decoders trust their input
            ok = gpuds_ok
            nvcomp_says = (
                f"nvCOMP's decode raises ({nvcomp_error})"
                if not raised
                else f"nvCOMP {raised} (known issue: it trusts its input; crc32c stops damage)"
            )
        problems = "; ".join(c for c in caught if c)
        yield Line(
            ok,
            f"corrupt {spec.name} chunk",
            f"zero-filled: {nvcomp_says}; gpuds raises CorruptChunkError naming it for "
            f"zero-filled and truncated chunks{'' if gpuds_ok else ' - NOT: ' + problems}",
        )


# -- the loader's window path --------------------------------------------------------------------


def _dataset(tmp: Path) -> tuple[Path, dict[str, np.ndarray]]:
    raw = tmp / "loader-raw.zarr"
    n = 1000
    rng = np.random.default_rng(5)
    data: dict[str, np.ndarray] = {
        "ids": np.arange(n, dtype=np.int64),
        "x": np.cumsum(rng.normal(size=(n, 8)), axis=0).astype(np.float32),
        "y": rng.integers(0, 10, n).astype(np.int32),
    }
    if not raw.exists():
        for name, values in data.items():
            np.save(tmp / f"{name}.npy", values)
        gpuds.ingest([tmp / f"{name}.npy" for name in data], raw)
    return raw, data


def _loader_problems(gpu: Gpu, store: Path, data: Mapping[str, np.ndarray]) -> list[str]:
    problems = []
    seen = []
    loader = gpuds.open(str(store)).loader(64, seed=3, device=gpu.device)
    for batch in loader:
        if not all(gpu.on_device(v) for v in batch.values()):
            problems.append("a batch is not on the device")
        host = {name: backend.to_host(v) for name, v in batch.items()}
        ids = host["ids"]
        seen.append(ids)
        for name, values in host.items():
            if not np.array_equal(values, data[name][ids]):
                problems.append(f"field {name} differs from the data it was made from")
    order = np.concatenate(seen)
    if not np.array_equal(np.sort(order), data["ids"]):
        problems.append("the epoch does not deliver every sample exactly once")
    if np.array_equal(order, data["ids"]):
        problems.append("the epoch is not shuffled")
    return sorted(set(problems))


def check_loader(gpu: Gpu) -> Iterator[Line]:
    raw, data = _dataset(gpu.tmp)
    small = {"chunk_mb": 0.002, "shard_mb": 0.01}
    stores = {
        "portable (zstd+shuffle, lz4, gzip)": (
            gpuds.FieldSettings(CodecConfig("zstd", 3, True), **small),
            {
                "ids": gpuds.FieldSettings(CodecConfig("lz4", None, False), **small),
                "y": gpuds.FieldSettings(CodecConfig("gzip", 6, False), **small),
            },
        ),
        "nvCOMP-only (cascaded, bitcomp, ans)": (
            gpuds.FieldSettings(CodecConfig("bitcomp", None, False), **small),
            {
                "ids": gpuds.FieldSettings(CodecConfig("cascaded", None, False), **small),
                "y": gpuds.FieldSettings(CodecConfig("ans", None, True), **small),
            },
        ),
    }
    for i, (what, (settings, per_field)) in enumerate(stores.items()):
        store = gpu.tmp / f"loader-{i}.zarr"
        if not store.exists():
            gpuds.compress(raw, store, settings=settings, per_field=per_field, device=gpu.device)
        problems = _loader_problems(gpu, store, data)
        if i == 0:
            cpu = list(gpuds.open(str(store)).loader(64, seed=3, device="cpu"))
            got = list(gpuds.open(str(store)).loader(64, seed=3, device=gpu.device))
            same = len(cpu) == len(got) and all(
                np.array_equal(backend.to_host(g[k]), c[k])
                for g, c in zip(got, cpu, strict=True)
                for k in c
            )
            if not same:
                problems.append("GPU batches differ from the CPU loader's")
        yield Line(
            not problems,
            f"loader window path, {what}",
            "; ".join(problems)
            or "one shuffled epoch on the device equals the data (and the CPU loader's)",
        )


# -- ops ------------------------------------------------------------------------------------------

OP_CASES: dict[str, list[dict[str, Any]]] = {
    "cast": [
        {"op": "cast", "fields": "images", "dtype": "float16"},
        {"op": "cast", "fields": "v", "dtype": "int16"},
    ],
    "standardize": [{"op": "standardize", "fields": ["images", "x"], "per": "channel"}],
    "normalize": [{"op": "normalize", "fields": "v", "range": [-1, 1]}],
    "clip": [{"op": "clip", "fields": "v", "lower": 5, "upper": 95}],
    "fill_missing": [{"op": "fill_missing", "fields": "x", "strategy": "median"}],
    "drop_invalid": [{"op": "drop_invalid", "fields": "x"}],
    "resize": [
        {"op": "resize", "fields": "images", "size": [7, 5]},
        {"op": "resize", "fields": "x", "size": [3, 5], "interpolation": "nearest"},
    ],
    "center_crop": [{"op": "center_crop", "fields": "images", "size": [6, 6]}],
    "dedupe": [{"op": "dedupe", "fields": "codes"}],
    "sample": [{"op": "sample", "fraction": 0.5, "stratify": "labels"}],
    "shuffle": [{"op": "shuffle"}],
    "split": [{"op": "split", "fractions": [0.8, 0.2], "stratify": "labels"}],
}
"""A pipeline per registered op (``preprocess`` config ``ops``), on :func:`_op_input`."""


def _op_input(tmp: Path) -> Path:
    raw = tmp / "ops-raw.zarr"
    if raw.exists():
        return raw
    rng = np.random.default_rng(11)
    n = 96
    x = rng.normal(size=(n, 6, 4, 2)).astype(np.float32) * 10
    x[rng.random(x.shape) < 0.05] = np.nan
    arrays: dict[str, np.ndarray] = {
        "images": rng.integers(0, 256, (n, 12, 10, 3), dtype=np.uint8),
        "v": rng.normal(size=n) * 1000,
        "x": x,
        "codes": rng.integers(0, 5, n).astype(np.int32),
        "labels": rng.integers(0, 3, n).astype(np.int64),
    }
    for name, values in arrays.items():
        np.save(tmp / f"{name}.npy", values)
    gpuds.ingest([tmp / f"{name}.npy" for name in arrays], raw)
    return raw


def _arrays(store: Path) -> dict[str, np.ndarray]:
    import zarr

    out: dict[str, np.ndarray] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, array in group.arrays():
            out[prefix + name] = array[...]
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(str(store), mode="r"), "")
    return out


def compare(want: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> tuple[bool, str]:
    """Equal fields: integers and booleans exactly, floats exactly or within 1e-6 relative
    (reductions may add in another order on the device), NaN where NaN."""
    if set(want) != set(got):
        return False, f"fields {sorted(want)} on NumPy, {sorted(got)} on CuPy"
    worst = 0.0
    for name in sorted(want):
        a, b = want[name], got[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            return False, f"{name}: {a.dtype} {a.shape} on NumPy, {b.dtype} {b.shape} on CuPy"
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return False, f"{name}: {int((a != b).sum())} values differ"
            continue
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return False, f"{name}: NaN in other places"
        x, y = a[~np.isnan(a)].astype(np.float64), b[~np.isnan(b)].astype(np.float64)
        scale = np.maximum(np.abs(x), np.finfo(a.dtype).tiny)
        worst = max(worst, float(np.max(np.abs(x - y) / scale, initial=0.0)))
        if worst > 1e-6:
            return False, f"{name}: values differ by up to {worst:.1e} (relative)"
    return True, "identical" if worst == 0 else f"within {worst:.1e} (relative)"


def op_line(gpu: Gpu, name: str, ops: list[dict[str, Any]]) -> Line:
    raw = _op_input(gpu.tmp)
    config = {"seed": 0, "ops": ops}
    want, got = gpu.tmp / f"op-{name}-numpy.zarr", gpu.tmp / f"op-{name}-cupy.zarr"
    gpuds.preprocess(raw, want, config=config, device="cpu", overwrite=True)
    summary = gpuds.preprocess(raw, got, config=config, device=gpu.device, overwrite=True)
    ok, detail = compare(_arrays(want), _arrays(got))
    ran_on = summary.get("device", gpu.device)
    return Line(ok, f"op {name}", f"CuPy ({ran_on}) against NumPy: {detail}")


def check_ops(gpu: Gpu) -> Iterator[Line]:
    for name, ops in OP_CASES.items():
        try:
            yield op_line(gpu, name, ops)
        except Exception as e:
            yield Line(False, f"op {name}", f"{type(e).__name__}: {e}")


GROUPS: dict[str, list[Check]] = {
    "formats": [check_formats],
    "nvcomp": [check_uncomp_chunk_size, check_buffer_sizes, check_alignment],
    "loader": [check_loader],
    "ops": [check_ops],
    "corrupt": [check_corrupt],  # last: a decoder that trusts its input may poison the context
}


def run_group(group: str, gpu: Gpu) -> Iterator[Line]:
    """Every line of ``group``; a check that raises gives one FAIL line naming the error."""
    for check in GROUPS[group]:
        try:
            yield from check(gpu)
        except Exception as e:
            name = check.__name__.removeprefix("check_").replace("_", " ")
            yield Line(False, name, f"{type(e).__name__}: {e}")


def _run_here(group: str) -> int:
    cp, reason, _ = backend.probe_cuda()
    if cp is None:
        print(f"FAIL  {group}: no usable GPU ({reason})")
        return 1
    from nvidia import nvcomp

    failed = False
    with tempfile.TemporaryDirectory(prefix="gpuds-gpu-checks-") as tmp:
        for line in run_group(group, Gpu(cp, nvcomp, Path(tmp))):
            print(line, flush=True)
            failed |= not line.ok
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--group", choices=list(GROUPS), help="run one group in this process")
    args = parser.parse_args(argv)
    if args.list:
        for group, checks in GROUPS.items():
            print(f"{group}: {', '.join(c.__name__ for c in checks)}")
        return 0
    if args.group:
        return _run_here(args.group)
    cp, reason, info = backend.probe_cuda()
    if cp is None:
        print(f"gpu_checks: no usable GPU ({reason}); nothing checked")
        return 2
    passed = failed = 0
    for group in GROUPS:
        child = subprocess.run(
            [sys.executable, __file__, "--group", group], capture_output=True, text=True
        )
        lines = [line for line in child.stdout.splitlines() if line[:4] in ("PASS", "FAIL")]
        for line in lines:
            print(line, flush=True)
        passed += sum(line.startswith("PASS") for line in lines)
        failed += sum(line.startswith("FAIL") for line in lines)
        if child.returncode not in (0, 1) or not lines:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"FAIL  {group}: the check process ended with code {child.returncode} ({last})")
            failed += 1
    print(f"gpu_checks: {passed} passed, {failed} failed on {info.get('gpu', 'the GPU')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
