"""The example configs in configs/ run on the data they describe, and fit on train only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

import gpuds

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("sample")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample.py"), str(data), "--per-class", "20"],
        check=True,
        capture_output=True,
    )
    out = data / "raw.zarr"
    gpuds.ingest([data / "images", data / "meta.csv", data / "embeddings.npy"], out)
    return out


def test_image_classification_config(sample_store: Path, tmp_path: Path):
    config = gpuds.load_config(ROOT / "configs" / "image-classification.yaml")
    summary = gpuds.preprocess(sample_store, tmp_path / "p.zarr", config=config, device="cpu")
    assert summary["splits"] == {"train": 48, "val": 6, "test": 6}
    group = zarr.open_group(tmp_path / "p.zarr")
    train = group["train"]["images"][...]
    assert train.shape == (48, 28, 28, 3) and train.dtype == np.float32
    # Standardized on train: per-channel mean 0 and std 1 there, not on val/test.
    np.testing.assert_allclose(train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=(0, 1, 2)), 1, atol=1e-4)
    raw = zarr.open_group(sample_store)["images"][...]
    ids = group["train"]["labels"][...]
    assert set(ids.tolist()) == {0, 1, 2}
    # The stored statistics equal the train split's own (recomputed from the raw pixels).
    stats = {s["op"]: s["stats"] for s in group.attrs["gpuds"]["stats"]["ops"]}
    mean = np.asarray(stats["standardize"]["images"]["mean"])
    assert mean.shape == (3,) and np.all((mean > 0) & (mean < 255))
    assert raw.dtype == np.uint8


def test_tabular_config(sample_store: Path, tmp_path: Path):
    config = gpuds.load_config(ROOT / "configs" / "tabular.yaml")
    summary = gpuds.preprocess(sample_store, tmp_path / "p.zarr", config=config, device="cpu")
    source = zarr.open_group(sample_store)["source"][...]
    kept = int((source != -1).sum())
    assert summary["samples_out"] == kept
    assert sum(summary["splits"].values()) == kept
    train = zarr.open_group(tmp_path / "p.zarr")["train"]
    np.testing.assert_allclose(train["embeddings"][...].mean(axis=0), 0, atol=1e-5)


def test_scientific_config(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.arange(1, 7)
    x[::50, 2] = np.nan
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["measurements"] = x
    gpuds.ingest([tmp_path / "run.h5"], tmp_path / "raw.zarr")
    config = gpuds.load_config(ROOT / "configs" / "scientific.toml")
    summary = gpuds.preprocess(tmp_path / "raw.zarr", tmp_path / "p.zarr", config=config)
    assert summary["samples_out"] == 490
    train = zarr.open_group(tmp_path / "p.zarr")["train"]["measurements"][...]
    assert train.dtype == np.float16
    assert train.min() >= -1 and train.max() <= 1


def test_standardize_after_split_uses_train_statistics_only(tmp_path: Path):
    values = np.concatenate([np.zeros(50), np.full(50, 100.0)]).astype(np.float32)
    np.save(tmp_path / "v.npy", values)
    np.save(tmp_path / "ids.npy", np.arange(100, dtype=np.int64))
    gpuds.ingest([tmp_path / "v.npy", tmp_path / "ids.npy"], tmp_path / "raw.zarr")
    config = {
        "ops": [
            {"op": "split", "fractions": {"train": 0.5, "val": 0.5}},
            {"op": "standardize", "fields": ["v"]},
        ],
        "seed": 5,
    }
    gpuds.preprocess(tmp_path / "raw.zarr", tmp_path / "p.zarr", config=config)
    group = zarr.open_group(tmp_path / "p.zarr")
    stats = group.attrs["gpuds"]["stats"]["ops"][-1]["stats"]["v"]
    raw_train = values[group["train"]["ids"][...]].astype(np.float64)  # the op fits in float64
    assert 0 < raw_train.mean() < 100, "the split must mix both halves for the test to bite"
    assert stats["mean"][0] == pytest.approx(float(raw_train.mean()), rel=1e-9)
    assert stats["std"][0] == pytest.approx(float(raw_train.std()), rel=1e-9)
    train = group["train"]["v"][...]
    np.testing.assert_allclose([train.mean(), train.std()], [0, 1], atol=1e-6)
