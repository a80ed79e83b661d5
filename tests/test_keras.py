"""Keras 3: gpuds.keras.PyDataset on the TensorFlow, JAX and PyTorch backends, and the Keras
training example (gpuds.tensorflow.dataset with model.fit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banners
keras = pytest.importorskip("keras", reason="pip install 'gpuds[tensorflow]'")

import gpuds  # noqa: E402
from gpuds.errors import ConfigError  # noqa: E402
from gpuds.keras import PyDataset  # noqa: E402

N = 200
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("keras")
    ids = np.arange(N, dtype=np.int64)
    np.save(tmp / "ids.npy", ids)
    np.save(tmp / "x.npy", np.random.default_rng(0).normal(size=(N, 8)).astype(np.float32))
    np.save(tmp / "label.npy", (ids % 3).astype(np.uint16))  # Keras wants int labels
    gpuds.ingest([tmp / f"{n}.npy" for n in ("ids", "x", "label")], tmp / "raw.zarr")
    settings = gpuds.FieldSettings(chunk_mb=0.001)  # units of 32 samples of x
    gpuds.compress(tmp / "raw.zarr", tmp / "data.zarr", settings=settings)
    return tmp / "data.zarr"


class _Recording(PyDataset):
    """Records the ids of the batches Keras takes, one list per epoch Keras begins."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epochs: list[list[int]] = [[]]  # the first: batches taken before any epoch

    def on_epoch_begin(self) -> None:
        super().on_epoch_begin()
        self.epochs.append([])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        batch = super().__getitem__(index)
        self.epochs[-1] += np.asarray(batch[0]["ids"]).tolist()
        return batch


def _model() -> keras.Model:
    inputs = {"ids": keras.Input((), dtype="int64", name="ids"), "x": keras.Input((8,), name="x")}
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs["x"]))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_fit_on_tensorflow_takes_every_sample_once_per_epoch_in_a_new_order(store: Path):
    loader = gpuds.open(str(store)).loader(32, fields=["ids", "x", "label"], device="cpu")
    data = _Recording(loader, {"ids": "ids", "x": "x"}, "label")
    assert len(data) == 7  # 6 of 32 and one of 8
    batch = data[0]
    assert batch[1].dtype == "int32" and batch[0]["x"].shape == (32, 8)  # uint16 widened
    history = _model().fit(data, epochs=3, verbose=0)  # shuffle=True: indices ignored
    assert len(history.history["loss"]) == 3
    epochs = data.epochs[-3:]  # before them, batches Keras peeked at for the tensor specs
    assert [sorted(seen) for seen in epochs] == [list(range(N))] * 3
    assert len({tuple(seen) for seen in epochs}) == 3
    # Keras's epochs 0, 1, 2 are the loader's: the batches taken before fit did not count.
    assert loader.epoch == 2


def test_refuses_keras_workers_and_a_loader_in_mid_epoch(store: Path):
    loader = gpuds.open(str(store)).loader(32, fields=["ids", "x"], device="cpu")
    with pytest.raises(ConfigError, match="workers=1"):
        PyDataset(loader, "x", workers=2)
    with pytest.raises(ConfigError, match="does not read 'label'"):
        PyDataset(loader, "x", "label")
    next(iter(loader))
    with pytest.raises(ConfigError, match=r"middle of an epoch.*set_epoch"):
        PyDataset(loader, "x")


_OTHER_BACKEND = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np, gpuds
    from gpuds.keras import PyDataset

    class Recording(PyDataset):
        epochs = [[]]
        def on_epoch_begin(self):
            super().on_epoch_begin()
            self.epochs.append([])
        def __getitem__(self, index):
            batch = super().__getitem__(index)
            self.epochs[-1] += np.asarray(batch[0]["ids"]).tolist()
            self.types = [type(batch[0]["x"]).__module__, str(batch[1].dtype)]
            return batch

    loader = gpuds.open(sys.argv[1]).loader(32, fields=["ids", "x", "label"], device="cpu")
    data = Recording(loader, {"ids": "ids", "x": "x"}, "label")
    inputs = {"ids": keras.Input((), dtype="int64", name="ids"), "x": keras.Input((8,), name="x")}
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs["x"]))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data, epochs=2, verbose=0)
    # Keras may peek at a batch inside an epoch it then abandons: the last two are fit's.
    print(json.dumps({"backend": keras.backend.backend(), "epochs": data.epochs[-2:],
                      "types": data.types, "loss": history.history["loss"],
                      "loader_epoch": loader.epoch}))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_fit_on_other_keras_backends(store: Path, backend: str):
    pytest.importorskip(backend)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND, str(store)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["backend"] == backend
    assert [sorted(seen) for seen in result["epochs"]] == [list(range(N))] * 2
    assert result["epochs"][0] != result["epochs"][1]
    assert result["loader_epoch"] == 1  # the abandoned peek did not count
    # The backend's own arrays (by DLPack), labels widened from uint16.
    assert result["types"][0].split(".")[0] == {"jax": "jaxlib", "torch": "torch"}[backend]
    assert result["types"][1] in ("int32", "torch.int32")
    assert np.isfinite(result["loss"]).all()


@pytest.mark.parametrize("strategy", [[], ["--mirrored"]], ids=["one-device", "mirrored"])
def test_the_keras_training_example_learns(sample_store: Path, strategy: list[str]):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_keras.py"), str(sample_store),
         "--epochs", "3", "--batch", "8", *strategy],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in lines]
    assert len(losses) == 3 and losses[-1] < losses[0], done.stdout  # it learns
    assert "val accuracy" in lines[-1]
    assert "serving model on raw pixels agrees on 100%" in done.stdout
