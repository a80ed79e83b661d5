"""The nvCOMP surface: what gpuds asks of nvCOMP exists in the installed ``nvidia.nvcomp``.

nvCOMP's Python package imports without a GPU, and documents itself: its docstrings hold every
signature, ``Codec``'s arguments (common, and per algorithm) and the values some of them permit;
its C headers hold the chunk limits. These tests read gpuds' source (tests/surface.py) and check
every class, method, enum member and keyword it uses against them, per algorithm (the option
sets of Zstd, LZ4, Gzip, GDeflate, Bitcomp, ANS and Cascaded), and check that the nvCOMP test
double (tests/nvcomp_double.py) offers nothing the real module lacks. When a new nvCOMP release
renames something, a test here fails on the CPU rather than on a user's GPU.

What only a GPU shows (what nvCOMP *does* with valid calls) is scripts/gpu-check.sh's job. Runs
when nvCOMP is installed (CI installs the ``gpu-cu13`` extra); skips with the reason otherwise.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpuds.codecs.nvcomp as nvmod
from gpuds.codecs import registry
from gpuds.codecs.base import CodecConfig
from gpuds.codecs.spec import CodecSpec

from . import nvcomp_double, surface

try:
    from nvidia import nvcomp
except Exception as e:  # ImportError, or a broken install: the check needs the real package
    pytest.skip(
        f"nvCOMP is not installed ({type(e).__name__}: {e}); install the gpu-cu12 or gpu-cu13 "
        "extra to check the nvCOMP surface",
        allow_module_level=True,
    )

DOCS = surface.NvcompDocs.read(nvcomp)
EXPANDABLE = {"self.nvcomp_options"}
"""The ``**mapping`` gpuds passes to ``nvcomp.Codec``: :attr:`NvcompChunkCodec.nvcomp_options`,
built by :meth:`GpuImpl.options`; :func:`_option_problems` checks what it holds per codec."""

DATA_TYPE_RULES: dict[str, tuple[str, frozenset[str]]] = {
    "Bitcomp": (
        "Lossless compression supports integer types and ``<f2``, ``<f4``, and ``<f8``.",
        frozenset({"|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"}),
    ),
    "Cascaded": (
        "Asymmetric mode supports all integer ``nvcompType_t`` values.",
        frozenset({"|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8"}),
    ),
}
"""``data_type`` values the docstring permits in prose rather than a list: the sentence (checked
to be still there, so a change of wording sends someone to re-read it) and what it allows.
Cascaded: gpuds uses the default, asymmetric, mode."""

EXTERNAL_QUOTES = {
    "with bitstreamkind::raw, the manager doesn't split the input data into smaller chunks": (
        "NVIDIA's sample nvCOMP/examples/high_level_quickstart_example.cpp"
    ),
    "thread-safety": "the Python API page (docs.nvidia.com/cuda/nvcomp/py_api.html)",
    "can only operate on valid input data": "the nvCOMP 6.0.0 release notes",
}
"""Quotations in gpuds' nvCOMP docstrings whose source is not the installed package."""


def _gpuds_uses() -> list[surface.Use]:
    uses = []
    for path, text in surface.source_files():
        uses.extend(surface.nvcomp_uses(text, path))
    return uses


def test_surface_gpuds_nvcomp_uses_exist_in_the_installed_nvcomp():
    uses = _gpuds_uses()
    report = surface.check_nvcomp(uses, DOCS, EXPANDABLE)
    assert not report.problems, "\n".join(report.problems)
    # The reader follows gpuds' objects: the module, its Codec (made per thread, returned from
    # a method, passed to helpers), the batches and their entries.
    seen = {(u.kind, u.name) for u in uses}
    assert {
        ("module", "Codec"),
        ("module", "as_arrays"),
        ("enum:BitstreamKind", "RAW"),
        ("Codec", "decode"),
        ("Codec", "encode"),
        ("Codec", "get_uncomp_buffer_size"),
        ("Codec", "get_required_decompression_alignment"),
        ("BatchArray", "buffer_sizes"),
        ("BatchArray", "cpu"),
        ("BatchArray", "__getitem__"),
    } <= seen
    (call,) = report.codec_calls
    assert call.path == "gpuds/codecs/nvcomp.py"
    assert set(call.keywords) >= {"algorithm", "bitstream_kind", "uncomp_chunk_size"}


