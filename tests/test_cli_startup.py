"""What starting gpuds costs: `--version`, `--help` and `import gpuds` load no heavy module and
change no process-wide state. (How long they take is measured by scripts/bench_startup.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpuds

HEAVY = ("numpy", "zarr", "numcodecs", "PIL", "pyarrow", "h5py", "yaml", "cupy", "torch")


def _loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; return what it left in the JSON variable ``out``."""
    done = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}\nprint(json.dumps(out))"],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def _heavy() -> str:
    return f"sorted(m for m in {HEAVY!r} if m in sys.modules)"


def test_version_loads_neither_the_stages_nor_typer():
    out = _loaded_after(
        "from gpuds.cli import main\n"
        "code = main(['--version'])\n"
        f"out = {{'code': code, 'heavy': {_heavy()}, 'typer': 'typer' in sys.modules}}"
    )
    assert out == {"code": 0, "heavy": [], "typer": False}


@pytest.mark.parametrize(
    ("args", "code"), [(["--help"], 0), (["--debug", "--version"], 0), ([], 2)]
)
def test_help_and_the_overview_load_no_stage(args: list[str], code: int):
    out = _loaded_after(
        "from gpuds.cli import main\n"
        f"code = main({args!r})\n"
        f"out = {{'code': code, 'heavy': {_heavy()}}}"
    )
    assert out == {"code": code, "heavy": []}


def test_a_commands_help_builds_its_options_without_the_api():
    out = _loaded_after(
        "from gpuds.cli import main\n"
        "code = main(['env', '--help'])\n"
        "out = {'code': code, 'api': 'gpuds.api' in sys.modules}"
    )
    assert out == {"code": 0, "api": False}


def test_import_gpuds_is_light_and_leaves_the_warning_filters_alone():
    out = _loaded_after(
        "import warnings\n"
        "before = repr(warnings.filters)\n"
        "import gpuds\n"
        "same = repr(warnings.filters) == before\n"
        f"out = {{'version': gpuds.__version__, 'heavy': {_heavy()}, 'same': same}}"
    )
    assert out == {"version": gpuds.__version__, "heavy": [], "same": True}


def test_the_api_loads_on_first_use_and_keeps_its_names_over_the_stage_modules():
    out = _loaded_after(
        "import gpuds\n"
        "import gpuds.compress, gpuds.ingest, gpuds.preprocess\n"
        "out = {name: callable(getattr(gpuds, name)) for name in "
        "('compress', 'ingest', 'preprocess', 'open', 'inspect')}"
    )
    assert out == dict.fromkeys(("compress", "ingest", "preprocess", "open", "inspect"), True)


def test_every_top_level_name_is_the_api_object():
    import gpuds.api

    for name in gpuds.__all__:
        if name not in ("GpudsError", "__version__"):
            assert getattr(gpuds, name) is getattr(gpuds.api, name), name
    with pytest.raises(AttributeError, match="no attribute 'frobnicate'"):
        gpuds.frobnicate  # noqa: B018


def test_the_package_and_pyproject_agree_on_the_version():
    from gpuds._version import __version__

    pyproject = Path(__file__).parent.parent / "pyproject.toml"
    assert gpuds.__version__ == __version__
    assert f'version = "{__version__}"' in pyproject.read_text()
