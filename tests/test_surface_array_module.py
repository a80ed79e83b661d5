"""The array-module surface: what gpuds asks of CuPy exists in the installed CuPy (and NumPy).

No machine of this project has a GPU, so gpuds' CuPy code never runs here. What can be checked
without one is its *surface*: every attribute gpuds uses through the array module (``xp.where``,
``cp.cuda.Stream``), every array method it calls, and the keywords it passes, read from gpuds'
source and looked up in the installed CuPy and NumPy (tests/surface.py). A NumPy-only function in
an op, or a keyword CuPy lacks, fails here with its file, line and name, on the CPU.

Where gpuds relies on a documented difference between the two, :data:`DIFFERENCES` says what
CuPy documents and why gpuds is right under both; :data:`CUPY_ONLY` lists the CuPy-only names
gpuds reaches through the backend's module, with the files (GPU-only code) allowed to. Runs when
CuPy is installed (CI installs the ``gpu-cu13`` extra); skips with the reason otherwise.
"""

from __future__ import annotations

import inspect
import textwrap
import types
from typing import Any

import numpy as np
import pytest

from . import nvcomp_double, surface

try:
    import cupy
except Exception as e:  # ImportError, or a broken install: the check needs the real package
    pytest.skip(
        f"CuPy is not installed ({type(e).__name__}: {e}); install the gpu-cu12 or gpu-cu13 "
        "extra to check the array-module surface",
        allow_module_level=True,
    )

CUPY_ONLY: dict[str, dict[str, str]] = {
    "cuda.get_current_stream": {
        "gpuds/backend.py": "synchronize(): only when backend.is_gpu",
        "gpuds/bench/loader.py": "after a GPU loader epoch, only when backend.is_gpu",
        "gpuds/bench/store.py": "the store read with device='cuda' only",
    },
    "cuda.Stream": {"gpuds/loader.py": "each worker's stream, in the GPU window path only"},
}
"""CuPy's own API reached through ``xp`` (the backend's module) in code that runs on a GPU only:
name -> {file: why only on a GPU}. Anywhere else ``xp.<name>`` must exist in NumPy too."""

DIFFERENCES: dict[str, tuple[str, str]] = {
    "astype": (
        "float to integer casts of NaN, inf and out-of-range values are undefined in C++: CuPy "
        "gives other values than NumPy (docs.cupy.dev, Differences: 'Cast behavior from float "
        "to integer')",
        "ops/cast.py refuses NaN, inf and out-of-range values before it casts to an integer, "
        "and ops/resize.py rounds and clips into the target's range first",
    ),
    "take": (
        "out-of-bounds integer indices wrap around in CuPy where NumPy raises IndexError "
        "('Out-of-bounds indices')",
        "every gather index is computed in range: the loader's delivery order, resize's rows "
        "and columns (tests/test_ops_resize.py, tests/test_loader_gpu_double.py)",
    ),
    "sum": (
        "reductions return 0-d arrays, not scalars ('Zero-dimensional array')",
        "reduced values stay arrays or go through to_host()/tolist() before Python uses them",
    ),
    "min": ("as sum", "as sum"),
    "max": ("as sum", "as sum"),
    "tolist": (
        "copies the array to the host, waiting for the device",
        "used on small per-block counters only (drop_invalid's totals)",
    ),
}
"""Documented behaviour differences gpuds relies on: name -> (what CuPy documents, why gpuds is
right on both). Each row names something gpuds uses (checked), so the table stays true."""

HOST_ONLY: dict[str, str] = {
    "unique": "class counts, sample and split run on the host (np.unique in ops/counting.py, "
    "ops/sample.py, ops/split.py)",
    "sort": "no op sorts on the device",
    "argsort": "no op sorts on the device; shuffles draw permutations on the host",
    "isin": "no op tests membership on the device",
}
"""Names whose CuPy behaviour differs in documented ways (sort order of NaNs, ``unique``'s
options) and that gpuds deliberately uses on the host only: a use through ``xp`` fails, asking
for a :data:`DIFFERENCES` row first."""

RETURNS: dict[str, Any] = {
    "cuda.get_current_stream": cupy.cuda.Stream.null,  # a Stream, made without a device
    "cuda.Stream": cupy.cuda.Stream.null,
    "cuda.Device": cupy.cuda.Device(0),
}
"""An object of the kind each call returns, for attributes gpuds reads on the result."""


def _gpuds_uses() -> list[surface.Use]:
    uses = []
    for path, text in surface.source_files():
        uses.extend(surface.array_module_uses(text, path, np))
    return uses


def _check(uses: list[surface.Use]) -> surface.ArrayReport:
    return surface.check_array_module(uses, np, cupy, CUPY_ONLY, RETURNS)


def test_surface_gpuds_array_module_uses_exist_in_cupy_and_numpy():
    uses = _gpuds_uses()
    report = _check(uses)
    assert not report.problems, "\n".join(report.problems)
    # The reader sees the code it is meant to see: ops through xp, the GPU paths through cp.
    seen = {(u.path, u.name) for u in uses}
    assert ("gpuds/ops/stats.py", "bincount") in seen
    assert any(path == "gpuds/loader.py" for path, _ in seen)  # the GPU window path
    assert ("gpuds/codecs/nvcomp.py", "asarray") in seen
    assert any(u.kind == "array:xp" and u.name == "astype" for u in uses)
    assert len(uses) > 150