def test_surface_what_gpuds_expects_calls_to_return_is_documented():
    for (owner, member), result in surface.NVCOMP_RESULTS.items():
        if owner == "module" and member[:1].isupper():
            assert isinstance(getattr(nvcomp, member), type)
            continue
        target = getattr(nvcomp if owner == "module" else getattr(nvcomp, owner), member)
        doc = target.__doc__ or ""
        returns = doc.split("Returns:")[-1] if "Returns:" in doc else ""
        signatures = " ".join(o.returns for o in DOCS.overloads(owner, member))
        assert re.search(rf"\b{result}\b", returns + " " + signatures), (owner, member, result)


def _levels(spec: CodecSpec) -> list[int | None]:
    assert spec.gpu is not None
    if spec.levels is None or spec.gpu.level_option is None:
        return [None, spec.default_level]
    low, high = spec.levels
    return [None, *range(low, high + 1)] if high is not None else [None, low, low + 1, 5, 100]


def _configs(spec: CodecSpec) -> list[NvcompChunkCodecArgs]:
    assert spec.gpu is not None
    data_types: list[str | None] = [*sorted(spec.gpu.data_types)] or [None]
    return [
        NvcompChunkCodecArgs(CodecConfig(spec.name, level, False, data_type), 1)
        for level in _levels(spec)
        for data_type in data_types
    ]


@dataclasses.dataclass(frozen=True)
class NvcompChunkCodecArgs:
    config: CodecConfig
    itemsize: int


GPU_SPECS = [s for s in registry.specs() if s.gpu is not None]


def _option_problems(spec: CodecSpec) -> list[str]:
    """What is wrong with the options gpuds passes ``nvcomp.Codec`` for ``spec``, for each
    level and ``data_type`` it can pass (:attr:`NvcompChunkCodec.nvcomp_options`)."""
    assert spec.gpu is not None
    algorithm = spec.gpu.algorithm
    problems = []
    if algorithm not in DOCS.algorithms:
        problems.append(f"{spec.name}: nvcomp documents no algorithm {algorithm!r}")
    allowed = DOCS.common | DOCS.options_of(algorithm)
    for args in _configs(spec):
        options = nvmod.NvcompChunkCodec(args.config, args.itemsize).nvcomp_options
        for key, value in options.items():
            where = f"{spec.name} {args.config}: {key}={value!r}"
            if key not in allowed:
                takes = ", ".join(sorted(DOCS.options_of(algorithm))) or "no options"
                problems.append(f"{where}: {algorithm} takes {takes}")
                continue
            permitted = DOCS.permitted.get((algorithm, key))
            if permitted is not None and str(value) not in permitted:
                problems.append(f"{where}: the docstring permits {permitted}")
            if key == "data_type" and algorithm in DATA_TYPE_RULES:
                sentence, values = DATA_TYPE_RULES[algorithm]
                if value not in values:
                    problems.append(f"{where}: the docstring says {sentence!r}")
    return problems


@pytest.mark.parametrize("spec", GPU_SPECS, ids=lambda s: s.name)
def test_surface_codec_options_are_the_algorithms_own(spec: CodecSpec):
    assert not _option_problems(spec)


def test_surface_data_type_rules_are_still_what_the_docstring_says():
    text = surface.normalise(nvcomp.Codec.__init__.__doc__ or "")
    for sentence, _ in DATA_TYPE_RULES.values():
        assert surface.normalise(sentence) in text
    assert set(DOCS.options) >= {"LZ4", "GDeflate", "Gzip", "Bitcomp", "ANS", "Cascaded"}
    assert DOCS.options_of("Zstd") == set()  # no level on the GPU: Zstd takes no options


def test_surface_a_wrong_option_in_the_registry_fails():
    gzip = registry.get("gzip")
    assert gzip.gpu is not None
    typo = dataclasses.replace(gzip, gpu=dataclasses.replace(gzip.gpu, level_option="algo_type"))
    beyond = dataclasses.replace(
        gzip, gpu=dataclasses.replace(gzip.gpu, level_values=(0, 2, 4, 4, 4, 4, 4, 5, 5, 9))
    )
    zstd = registry.get("zstd")
    assert zstd.gpu is not None
    on_zstd = dataclasses.replace(zstd.gpu, level_option="algorithm_type")
    foreign = dataclasses.replace(zstd, gpu=on_zstd, levels=(0, 5))
    with pytest.MonkeyPatch.context() as m:
        for planted, expected in [
            (typo, "algo_type=2: Gzip takes algorithm_type"),
            (beyond, "algorithm_type=9: the docstring permits ['0', '1', '2', '3', '4', '5']"),
            (foreign, "algorithm_type=1: Zstd takes no options"),
        ]:
            m.setattr(registry, "get", lambda name, planted=planted: planted)
            problems = _option_problems(planted)
            assert any(expected in p for p in problems), problems


