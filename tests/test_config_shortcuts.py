"""The preprocess shortcuts (--split, --cast, ...) as configs, and how a run's config resolves."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuds.config import Shortcuts, parse_names, pipeline_config
from gpuds.errors import ConfigError


def test_every_shortcut_in_the_documented_order():
    shortcuts = Shortcuts(
        shuffle=True,
        split="0.8,0.1,0.1",
        stratify="labels",
        cast=("images=float32", "a,b=int16"),
        standardize="images",
        normalize="x, y",
        drop_invalid="",
    )
    assert shortcuts.ops() == [
        {"op": "drop_invalid"},
        {"op": "shuffle"},
        {"op": "split", "fractions": [0.8, 0.1, 0.1], "stratify": "labels"},
        {"op": "cast", "fields": ["images"], "dtype": "float32"},
        {"op": "cast", "fields": ["a", "b"], "dtype": "int16"},
        {"op": "standardize", "fields": ["images"], "per": "channel"},
        {"op": "normalize", "fields": ["x", "y"], "per": "channel"},
    ]


def test_no_shortcut_is_no_op():
    assert Shortcuts().ops() == []
    assert Shortcuts(drop_invalid="x").ops() == [{"op": "drop_invalid", "fields": ["x"]}]


@pytest.mark.parametrize(
    ("shortcuts", "message"),
    [
        (Shortcuts(split="a,b"), "--split: expected fractions like 0.8,0.1,0.1, got 'a,b'"),
        (Shortcuts(stratify="labels"), "--stratify needs --split"),
        (Shortcuts(cast=("images",)), "--cast: expected FIELD=DTYPE"),
        (Shortcuts(cast=("=float32",)), "--cast: expected FIELD=DTYPE"),
    ],
)
def test_bad_shortcuts_name_the_option(shortcuts: Shortcuts, message: str):
    with pytest.raises(ConfigError, match=message):
        shortcuts.ops()


def test_shortcuts_resolve_with_the_seed_and_memory():
    pipeline = pipeline_config(shortcuts=Shortcuts(shuffle=True), seed=5, memory_mb=64)
    assert (pipeline.seed, pipeline.memory_mb, pipeline.block_mb) == (5, 64.0, 8.0)
    assert pipeline.ops == [{"op": "shuffle"}]
    assert pipeline_config(shortcuts=Shortcuts(shuffle=True)).seed == 0


def test_a_file_resolves_with_the_seed_overriding_its_own(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 3\nops:\n  - {op: shuffle}\n")
    assert pipeline_config(path).seed == 3
    assert pipeline_config(path, seed=9).seed == 9


def test_a_file_and_shortcuts_or_neither_are_refused(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("ops:\n  - {op: shuffle}\n")
    with pytest.raises(ConfigError, match="either --config or shortcut options"):
        pipeline_config(path, Shortcuts(shuffle=True))
    with pytest.raises(ConfigError, match="nothing to do"):
        pipeline_config()


def test_names_are_split_on_commas_and_trimmed():
    assert parse_names(" a, b ,,c ") == ["a", "b", "c"]
    assert parse_names(",") == []