def test_surface_keywords_are_read_from_cupy_signatures():
    """Keywords gpuds passes are checked where CuPy's signature can be read: by
    ``inspect.signature``, or from the line that opens a Cython or ufunc docstring (CuPy 14
    has one for every call gpuds passes keywords to; an unreadable one is skipped, not failed)."""
    report = _check(_gpuds_uses())
    called = {u.name for u in _gpuds_uses() if u.keywords}
    assert len(called) >= 8
    assert len(report.unreadable) < len(called) / 2, sorted(report.unreadable)
    assert surface.signature_parameters(cupy.isnan) == ({"out", "casting", "dtype"}, False)
    assert surface.signature_parameters(cupy.ndarray.astype)[0] >= {"dtype", "copy"}
    assert surface.signature_parameters(cupy.cuda.get_current_stream) == ({"device_id"}, False)


def test_surface_documented_differences_name_what_gpuds_uses():
    used = {u.name for u in _gpuds_uses()}
    stale = sorted(set(DIFFERENCES) - used)
    assert not stale, f"DIFFERENCES rows for names gpuds no longer uses: {stale}"
    for name in DIFFERENCES:
        assert hasattr(np.ndarray, name) or hasattr(np, name)
        assert hasattr(cupy.ndarray, name) or hasattr(cupy, name)
    for path in {p for files in CUPY_ONLY.values() for p in files}:
        assert (surface.ROOT / path).is_file(), path
    unlisted = sorted(
        f"{u.where}: xp.{u.name}" for u in _gpuds_uses() if u.kind == "xp" and u.name in HOST_ONLY
    )
    assert not unlisted, f"add a DIFFERENCES row before using these on the device: {unlisted}"


PLANTED_OP = """
from gpuds.backend import array_module


class Percentile:
    def apply(self, block):
        x = block.fields["x"]
        xp = array_module(x)
        ok = ~xp.isnan(x)
        low = xp.nanquantile(x, 0.01, axis=0)
        return xp.clip(x, low, None), x.sum(axis=0, where=ok)
"""


def test_surface_a_planted_numpy_only_call_in_an_op_fails():
    uses = surface.array_module_uses(PLANTED_OP, "gpuds/ops/planted.py", np)
    problems = _check(uses).problems
    assert "gpuds/ops/planted.py:10: cupy has no xp.nanquantile" in problems
    assert any(
        p.startswith("gpuds/ops/planted.py:11: cupy.ndarray.sum takes no keyword 'where'")
        for p in problems
    ), problems
    assert len(problems) == 2, problems  # isnan, clip and the rest exist in both


def test_surface_a_planted_keyword_or_numpy_call_on_a_device_array_fails():
    source = textwrap.dedent(
        """
        import numpy as np
        from gpuds.backend import array_module

        def apply(values, dest):
            xp = array_module(values)
            order = xp.mean(values, axis=0, where=values > 0)
            y = values.astype(xp.float32)
            stream = xp.cuda.Stream(non_blocking=True)
            return np.percentile(y, 50), order, stream
        """
    )
    problems = _check(surface.array_module_uses(source, "gpuds/ops/planted.py", np)).problems
    assert any(":7: cupy.mean takes no keyword 'where'" in p for p in problems), problems
    assert any(":9: numpy has no xp.cuda.Stream" in p for p in problems), problems
    assert any(":10: np.percentile() is given an array" in p for p in problems), problems


def test_surface_fake_cupy_offers_nothing_cupy_lacks():
    """The CuPy test double (tests/nvcomp_double.py) must not let a test pass on something CuPy
    does not have: each of its names exists in CuPy and takes no keyword CuPy's does not."""
    fake = nvcomp_double.FakeCupy()
    controls = nvcomp_double.CONTROLS
    problems = []
    members = [(n, getattr(fake, n)) for n in vars(fake) | vars(type(fake)) if n[:1] != "_"]
    for name, value in members:
        if name in controls["FakeCupy"]:
            continue
        if name == "cuda":
            members.extend((f"cuda.{n}", v) for n, v in vars(value).items())
            continue
        if not surface.has(cupy, name):
            problems.append(f"the double offers cupy.{name}; CuPy has none")
            continue
        _compare_parameters(problems, name, value, surface.resolve(cupy, name))
    stream = fake.cuda.Stream()
    for name in surface.public_surface(stream) - controls["Stream"]:
        if not hasattr(cupy.cuda.Stream.null, name):
            problems.append(f"the double's Stream offers '{name}'; cupy.cuda.Stream has none")
    for name in vars(fake.cuda.Device()):
        if not hasattr(RETURNS["cuda.Device"], name):
            problems.append(f"the double's Device offers '{name}'; cupy.cuda.Device has none")
    assert not problems, "\n".join(problems)


def _compare_parameters(problems: list[str], name: str, fake: Any, real: Any) -> None:
    if not callable(fake) or isinstance(fake, type) or isinstance(real, type):
        return
    accepted = surface.signature_parameters(real)
    if accepted is None:
        return
    names, varkw = accepted
    for p in inspect.signature(fake).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or varkw:
            continue
        if p.name not in names:
            problems.append(f"the double's cupy.{name} takes '{p.name}'; CuPy's takes {names}")


def test_surface_fake_cupy_check_catches_an_extra_member(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nvcomp_double.FakeCupy, "nanquantile", staticmethod(np.nanquantile), False)
    with pytest.raises(AssertionError, match=r"cupy\.nanquantile; CuPy has none"):
        test_surface_fake_cupy_offers_nothing_cupy_lacks()
    assert isinstance(nvcomp_double.FakeCupy(), types.ModuleType)
