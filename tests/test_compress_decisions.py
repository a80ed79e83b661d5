"""What compress decides by itself: ``--codec auto``, the default byte shuffle, level checks.

Every decision is deterministic (no timer is read) and is shown and recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuds
from gpuds.codecs.auto import MIN_RATIO, SLOWER_CLASS_GAIN, SPEED_CLASS, pick
from gpuds.codecs.base import LEVELS, CodecConfig
from gpuds.errors import ConfigError

from .conftest import only_line


def _store(tmp: Path, **fields: np.ndarray) -> Path:
    for name, values in fields.items():
        np.save(tmp / f"{name}.npy", values)
    gpuds.ingest([tmp / f"{name}.npy" for name in fields], tmp / "raw.zarr")
    return tmp / "raw.zarr"


def _counts(n: int = 20000) -> np.ndarray:
    return np.random.default_rng(1).poisson(30, size=(n, 8)).astype(np.int64)


def _noisy_floats(n: int = 4000) -> np.ndarray:
    """Standardised image-like floats: the case where byte shuffle costs (issue 11)."""
    rng = np.random.default_rng(2)
    pixels = np.clip(rng.normal(40, 12, size=(n, 12, 12, 3)), 0, 255).astype(np.uint8)
    return ((pixels - 40.0) / 12.0).astype(np.float32)


# -- --codec auto ------------------------------------------------------------------------------


def test_auto_is_reproducible_and_marks_its_pick(tmp_path: Path, cli):
    raw = _store(tmp_path, counts=_counts(4000), floats=_noisy_floats(4000))
    runs = []
    for i in range(3):
        result = cli("compress", raw, "-o", tmp_path / f"c{i}.zarr", "--codec", "auto", "--json")
        assert result.code == 0, result.err
        runs.append(result.json())
    assert json.dumps(runs[0]["auto"]) == json.dumps(runs[1]["auto"]) == json.dumps(runs[2]["auto"])
    for run in runs:
        for field, table in run["auto"].items():
            picked = [r for r in table if r["picked"]]
            assert len(picked) == 1, field
            codec = run["fields"][field]["codec"]
            assert (codec["codec"], codec["shuffle"]) == (picked[0]["name"], picked[0]["shuffle"])
            assert field in run["decisions"] and "--codec auto picked" in run["decisions"][field]


def test_auto_tries_every_documented_candidate(tmp_path: Path):
    raw = _store(tmp_path, counts=_counts(2000), small=np.arange(2000, dtype=np.uint8) % 7)
    summary = gpuds.compress(
        raw, tmp_path / "c.zarr", settings=gpuds.FieldSettings(CodecConfig("auto"))
    )
    wide = {(r["name"], r["level"], r["shuffle"]) for r in summary["auto"]["counts"]}
    assert wide == {
        ("zstd", 3, False), ("lz4", 1, False), ("gzip", 5, False),
        ("zstd", 3, True), ("lz4", 1, True), ("gzip", 5, True),
    }  # fmt: skip
    narrow = {(r["name"], r["shuffle"]) for r in summary["auto"]["small"]}
    assert narrow == {("zstd", False), ("lz4", False), ("gzip", False)}


_rows = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(sorted(SPEED_CLASS)),
            "shuffle": st.booleans(),
            "ratio": st.floats(0.5, 20, allow_nan=False),
        }
    ),
    min_size=1,
    max_size=8,
)


@given(_rows)
@settings(max_examples=300, deadline=None)
def test_the_pick_is_never_beaten_by_a_candidate_as_fast_or_faster(rows: list[dict]):  # type: ignore[type-arg]
    index = pick(rows)
    usable = [r for r in rows if r["ratio"] >= MIN_RATIO]
    if index is None:
        assert not usable
        return
    chosen = rows[index]
    assert chosen["ratio"] >= MIN_RATIO
    for other in usable:
        if SPEED_CLASS[other["name"]] <= SPEED_CLASS[chosen["name"]]:
            assert other["ratio"] <= chosen["ratio"]
        else:  # a slower candidate was passed over: it was not 10% better
            assert other["ratio"] < SLOWER_CLASS_GAIN * chosen["ratio"]
    assert pick(list(rows)) == index  # deterministic


def test_gzip_wins_only_when_clearly_better():
    rows = [
        {"name": "zstd", "shuffle": False, "ratio": 2.0},
        {"name": "gzip", "shuffle": False, "ratio": 2.1},
    ]
    assert pick(rows) == 0
    rows[1]["ratio"] = 2.2
    assert pick(rows) == 1
    rows[0]["ratio"] = 1.0  # zstd does not compress: gzip is the only usable candidate
    rows[1]["ratio"] = 1.06
    assert pick(rows) == 1


# -- the default byte shuffle -------------------------------------------------------------------


@pytest.mark.parametrize("make", [_counts, _noisy_floats])
def test_the_default_shuffle_is_within_3_percent_of_the_better_choice(tmp_path: Path, make):
    raw = _store(tmp_path, x=make())
    sizes = {}
    for label, shuffle in (("default", None), ("on", True), ("off", False)):
        settings_ = gpuds.FieldSettings(CodecConfig("zstd", None, shuffle))
        summary = gpuds.compress(raw, tmp_path / f"{label}.zarr", settings=settings_)
        sizes[label] = summary["stored_bytes"]
        if label == "default":
            decision = summary["decisions"]["x"]
            chosen = summary["fields"]["x"]["codec"]["shuffle"]
    assert sizes["default"] <= 1.03 * min(sizes["on"], sizes["off"]), sizes
    assert decision.startswith(f"byte shuffle {'on' if chosen else 'off'}: ")
    assert (sizes["on"] < sizes["off"]) == chosen  # these samples are representative
    history = gpuds.open(str(tmp_path / "default.zarr")).info["history"][-1]
    assert history["settings"]["decisions"]["x"] == decision
    chain = gpuds.inspect(str(tmp_path / "default.zarr"))["fields"][0]["codecs"]
    assert ("numcodecs.shuffle" in chain) == chosen


def test_the_default_does_not_make_the_quickstart_store_bigger(sample_store: Path, tmp_path: Path):
    prep = sample_store.parent / "prep.zarr"
    ratios = {}
    for label, shuffle in (("default", None), ("on", True), ("off", False)):
        settings_ = gpuds.FieldSettings(CodecConfig("zstd", None, shuffle))
        ratios[label] = gpuds.compress(prep, tmp_path / f"{label}.zarr", settings=settings_)[
            "stored_bytes"
        ]
    assert ratios["default"] <= 1.03 * min(ratios["on"], ratios["off"]), ratios


def test_one_byte_fields_are_never_shuffled_and_need_no_trial(tmp_path: Path):
    raw = _store(tmp_path, b=np.arange(5000, dtype=np.uint8))
    summary = gpuds.compress(raw, tmp_path / "c.zarr")
    assert summary["fields"]["b"]["codec"]["shuffle"] is False
    assert summary["decisions"] == {}


def test_the_cli_says_what_it_decided(tmp_path: Path, cli):
    raw = _store(tmp_path, counts=_counts(3000))
    result = cli("compress", raw, "-o", tmp_path / "c.zarr", "--device", "cpu")
    assert result.code == 0, result.err
    assert re.search(r"counts: byte shuffle (on|off): [\d.]+x with it, [\d.]+x without", result.out)


# -- levels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "99"], "zstd levels are -131072 to 22, got 99"),
        (["--codec", "gzip", "--level", "-1"], "gzip levels are 0 to 9, got -1"),
        (["--codec", "gzip", "--level", "10"], "gzip levels are 0 to 9, got 10"),
        (["--codec", "lz4", "--level", "0"], "lz4 accelerations are 1 to 65537, got 0"),
        (["--codec", "none", "--level", "3"], "codec none takes no level"),
        (["--codec", "auto", "--level", "3"], "codec auto takes no level"),
    ],
)
def test_levels_are_checked_before_any_work(tmp_path: Path, cli, args: list[str], message: str):
    raw = _store(tmp_path, counts=_counts(100))
    result = cli("compress", raw, "-o", tmp_path / "c.zarr", *args)
    assert result.code == 1
    assert message in only_line(result.err)
    assert not (tmp_path / "c.zarr").exists()


def test_valid_extreme_levels_round_trip(tmp_path: Path):
    values = _counts(500)
    raw = _store(tmp_path, counts=values)
    for name, (low, high) in LEVELS.items():
        for level in (low, high) if name != "zstd" else (-5, high):
            out = tmp_path / f"{name}{level}.zarr"
            gpuds.compress(raw, out, settings=gpuds.FieldSettings(CodecConfig(name, level, None)))
            got = np.concatenate(
                [b["counts"] for b in gpuds.open(str(out)).loader(100, shuffle=False, device="cpu")]
            )
            np.testing.assert_array_equal(got, values)


def test_a_config_file_with_a_bad_level_names_the_file(tmp_path: Path, cli):
    raw = _store(tmp_path, counts=_counts(100))
    config = tmp_path / "c.yaml"
    config.write_text("fields:\n  counts: {codec: gzip, level: 12}\n")
    result = cli("compress", raw, "-o", tmp_path / "c.zarr", "-c", config)
    assert result.code == 1
    line = only_line(result.err)
    assert str(config) in line and "gzip levels are 0 to 9, got 12" in line


def test_codec_config_round_trips_an_undecided_shuffle():
    config = CodecConfig("zstd", 3, None)
    assert CodecConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="shuffle"):
        CodecConfig("zstd", 3, "yes")  # type: ignore[arg-type]