PLANTED_CODEC = """
from nvidia import nvcomp


def make(stream: int):
    return nvcomp.Codec(
        algorithm="Zstd",
        bitstream_kind=nvcomp.BitstreamKind.RAW,
        uncomp_chunk_sise=1 << 20,
        cuda_stream=stream,
    )


def decode(codec, batch, out):
    return codec.decode(batch, output=out).buffer_size
"""


def test_surface_a_misspelled_codec_keyword_fails():
    uses = surface.nvcomp_uses(PLANTED_CODEC, "gpuds/codecs/planted.py")
    problems = surface.check_nvcomp(uses, DOCS, EXPANDABLE).problems
    assert any(
        p.startswith("gpuds/codecs/planted.py:6: nvcomp.Codec has no argument 'uncomp_chunk_sise'")
        for p in problems
    ), problems
    # The same misspelling planted in gpuds' own call fails too.
    real = (surface.PACKAGE / "codecs" / "nvcomp.py").read_text()
    planted = real.replace("uncomp_chunk_size=self.spec", "uncomp_chunk_sise=self.spec")
    assert planted != real
    problems = surface.check_nvcomp(
        surface.nvcomp_uses(planted, "gpuds/codecs/nvcomp.py"), DOCS, EXPANDABLE
    ).problems
    assert len(problems) == 1 and "has no argument 'uncomp_chunk_sise'" in problems[0], problems


def test_surface_other_planted_mistakes_fail():
    source = textwrap.dedent(
        """
        from nvidia import nvcomp

        def run(stream, batch):
            codec = nvcomp.Codec(algorithm="Zstd", algorithm_type=2,
                                 bitstream_kind=nvcomp.BitstreamKind.RAWW)
            out = codec.decode(batch, output=batch)
            return nvcomp.BatchArray([out[0]]), out.buffer_size, codec.decode_size(batch)
        """
    )
    problems = surface.check_nvcomp(
        surface.nvcomp_uses(source, "gpuds/planted.py"), DOCS, EXPANDABLE
    ).problems
    expected = [
        ":5: 'algorithm_type' is not a Zstd option of nvcomp.Codec",
        ":6: nvcomp enum:BitstreamKind has no 'RAWW'",
        ":7: Codec.decode called with 1 positional argument(s) and keywords ['output']",
        ":8: nvcomp documents no signature for module.BatchArray",
        ":8: nvcomp BatchArray has no 'buffer_size'",
        ":8: nvcomp Codec has no 'decode_size'",
    ]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)


def _parser_runs_before_cuda() -> str:
    """Why the live checks cannot run here ("" when they can): they rely on nvCOMP refusing
    unknown keywords before it starts CUDA, as nvCOMP 6.0 does."""
    try:
        nvcomp.Codec(algorithm="Zstd", gpuds_surface_probe=1)
    except ValueError as e:
        if "Unsupported argument" in str(e):
            return ""
        return f"nvCOMP refused an unknown keyword with another message: {e}"
    except Exception as e:
        return f"this nvCOMP starts CUDA before checking keywords ({type(e).__name__}: {e})"
    return "this nvCOMP accepted an unknown keyword"


class Accepted(Exception):
    """The real ``nvcomp.Codec`` took these arguments (stops gpuds right after making it)."""


