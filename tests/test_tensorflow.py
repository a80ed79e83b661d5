"""TensorFlow adapters on the CPU build of TensorFlow: element_spec, copies, epochs through
model.fit, resume, tf.distribute shares, dtypes, an empty split."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banners
tf = pytest.importorskip("tensorflow", reason="pip install 'gpuds[tensorflow]'")

# Two logical CPUs for MirroredStrategy. TensorFlow takes this only before its runtime starts,
# so it runs when pytest imports this module, before any test of the session runs.
try:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
    )
    TWO_CPUS = ""
except RuntimeError as e:  # the runtime had started (this module imported late)
    TWO_CPUS = f"TensorFlow started before this module set up two logical CPUs: {e}"

import keras  # noqa: E402

import gpuds  # noqa: E402
import gpuds.tensorflow as gtf  # noqa: E402
from gpuds.errors import ConfigError  # noqa: E402

N = 256


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tensorflow")
    ids = np.arange(N, dtype=np.int64)
    fields = {
        "ids": ids,
        "x": np.random.default_rng(0).normal(size=(N, 16)).astype(np.float32),  # 64 bytes
        "label": (ids % 4).astype(np.int64),
        "u16": (65535 - ids).astype(np.uint16),  # 65535 does not fit in int16
        "big": ids.astype(np.uint64) << np.uint64(56),  # 2**63 and more from id 128 on
    }
    for name, values in fields.items():
        np.save(tmp / f"{name}.npy", values)
    paths = [tmp / f"{name}.npy" for name in fields]
    gpuds.ingest(paths, tmp / "raw.zarr", chunk_mb=0.002)
    # 2 KiB chunks: units of 32 samples of x, so an epoch spans several windows.
    settings = gpuds.FieldSettings(chunk_mb=0.002)
    gpuds.compress(tmp / "raw.zarr", tmp / "data.zarr", settings=settings)
    return tmp / "data.zarr"


def _loader(store: Path, batch_size: int = 16, **options: Any) -> gpuds.Loader:
    options.setdefault("fields", ["ids", "x", "label"])
    return gpuds.open(str(store)).loader(batch_size, device="cpu", **options)


def _ids(data: tf.data.Dataset) -> list[int]:
    return [int(i) for (inputs, *_) in data for i in inputs["ids"]]


def test_element_spec_is_exact_before_the_first_batch(store: Path):
    loader = _loader(store, fields=["ids", "x", "label", "u16"])
    data = gtf.dataset(loader, inputs={"ids": "ids", "x": "x"}, targets="label")
    assert data.element_spec == (
        {
            "ids": tf.TensorSpec((None,), tf.int64),
            "x": tf.TensorSpec((None, 16), tf.float32),
        },
        tf.TensorSpec((None,), tf.int64),
    )
    assert data.cardinality() == len(loader) == N // 16
    full = gtf.dataset(_loader(store, 10, drop_last=True, fields=["x", "u16"]), ("x", "u16"))
    assert full.element_spec == (
        (tf.TensorSpec((10, 16), tf.float32), tf.TensorSpec((10,), tf.int32)),
    )
    x, u16 = next(iter(full))[0]
    assert x.shape == (10, 16) and u16.dtype == tf.int32
    with pytest.raises(ConfigError, match=r"does not read 'big'.*fields=\["):
        gtf.dataset(loader, "x", "big")
    with pytest.raises(ConfigError, match="Expected targets to be a field name"):
        gtf.dataset(loader, "x", targets=3)  # type: ignore[arg-type]


def test_batches_enter_tensorflow_without_a_copy(store: Path):
    batch = next(iter(_loader(store, 16, shuffle=False)))
    tensors = gtf.to_tensorflow(batch)
    batch["x"][0, 0] = 123.0  # the tensor sees it: the same memory
    assert float(tensors["x"][0, 0]) == 123.0
    # Through tf.data: windows of 2 units (64 samples) hold 4 batches of 16 samples of 64 bytes;
    # the batches of a window come out of TensorFlow back to back in the window's memory.
    loader = _loader(store, 16, fields=["x"], shuffle_window=2)
    pointers = []
    for (x,) in gtf.dataset(loader, "x"):
        array = np.asarray(x)  # the tensor's memory (Tensor.numpy() would return a copy)
        pointers.append((array.ctypes.data, array.nbytes))
    assert all(address % 64 == 0 for address, _ in pointers)
    adjacent = sum(a + n == b for (a, n), (b, _) in itertools.pairwise(pointers))
    assert adjacent >= 12  # 16 batches in 4 windows; a copy would give ~0
    # Batches of 3 int64 start off the 64-byte boundary: copied (TensorFlow would abort the
    # process on a misaligned tensor), values intact.
    loader = _loader(store, 3, fields=["ids"], shuffle=False)
    for i, batch in zip(range(5), loader, strict=False):
        assert gtf.to_tensorflow(batch)["ids"].numpy().tolist() == list(range(3 * i, 3 * i + 3))
    fresh = _loader(store, 3, fields=["ids"], shuffle=False)
    assert _ids(gtf.dataset(fresh, {"ids": "ids"})) == list(range(N))


@pytest.mark.parametrize(
    ("batch_size", "options"),
    [
        (16, {"shuffle_window": 1}),  # whole runs of two batches a window
        (24, {"shuffle_window": 2}),  # batches across windows
        (24, {"drop_last": True}),
        (50, {"rank": 1, "world_size": 3, "remainder": "pad"}),  # the stream wraps around
    ],
)
def test_the_dataset_delivers_the_loaders_batches(store: Path, batch_size: int, options: Any):
    reference = _at_epoch(store, batch_size, 1, **options)
    loader = _loader(store, batch_size, seed=5, **options)
    data = gtf.dataset(loader, ("ids", "x"), "label")
    assert data.cardinality() == len(loader) == len(reference)
    _ = list(data)  # epoch 0
    for ((ids, x), label), batch in zip(data, reference, strict=True):  # epoch 1
        assert ids.numpy().tolist() == batch["ids"].tolist()
        np.testing.assert_array_equal(x.numpy(), batch["x"])
        np.testing.assert_array_equal(label.numpy(), batch["label"])


class _Recorder(keras.Model):
    """Records the ids of every batch it trains on (eagerly), one list per epoch."""

    def __init__(self) -> None:
        super().__init__(name="recorder")  # a scope name may not start with "_"
        self.dense = keras.layers.Dense(4)
        self.epochs: list[list[int]] = []

    def call(self, inputs: dict[str, Any]) -> Any:
        return self.dense(inputs["x"])

    def train_step(self, data: Any) -> Any:
        self.epochs[-1] += data[0]["ids"].numpy().tolist()
        return super().train_step(data)


class _NewEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.model.epochs.append([])


def test_model_fit_sees_every_sample_once_per_epoch_reshuffled(store: Path):
    loader = _loader(store, 24, seed=5)  # 10 full batches and one of 16
    model = _Recorder()
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
    )
    train = gtf.dataset(loader, inputs={"ids": "ids", "x": "x"}, targets="label")
    history = model.fit(train, epochs=3, verbose=0, shuffle=False, callbacks=[_NewEpoch()])
    assert len(history.history["loss"]) == 3
    for seen in model.epochs:
        assert sorted(seen) == list(range(N))
    assert len({tuple(seen) for seen in model.epochs}) == 3  # a new order every epoch
    assert model.epochs[1] == [int(i) for b in _at_epoch(store, 24, 1) for i in b["ids"]]


def _at_epoch(store: Path, batch_size: int, epoch: int, **options: Any) -> list[dict[str, Any]]:
    loader = _loader(store, batch_size, seed=5, **options)
    loader.set_epoch(epoch)
    return list(loader)


def test_resume_and_epochs_moved_by_hand(store: Path):
    # Windows of one unit (32 samples), so that a pass is read in many runs.
    expected = [b["ids"].tolist() for b in _at_epoch(store, 24, 0, shuffle_window=1)]
    following = [b["ids"].tolist() for b in _at_epoch(store, 24, 1, shuffle_window=1)]
    state = {**_loader(store, 24, seed=5, shuffle_window=1).state_dict(), "position": 4 * 24}
    resumed = _loader(store, 24, seed=5, shuffle_window=1)
    resumed.load_state_dict(state)  # 4 batches of epoch 0 were used
    data = gtf.dataset(resumed, {"ids": "ids"})
    assert data.cardinality() == tf.data.UNKNOWN_CARDINALITY  # the first pass is shorter
    assert [b[0]["ids"].numpy().tolist() for b in data] == expected[4:]
    assert [b[0]["ids"].numpy().tolist() for b in data] == following  # then epoch 1
    # A pass abandoned before TensorFlow read all its batches is delivered again. (tf.data
    # reads ahead of its consumer by default: without that, it reads just what take(2) needs.)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    epoch_2 = [i for b in _at_epoch(store, 24, 2, shuffle_window=1) for i in b["ids"].tolist()]
    assert _ids(data.with_options(options).take(2)) == epoch_2[:48]
    assert resumed.epoch == 2
    assert _ids(data) == epoch_2
    resumed.set_epoch(7)  # moved by hand (e.g. before fit(initial_epoch=7)): taken as it is
    assert _ids(data) == [i for b in _at_epoch(store, 24, 7, shuffle_window=1) for i in b["ids"]]


@pytest.mark.skipif(bool(TWO_CPUS), reason=TWO_CPUS)
def test_distributed_pipelines_and_replicas_take_disjoint_shares(store: Path):
    data = gpuds.open(str(store))
    inputs = {"ids": "ids", "x": "x"}
    make = gtf.dataset_fn(data, 20, inputs=inputs, targets="label", seed=1, device="cpu")
    # Two input pipelines (two workers of MultiWorkerMirroredStrategy), two replicas in all.
    shares = []
    for pipeline in (0, 1):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        batches = [b[0]["ids"].numpy() for b in make(context)]
        assert {len(b) for b in batches[:-1]} == {10}  # the global 20 over 2 replicas
        shares.append(np.concatenate(batches))
    assert len(shares[0]) == len(shares[1]) == N // 2
    assert sorted(np.concatenate(shares).tolist()) == list(range(N))
    with pytest.raises(ConfigError, match="sets rank"):
        gtf.dataset_fn(data, 20, inputs="x", rank=0)
    # MirroredStrategy on the two logical CPUs, the way docs/tensorflow.md shows: Keras splits
    # each global batch of the plain dataset between the replicas.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _Recorder()
        model.compile(
            "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
        )
    train = gtf.dataset(_loader(store, 20, seed=1), inputs, "label")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train, epochs=2, verbose=0, shuffle=False, callbacks=[_NewEpoch()])
    assert [sorted(seen) for seen in model.epochs] == [list(range(N))] * 2
    assert model.epochs[0] != model.epochs[1]
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    for per_replica in (
        strategy.experimental_distribute_dataset(train),  # a custom loop, the same split
        strategy.distribute_datasets_from_function(make),  # one pipeline feeds both replicas
    ):
        seen = []
        for batch, _ in per_replica:
            for ids in strategy.experimental_local_results(batch["ids"]):
                assert len(ids) <= 10
                seen += ids.numpy().tolist()
        assert sorted(seen) == list(range(N))


def test_unsigned_fields_are_widened_and_never_wrapped(store: Path):
    loader = _loader(store, 64, fields=["ids", "u16", "big"], shuffle=False)
    data = gtf.dataset(loader, "u16", targets="ids")
    assert data.element_spec[0] == tf.TensorSpec((None,), tf.int32)
    values = np.concatenate([u16.numpy() for u16, _ in data])
    assert values.dtype == np.int32 and values.tolist() == (65535 - np.arange(N)).tolist()
    batches = list(_loader(store, 64, fields=["big"], shuffle=False))
    small = gtf.to_tensorflow(batches[1])["big"]  # ids 64..127: below 2**63, the same memory
    assert small.dtype == tf.int64 and small.numpy().tolist() == batches[1]["big"].tolist()
    with pytest.raises(ConfigError, match=r"field 'big' is uint64 with values of 2\*\*63"):
        gtf.to_tensorflow(batches[2])  # ids 128..191: int64 would wrap them
    with pytest.raises(tf.errors.OpError, match="field 'big' is uint64"):
        list(gtf.dataset(_loader(store, 64, fields=["big"], shuffle=False), "big"))


def test_an_empty_split_is_an_error_before_tensorflow_sees_it(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.arange(2, dtype=np.float32))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "raw.zarr")
    config = {"ops": [{"op": "split", "fractions": {"train": 0.5, "val": 0.5, "test": 0.0}}]}
    gpuds.preprocess(tmp_path / "raw.zarr", tmp_path / "split.zarr", config=config)
    test = gpuds.open(str(tmp_path / "split.zarr"))["test"]
    with pytest.raises(ConfigError, match="split 'test': an epoch would deliver no batch"):
        gtf.dataset(test.loader(4, device="cpu"), "x")
    make = gtf.dataset_fn(test, 4, inputs="x", device="cpu")
    with pytest.raises(ConfigError, match="split 'test'"):
        tf.distribute.get_strategy().distribute_datasets_from_function(make)
