"""The preprocess engine end to end: splits, shuffle, sample, reproducibility, memory, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import gpuds
from gpuds.backend import probe_cuda
from gpuds.ops.base import BarrierInput, Block, Spec
from gpuds.ops.shuffle import Shuffle

from .conftest import only_line, tree_hash

# Chi-square critical value for 25 degrees of freedom at p = 0.001 (tables): a uniform shuffle
# exceeds it once in a thousand runs of the test.
CHI2_25_P001 = 52.62


def _store(tmp_path: Path, n: int = 200, classes: int = 4) -> Path:
    rng = np.random.default_rng(7)
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "ids.npy", np.arange(n, dtype=np.int64))
    np.save(src / "x.npy", rng.normal(5, 2, size=(n, 3)).astype(np.float32))
    labels = (np.arange(n) % classes)[rng.permutation(n)]
    np.save(src / "labels.npy", labels.astype(np.int64))
    out = tmp_path / "raw.zarr"
    gpuds.ingest([src / "ids.npy", src / "x.npy", src / "labels.npy"], out, chunk_mb=0.001)
    return out


def _read(store: Path, split: str = "") -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r")
    node = group[split] if split else group
    return {name: arr[...] for name, arr in node.arrays()}


SPLIT_3 = {"op": "split", "fractions": {"train": 0.7, "val": 0.2, "test": 0.1}}


def test_split_puts_every_sample_in_exactly_one_split(tmp_path: Path):
    raw = _store(tmp_path, n=203)
    summary = gpuds.preprocess(raw, tmp_path / "p.zarr", config={"ops": [SPLIT_3]})
    parts = {s: _read(tmp_path / "p.zarr", s) for s in ("train", "val", "test")}
    ids = np.concatenate([p["ids"] for p in parts.values()])
    assert sorted(ids.tolist()) == list(range(203))
    # floor(203 * f) = 142, 40, 20 and the one left over goes to the largest remainder (val).
    assert summary["splits"] == {"train": 142, "val": 41, "test": 20}
    originals = _read(raw)
    for p in parts.values():
        np.testing.assert_array_equal(p["x"], originals["x"][p["ids"]])
        np.testing.assert_array_equal(p["labels"], originals["labels"][p["ids"]])
        assert (np.diff(p["ids"]) > 0).all(), "without shuffle, samples keep their order"
    info = zarr.open_group(tmp_path / "p.zarr").attrs["gpuds"]
    assert info["splits"] == ["train", "val", "test"] and info["num_samples"] == 203


def test_stratified_split_keeps_class_shares_within_one(tmp_path: Path):
    raw = _store(tmp_path, n=400, classes=4)
    config = {"ops": [{**SPLIT_3, "stratify": "labels"}], "seed": 3}
    gpuds.preprocess(raw, tmp_path / "p.zarr", config=config)
    fractions = SPLIT_3["fractions"]
    for split, frac in fractions.items():
        counts = np.bincount(_read(tmp_path / "p.zarr", split)["labels"], minlength=4)
        assert np.all(np.abs(counts - 100 * frac) <= 1), (split, counts)


def test_same_seed_same_output_other_seed_differs(tmp_path: Path):
    raw = _store(tmp_path)
    config = {"ops": [{"op": "shuffle"}, SPLIT_3], "seed": 11}
    gpuds.preprocess(raw, tmp_path / "a.zarr", config=config)
    gpuds.preprocess(raw, tmp_path / "b.zarr", config=config)
    gpuds.preprocess(raw, tmp_path / "c.zarr", config={**config, "seed": 12})
    info = {k: zarr.open_group(tmp_path / f"{k}.zarr").attrs["gpuds"] for k in "abc"}
    assert info["a"]["fingerprint"] == info["b"]["fingerprint"] != info["c"]["fingerprint"]
    for split in ("train", "val", "test"):
        a, b = _read(tmp_path / "a.zarr", split), _read(tmp_path / "b.zarr", split)
        for name in a:
            assert a[name].tobytes() == b[name].tobytes()


def test_shuffle_is_a_permutation_and_not_the_identity(tmp_path: Path):
    raw = _store(tmp_path)
    # 200 samples of 44 bytes (fields, index, permutation) in 3/4 of 10 KiB: two buckets.
    config = {"ops": [{"op": "shuffle"}], "seed": 0, "memory_mb": 0.01, "chunk_mb": 0.0002}
    gpuds.preprocess(raw, tmp_path / "p.zarr", config=config)
    out, original = _read(tmp_path / "p.zarr"), _read(raw)
    assert sorted(out["ids"].tolist()) == list(range(200))
    assert not np.array_equal(out["ids"], np.arange(200))
    np.testing.assert_array_equal(out["x"], original["x"][out["ids"]])
    np.testing.assert_array_equal(out["labels"], original["labels"][out["ids"]])
    buckets = zarr.open_group(tmp_path / "p.zarr").attrs["gpuds"]["stats"]["ops"][0]["stats"]
    assert buckets["buckets"] > 1, "the test must exercise the out-of-core path"
    assert not any((tmp_path / "p.zarr").rglob("bucket-*")), "scratch buckets are removed"


def _shuffle_positions(tmp_path: Path, n: int, seed: int, memory: int) -> np.ndarray:
    op = Shuffle({"op": "shuffle", "seed": seed})
    spec = {"v": Spec(np.dtype(np.int64), ())}
    blocks = iter([Block({"v": np.arange(n)}, np.arange(n))])
    at = BarrierInput(tmp_path / f"w{seed}", samples=n, memory_bytes=memory, has_split=False)
    shuffled = op.materialize(blocks, spec, at)
    assert op.buckets == 3, "the test must exercise several buckets"
    return np.concatenate([b.fields["v"] for b in shuffled.blocks(4)])


def test_shuffle_positions_are_uniform_over_seeds(tmp_path: Path):
    n, runs = 6, 1200
    counts = np.zeros((n, n))
    for seed in range(runs):
        # 24 bytes a sample (value, input index, permutation): 384 bytes give 3 buckets.
        order = _shuffle_positions(tmp_path, n, seed, memory=384)
        counts[order, np.arange(n)] += 1  # counts[value, position]
    expected = runs / n
    # Positions of one value are a multinomial; use the 5 free cells of each of 5 free rows.
    chi2 = (((counts - expected) ** 2) / expected)[:5, :5].sum()
    assert chi2 < CHI2_25_P001, counts
    assert counts.min() > 0


def test_sample_keeps_exact_count_in_order(tmp_path: Path):
    raw = _store(tmp_path)
    config = {"ops": [{"op": "sample", "count": 37, "stratify": "labels"}]}
    summary = gpuds.preprocess(raw, tmp_path / "p.zarr", config=config)
    out = _read(tmp_path / "p.zarr")
    assert len(out["ids"]) == 37 and summary["ops"][0] == {
        "op": "sample",
        "kept": 37,
        "dropped": 163,
    }
    assert (np.diff(out["ids"]) > 0).all() and len(set(out["ids"].tolist())) == 37
    counts = np.bincount(out["labels"], minlength=4)
    assert np.all(np.abs(counts - 37 / 4) <= 1)


def test_cli_shortcuts_and_json(cli, tmp_path: Path):
    raw = _store(tmp_path)
    before = tree_hash(raw)
    result = cli(
        "preprocess", raw, "-o", tmp_path / "p.zarr", "--shuffle", "--split", "0.5,0.5",
        "--stratify", "labels", "--seed", "4", "--json", "--device", "cpu",
    )  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["splits"] == {"train": 100, "val": 100} and summary["device"] == "cpu"
    assert tree_hash(raw) == before
    report = gpuds.inspect(str(tmp_path / "p.zarr"), verify=True)
    assert report["problems"] == [] and report["splits"] == ["train", "val"]
    step = report["history"][-1]
    assert step["stage"] == "preprocess" and step["settings"]["seed"] == 4
    assert step["input"]["fingerprint"] == gpuds.inspect(str(raw))["fingerprint"]


def test_print_config_round_trips_through_a_file(cli, tmp_path: Path):
    raw = _store(tmp_path)
    printed = cli(
        "preprocess", raw, "-o", tmp_path / "p.zarr", "--split", "0.9,0.1", "--print-config"
    )
    assert printed.code == 0 and not (tmp_path / "p.zarr").exists()
    (tmp_path / "c.yaml").write_text(printed.out)
    result = cli("preprocess", raw, "-o", tmp_path / "p.zarr", "-c", tmp_path / "c.yaml", "-q")
    assert result.code == 0, result.err
    assert zarr.open_group(tmp_path / "p.zarr").attrs["gpuds"]["split_sizes"] == {
        "train": 180,
        "val": 20,
    }


def test_toml_config(cli, tmp_path: Path):
    raw = _store(tmp_path)
    (tmp_path / "c.toml").write_text(
        'seed = 1\n[[ops]]\nop = "sample"\nfraction = 0.25\n[[ops]]\nop = "shuffle"\n'
    )
    result = cli("preprocess", raw, "-o", tmp_path / "p.zarr", "-c", tmp_path / "c.toml", "--json")
    assert result.code == 0, result.err
    assert result.json()["samples_out"] == 50


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("ops: [{op: frobnicate}]", "unknown op 'frobnicate'; valid: cast"),
        ("ops: [{op: shuffle, speed: 3}]", "unknown key(s) speed; valid: seed"),
        ("ops: [{op: shuffle, memory_mb: 64}]", "'memory_mb' is a key of the config itself"),
        ("memory_mb: 0\nops: [{op: shuffle}]", "'memory_mb' must be a positive number, got 0"),
        (
            "memory_mb: 16\nblock_mb: 4\nops: [{op: shuffle}]",
            "'block_mb' 4 is more than memory_mb / 8 = 2 (a pass holds several blocks at once); "
            "lower block_mb or raise memory_mb to 32",
        ),
        # Three fields of 256-sample chunks (2 + 3 + 2 KiB) do not fit a quarter of 10 KiB.
        (
            "memory_mb: 0.01\nops: [{op: shuffle}]",
            "the output's write buffers (one chunk per field and split: 3 fields x 1 split(s)) "
            "take 0.00684 MiB, more than memory_mb / 4 = 0.0025 MiB; raise memory_mb to 0.0273",
        ),
        ("opz: []", "unknown key(s) opz; valid: seed"),
        ("ops: []", "'ops' must be a non-empty list"),
        ("ops: [{op: split, fractions: [0.5, 0.6]}]", "fractions must sum to 1"),
        ("ops: [{op: split, fractions: [0.5, 0.5], stratify: nope}]", "no field(s) 'nope'"),
        ("ops: [{op: split, fractions: [0.5, 0.5], stratify: x}]", "one integer class"),
        ("ops: [{op: sample, count: 1000}]", "asks for 1000 samples but only 200"),
        (
            "ops: [{op: split, fractions: [.5, .5]}, {op: split, fractions: [.5, .5]}]",
            "ops[1]: only one op may assign splits ('split' already does)",
        ),
        ("ops: [{op: shuffle}\n  - bad", "invalid YAML"),
        ("seed: -1\nops: [{op: shuffle}]", "'seed' must be an integer >= 0"),
    ],
)
def test_bad_configs_fail_cleanly(cli, tmp_path: Path, config_text: str, message: str):
    raw = _store(tmp_path)
    before = tree_hash(raw)
    (tmp_path / "c.yaml").write_text(config_text)
    result = cli(
        "preprocess", raw, "-o", tmp_path / "p.zarr", "-c", tmp_path / "c.yaml", "--device", "cpu"
    )
    assert result.code == 1
    line = only_line(result.err)
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "p.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert tree_hash(raw) == before


def test_usage_problems(cli, tmp_path: Path):
    raw = _store(tmp_path)
    nothing = cli("preprocess", raw, "-o", tmp_path / "p.zarr")
    assert nothing.code == 1 and "nothing to do" in only_line(nothing.err)
    (tmp_path / "c.yaml").write_text("ops: [{op: shuffle}]")
    both = cli("preprocess", raw, "-o", tmp_path / "p.zarr", "-c", tmp_path / "c.yaml", "--shuffle")
    assert both.code == 1 and "either --config or shortcut" in only_line(both.err)
    bad = cli("preprocess", raw, "-o", tmp_path / "p.zarr", "--split", "a,b")
    assert bad.code == 1 and "--split" in only_line(bad.err)


def test_split_store_input_is_refused(tmp_path: Path, cli):
    raw = _store(tmp_path)
    gpuds.preprocess(raw, tmp_path / "p.zarr", config={"ops": [SPLIT_3]})
    result = cli("preprocess", tmp_path / "p.zarr", "-o", tmp_path / "q.zarr", "--shuffle")
    assert result.code == 1 and "already split" in only_line(result.err)


def test_incomplete_input_is_refused(tmp_path: Path, cli):
    raw = _store(tmp_path)
    group = zarr.open_group(raw, mode="r+")
    info = dict(group.attrs["gpuds"])
    info["complete"] = False
    group.attrs["gpuds"] = info
    result = cli("preprocess", raw, "-o", tmp_path / "q.zarr", "--shuffle")
    assert result.code == 1 and "incomplete store" in only_line(result.err)


def test_summary_is_json_safe(tmp_path: Path):
    raw = _store(tmp_path)
    summary = gpuds.preprocess(raw, tmp_path / "p.zarr", config={"ops": [{"op": "shuffle"}]})
    json.dumps(summary)


@pytest.mark.gpu
def test_cuda_and_cpu_give_the_same_store(tmp_path: Path):
    cp, reason, _ = probe_cuda()
    if cp is None:
        pytest.skip(f"no usable GPU: {reason}")
    raw = _store(tmp_path)
    config = {"ops": [{"op": "shuffle"}, SPLIT_3]}
    gpuds.preprocess(raw, tmp_path / "cpu.zarr", config=config, device="cpu")
    gpuds.preprocess(raw, tmp_path / "gpu.zarr", config=config, device="cuda")
    fingerprints = [
        zarr.open_group(tmp_path / f"{d}.zarr").attrs["gpuds"]["fingerprint"]
        for d in ("cpu", "gpu")
    ]
    assert fingerprints[0] == fingerprints[1]
