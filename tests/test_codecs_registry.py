"""The codec registry: every codec declared once, and everything that names codecs agrees with it.

Checked here: the re-exported tuples, each codec's chain written and recognised back (with what
decoding needs), its levels, its CPU implementation and header size check, ``--codec auto``'s
candidates and speed classes, ``gpuds inspect``'s portability, the CLI's ``--codec`` choices, the
docs' codec tables, and that a new codec is one module and one registry line (docs/DEVELOPING.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds
from gpuds import codecs
from gpuds.chunks import parse_chain
from gpuds.codecs import auto, registry
from gpuds.codecs.base import LEVELS, CodecConfig
from gpuds.codecs.cpu import DEFAULT_LEVELS, CpuChunkCodec
from gpuds.codecs.spec import CodecSpec
from gpuds.errors import ConfigError, CorruptChunkError
from gpuds.inspection import portability

ROOT = Path(__file__).parent.parent
SPECS = registry.specs()


def _ids(spec: CodecSpec) -> str:
    return spec.name


def test_the_reexported_names_are_the_registrys():
    assert codecs.CODEC_NAMES == (*registry.names(), "auto") == registry.choices()
    assert registry.portable() == codecs.PORTABLE
    assert registry.gpu_only() == codecs.GPU_ONLY
    assert set(registry.portable()) | set(registry.gpu_only()) == set(registry.names())
    assert {
        s.name: s.levels for s in SPECS if s.cpu and s.levels and s.levels[1] is not None
    } == LEVELS
    assert {s.name: s.default_level for s in SPECS if s.cpu and s.default_level} == DEFAULT_LEVELS
    with pytest.raises(ConfigError, match=r"Expected a codec in zstd, lz4, .*auto, got 'brotli'"):
        registry.get("brotli")


def test_importing_the_registry_imports_neither_numpy_nor_zarr():
    import subprocess
    import sys

    code = (
        "import sys; import gpuds.codecs.registry as r; r.names(); "
        "import gpuds.codecs as c; c.CODEC_NAMES; "
        "assert not {'numpy', 'zarr', 'numcodecs'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
@pytest.mark.parametrize("dtype", ["uint8", ">i4", "<f8"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_the_chain_written_is_recognised_with_what_decoding_needs(
    spec: CodecSpec, dtype: str, shuffle: bool
):
    dt = np.dtype(dtype)
    config = CodecConfig(spec.name, None, shuffle)
    chain = [c.to_dict() for c in codecs.zarr_compressors(config, dt.itemsize, dt)]
    stored = [{"name": "bytes", "configuration": {"endian": "little"}}, *chain]
    assert [c["name"] for c in stored][-1] == "crc32c"
    got, checksum = parse_chain(stored, dt.itemsize)
    shuffled = shuffle and dt.itemsize > 1 and not spec.stores_raw
    assert checksum
    assert got == codecs.resolve_data_type(CodecConfig(spec.name, None, shuffled), dt)
    if spec.gpu is not None and spec.gpu.data_types:
        assert got is not None and got.data_type in spec.gpu.data_types
    # what the chain costs in portability: the codec's own level, and the shuffle's
    expected = "any" if spec.stores_raw else spec.portability
    if shuffled and expected == "any":
        expected = "zarr-python"
    assert portability(stored) == expected


def test_a_chain_no_codec_writes_is_left_to_zarr_python():
    assert parse_chain([{"name": "bytes"}, {"name": "blosc"}], 1) == (None, False)
    nvcomp = {"name": "gpuds.nvcomp", "configuration": {"algorithm": "ans", "data_type": "<i4"}}
    assert parse_chain([{"name": "bytes"}, nvcomp], 4) == (None, False)  # ANS takes no <i4
    shuffle = {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}}
    assert parse_chain([{"name": "bytes"}, shuffle], 4) == (None, False)  # none never shuffles


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_levels_are_the_declared_range(spec: CodecSpec):
    if spec.levels is None:
        with pytest.raises(ConfigError, match=f"codec {spec.name} takes no level, got 1"):
            CodecConfig(spec.name, 1)
        return
    low, high = spec.levels
    assert CodecConfig(spec.name, low).level == low
    with pytest.raises(ConfigError, match=re.escape(f"{spec.name} {spec.level_word} are {low} ")):
        CodecConfig(spec.name, low - 1)
    if high is not None:
        assert CodecConfig(spec.name, high).level == high
        with pytest.raises(ConfigError, match=re.escape(f"are {low} to {high}, got {high + 1}")):
            CodecConfig(spec.name, high + 1)
    if spec.default_level is not None:
        assert CodecConfig(spec.name, spec.default_level).level == spec.default_level


@pytest.mark.parametrize("spec", [s for s in SPECS if s.cpu], ids=_ids)
@pytest.mark.parametrize("shuffle", [False, True])
def test_cpu_implementation_round_trips_and_checks_the_declared_size(
    spec: CodecSpec, shuffle: bool
):
    codec = CpuChunkCodec(CodecConfig(spec.name, None, shuffle), 4)
    raw = np.cumsum(np.arange(1024, dtype="<i4")).view(np.uint8)
    (payload,) = codec.encode([raw])
    (decoded,) = codec.decode([payload], [raw.nbytes], ["c/0"])
    assert decoded.tobytes() == raw.tobytes()
    out = np.empty_like(raw)
    codec.decode_into(payload, out, "c/0")
    assert out.tobytes() == raw.tobytes()
    for wrong in (raw.nbytes - 4, raw.nbytes + 4):
        with pytest.raises(CorruptChunkError, match="corrupt chunk c/0"):
            codec.decode([payload], [wrong], ["c/0"])
        if spec.header_is_exact:  # refused from the header, before any decoding
            with pytest.raises(CorruptChunkError, match=f"its {spec.size_header} says"):
                spec.check_declared_size(payload, wrong, "c/0")


@pytest.mark.parametrize("name", registry.gpu_only())
def test_gpu_only_codecs_have_no_cpu_implementation_and_say_what_to_do(name: str):
    with pytest.raises(ConfigError, match=r"needs a GPU \(nvCOMP\).*use --codec zstd, lz4 or gzip"):
        codecs.chunk_codec(CodecConfig(name), 4)


def test_auto_tries_the_registrys_candidates_with_their_speed_classes():
    candidates = registry.auto_candidates()
    assert {s.name: s.speed_class for s in candidates} == auto.SPEED_CLASS
    assert [(c.name, c.level, c.shuffle) for c in auto.candidates(4)] == [
        (s.name, s.default_level, shuffle) for shuffle in (False, True) for s in candidates
    ]
    assert all(s.cpu for s in candidates), "auto trials run on the CPU"


def _tiny_store(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", np.cumsum(np.ones((64, 4), dtype=np.int32), axis=0))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    return tmp_path / "raw.zarr"


def test_the_cli_accepts_exactly_the_registrys_codecs(tmp_path: Path, cli: Any):
    raw = _tiny_store(tmp_path)
    for i, name in enumerate(registry.choices()):
        result = cli("compress", raw, "-o", tmp_path / f"{i}.zarr", "--codec", name, "--quiet",
                     "--device", "cpu")  # fmt: skip
        assert result.code == (1 if name in registry.gpu_only() else 0), (name, result.err)
    assert cli("compress", raw, "-o", tmp_path / "b.zarr", "--codec", "brotli").code == 2


@pytest.mark.parametrize(
    ("doc", "table"),
    [("docs/compress.md", registry.markdown_table), ("README.md", registry.readme_table)],
)
def test_the_docs_codec_tables_are_the_registrys(doc: str, table: Any):
    """Regenerate with ``python -m gpuds.codecs`` after changing a codec module."""
    text = (ROOT / doc).read_text()
    assert table() in text, f"{doc}: paste `python -m gpuds.codecs`"
    if doc == "docs/compress.md":
        assert f"[--codec {'|'.join(registry.choices())}]" in text


# -- a new codec: one module, one registry line --------------------------------------------------


class _Zlib(CodecSpec):
    """What a ``gpuds/codecs/zlib.py`` would declare (docs/DEVELOPING.md's example)."""

    def zarr_codec(self, level: int | None, data_type: str | None) -> Any:
        from zarr.codecs import numcodecs as zn

        return zn.Zlib(level=level)

    def cpu_compressor(self, level: int | None) -> Any:
        from numcodecs import Zlib

        return Zlib(level=level)


ZLIB = _Zlib(
    name="zlib",
    summary="zlib streams (numcodecs.zlib)",
    zarr_name="numcodecs.zlib",
    portability="zarr-python",
    default_level=1,
    levels=(0, 9),
    cpu="numcodecs",
)


def test_a_registered_codec_is_written_verified_read_and_inspected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # the registry line: MODULES gains "zlib", whose CODECS holds ZLIB
    monkeypatch.setitem(registry._SPECS, "zlib", ZLIB)
    raw = _tiny_store(tmp_path)
    settings = gpuds.FieldSettings(CodecConfig("zlib", 6, None))
    summary = gpuds.compress(raw, tmp_path / "z.zarr", settings=settings, device="cpu")
    assert summary["verified"]
    meta = json.loads((tmp_path / "z.zarr" / "x" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", "numcodecs.shuffle", "numcodecs.zlib", "crc32c"]
    values = np.load(tmp_path / "x.npy")
    loader = gpuds.open(str(tmp_path / "z.zarr")).loader(16, shuffle=False, device="cpu")
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in loader]), values)
    report = gpuds.inspect(str(tmp_path / "z.zarr"), verify=True)
    assert not report["problems"] and report["portability"] == "zarr-python"
    with pytest.raises(ConfigError, match="zlib levels are 0 to 9, got 10"):
        CodecConfig("zlib", 10)
