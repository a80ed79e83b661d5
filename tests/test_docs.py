"""The docs' option tables say what the code does: a parameter, config key or op added or renamed
in the code without its row (or the reverse) fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gpuds.config import PipelineConfig
from gpuds.loader import Loader
from gpuds.ops import registry

DOCS = Path(__file__).parent.parent / "docs"


def _first_cells(page: str, heading: str) -> list[str]:
    """The backquoted names in the first column of the first table after ``heading``."""
    text = (DOCS / page).read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("| `"):
            rows.append(line.split("|")[1])
    return [name for cell in rows for name in re.findall(r"`([a-z_]+)`", cell)]


def test_loader_parameters_table_matches_the_signature():
    documented = _first_cells("loader.md", "## Parameters")
    parameters = [p for p in inspect.signature(Loader.__init__).parameters if p != "self"]
    assert sorted(documented) == sorted(p for p in parameters if p != "dataset")


def test_preprocess_config_keys_table_matches_the_config():
    documented = _first_cells("preprocess.md", "| key |")
    valid = set(PipelineConfig.from_dict({"ops": [{"op": "shuffle"}]}).to_dict())
    assert sorted(documented) == sorted(valid)


@pytest.mark.parametrize("page", ["preprocess.md"])
def test_ops_table_lists_every_registered_op(page: str):
    documented = _first_cells(page, "| op |")
    assert sorted(documented) == sorted(registry())