class _RealCodecProbe:
    """``nvidia.nvcomp`` whose ``Codec`` is made for real, then raises :class:`Accepted`.

    Without a device, a call that passed the argument parser fails when CUDA starts: that
    counts as accepted too. Anything else the real call raises goes to the test."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(nvcomp, name)

    def Codec(self, **kwargs: Any) -> Any:
        try:
            nvcomp.Codec(**kwargs)
        except RuntimeError as e:
            if "CUDA" not in str(e) or "Unable to cast" in str(e):
                raise
        self.accepted.append(kwargs)
        raise Accepted


@pytest.mark.parametrize("spec", GPU_SPECS, ids=lambda s: s.name)
def test_surface_real_nvcomp_accepts_the_codecs_gpuds_makes(
    spec: CodecSpec, monkeypatch: pytest.MonkeyPatch
):
    """gpuds makes a real ``nvcomp.Codec`` (as its first encode does) for every level and data
    type of every codec; the real argument parser (names, and the types of the common
    arguments) must accept each call. CuPy is the double here: it supplies the stream and device
    ids only (the null stream, 0, and device 0)."""
    reason = _parser_runs_before_cuda()
    if reason:
        pytest.skip(reason)
    probe = _RealCodecProbe()
    cupy = nvcomp_double.FakeCupy()
    monkeypatch.setattr(nvmod, "_import_nvcomp", lambda: probe)
    monkeypatch.setattr(nvmod, "_import_cupy", lambda: cupy)
    configs = _configs(spec)
    for args in configs:
        with pytest.raises(Accepted):
            nvmod.NvcompChunkCodec(args.config, args.itemsize).encode([np.ones(64, np.uint8)])
    assert len(probe.accepted) == len(configs)
    assert all(k["bitstream_kind"] == nvcomp.BitstreamKind.RAW for k in probe.accepted)
    assert all(k["cuda_stream"] == 0 and k["device_id"] == 0 for k in probe.accepted)


def test_surface_real_nvcomp_refuses_a_misspelled_keyword():
    reason = _parser_runs_before_cuda()
    if reason:
        pytest.skip(reason)
    with pytest.raises(ValueError, match='Unsupported argument: "uncomp_chunk_sise"'):
        _RealCodecProbe().Codec(algorithm="Zstd", uncomp_chunk_sise=1 << 20)
    with pytest.raises(RuntimeError, match="Unable to cast"):  # types, too, before CUDA
        _RealCodecProbe().Codec(algorithm="Zstd", uncomp_chunk_size="1 MiB")
    with pytest.raises(Accepted):
        _RealCodecProbe().Codec(algorithm="Zstd", uncomp_chunk_size=1 << 20)


def _header_limits() -> dict[tuple[str, str], int]:
    found = importlib.util.find_spec("nvidia.libnvcomp")
    if found is None or found.origin is None:
        pytest.skip("nvidia-libnvcomp (nvCOMP's C headers) is not installed")
    include = Path(found.origin).parent / "include" / "nvcomp"
    limits = {}
    text = "\n".join(h.read_text() for h in sorted(include.glob("*.h")))
    for spec in GPU_SPECS:
        assert spec.gpu is not None
        name = spec.gpu.algorithm.lower()
        pattern = rf"static const size_t nvcomp{name}(Compression|\w*Decompression)"
        pattern += r"MaxAllowedChunkSize\s*=\s*(.+?);"
        for kind, expression in re.findall(pattern, text, re.IGNORECASE):
            limits[(name, kind)] = _c_constant(expression)
    if not limits:
        pytest.skip(f"no *MaxAllowedChunkSize constants in {include}")
    return limits


def _c_constant(expression: str) -> int:
    """A C integer constant expression of the headers (``(1ull << 32) - 1``, ``~0ull``)."""
    text = re.sub(r"\(size_t\)", "", expression)
    text = re.sub(r"\b(0x[0-9A-Fa-f]+|\d+)(?:[uU]?[lL]{0,2}|[lL]{1,2}[uU]?)\b", r"\1", text)
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant)
    operators = (ast.LShift, ast.Add, ast.Sub, ast.Invert)
    assert all(isinstance(n, allowed + operators) for n in ast.walk(tree)), expression
    return int(eval(compile(tree, "<header>", "eval"))) % 2**64  # 64-bit size_t


def test_surface_chunk_limits_are_the_headers():
    limits = _header_limits()
    for spec in GPU_SPECS:
        assert spec.gpu is not None
        name = spec.gpu.algorithm.lower()
        assert spec.gpu.max_chunk_bytes <= limits[(name, "Compression")], spec.name
        decode = min(v for (a, kind), v in limits.items() if a == name and kind != "Compression")
        assert spec.gpu.decode_limit_bytes == decode, spec.name
    assert nvmod.DECODE_LIMIT_BYTES["cascaded"] == (1 << 24) + 8
    assert _c_constant("~0ull") == 2**64 - 1 and _c_constant("((size_t)0x7FFFFFFFULL << 15)") == (
        0x7FFFFFFF << 15
    )


def _double_problems(double: Any) -> list[str]:
    controls = nvcomp_double.CONTROLS
    problems = []
    for name in {n for n in vars(double) if not n.startswith("_")}:
        if not hasattr(nvcomp, name):
            problems.append(f"the double offers nvcomp.{name}; nvCOMP has none")
            continue
        real, fake = getattr(nvcomp, name), getattr(double, name)
        if not isinstance(fake, type):
            _compare_signature(problems, "module", name, fake)
            continue
        real_members = surface.public_surface(real) | set(getattr(real, "__members__", {}))
        for member in sorted(surface.public_surface(fake) - controls.get(name, frozenset())):
            if member not in real_members:
                problems.append(f"the double's {name} offers '{member}'; nvcomp.{name} has none")
            elif inspect.isfunction(inspect.getattr_static(fake, member)):
                _compare_signature(problems, name, member, getattr(fake, member))
    return problems


def _compare_signature(problems: list[str], owner: str, name: str, fake: Any) -> None:
    documented = {p for o in DOCS.overloads(owner, name) for p in o.parameters}
    for p in inspect.signature(fake).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in documented:
            problems.append(
                f"the double's {owner}.{name} takes '{p.name}'; nvcomp documents "
                f"{sorted(documented)}"
            )


def test_surface_the_double_offers_nothing_the_real_nvcomp_lacks():
    double = nvcomp_double.make_nvcomp()
    problems = _double_problems(double)
    codec = double.Codec(algorithm="Zstd", bitstream_kind=double.BitstreamKind.RAW)
    extra = {n for n in vars(codec) if not n.startswith("_")} - nvcomp_double.CONTROLS["Codec"]
    problems += [f"the double's Codec instances offer '{n}'" for n in sorted(extra)]
    array = double.as_array(np.zeros(16, np.uint8))
    problems += [
        f"the double's Array instances offer '{n}'"
        for n in sorted(vars(array))
        if not n.startswith("_") and not hasattr(nvcomp.Array, n)
    ]
    assert not problems, "\n".join(problems)


def test_surface_the_double_follows_the_documented_option_sets():
    for algorithm in nvcomp_double.OPTIONS:
        assert algorithm in {a.lower() for a in DOCS.algorithms}, algorithm
        assert nvcomp_double.OPTIONS[algorithm] == DOCS.options_of(algorithm), algorithm
    assert DOCS.common == nvcomp_double.COMMON
    assert set(DOCS.permitted[("ANS", "data_type")]) == nvcomp_double.ANS_TYPES
    assert set(vars(nvcomp_double.BitstreamKind)) & set(nvcomp.BitstreamKind.__members__) == {
        n for n in vars(nvcomp_double.BitstreamKind) if not n.startswith("_")
    }
    assert "conservative maximum alignment of 16 bytes" in DOCS.text
    assert nvcomp_double.ALIGNMENT == 16


def test_surface_the_double_check_catches_an_extra_member(monkeypatch: pytest.MonkeyPatch):
    double = nvcomp_double.make_nvcomp()
    monkeypatch.setattr(double.BatchArray, "__iter__", lambda self: iter([]), raising=False)
    monkeypatch.setattr(double.Codec, "decode_size", lambda self, source: 0, raising=False)
    monkeypatch.setattr(double, "as_arrays", lambda buffer, offsets, sizes, stream=0: None)
    problems = _double_problems(double)
    assert "the double's BatchArray offers '__iter__'; nvcomp.BatchArray has none" in problems
    assert "the double's Codec offers 'decode_size'; nvcomp.Codec has none" in problems
    assert any("as_arrays takes 'stream'" in p for p in problems), problems


def _live_messages() -> list[str]:
    """Messages the real module raises before CUDA starts (quoted by the docstrings)."""
    messages = []
    for attempt in (
        lambda: nvcomp.Codec(algorithm="Zstd", gpuds_surface_probe=1),
        lambda: nvcomp.as_arrays([]),
        lambda: nvcomp.as_arrays(np.zeros(16, np.uint8), [], []),
    ):
        try:
            attempt()
        except Exception as e:
            messages.append(str(e))
    return messages


def _quotations(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    prose = re.sub(r"``.*?``", "", " ".join(doc.split()))
    return [q.removeprefix("... ") for q in re.findall(r'"([^"]+)"', prose)]


@pytest.mark.parametrize(
    "path",
    [surface.PACKAGE / "codecs" / "nvcomp.py", Path(nvcomp_double.__file__)],
    ids=["gpuds.codecs.nvcomp", "nvcomp_double"],
)
def test_surface_quotations_of_nvcomp_are_in_the_installed_package(path: Path):
    """Every quotation of nvCOMP in the docstrings of gpuds' nvCOMP module and of the double is
    in the installed package's docstrings or messages (or in :data:`EXTERNAL_QUOTES`)."""
    text = surface.normalise(DOCS.text + " " + " ".join(_live_messages()))
    quotes = _quotations(path)
    assert quotes
    missing = [
        q
        for q in quotes
        if surface.normalise(q) not in text and surface.normalise(q) not in EXTERNAL_QUOTES
    ]
    assert not missing, f"{path.name} quotes what the installed nvCOMP does not say: {missing}"
