"""The canonical Keras CNN trained with model.fit straight from a gpuds store.

    python examples/train_keras.py quickstart-data/data.zarr [--epochs 3] [--batch 32]
    python examples/train_keras.py quickstart-data/data.zarr --mirrored   # every local GPU

It fits Conv2D 32/64/128 + Dense on the `images`/`labels` of the `train` split, validating on
`val` every epoch, from `gpuds.tensorflow.dataset(...)`: a tf.data.Dataset whose shapes are
known before the first batch, reshuffled every epoch, decoded by the loader's threads. The
images were standardized by `gpuds preprocess` with statistics fitted on the train split; the
store keeps them, so the model exported at the end (`--save model.keras`) standardizes raw
pixel values itself with them and names its classes from the store. With `--mirrored`, the
model trains on every local GPU with tf.distribute.MirroredStrategy: each global batch is split
between them. The loader decodes on the CPU (tf.data keeps its batches in host memory).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import gpuds
import gpuds.tensorflow as gtf


def cnn(shape: tuple[int, ...], classes: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(classes),
        ],
        name="cnn",
    )


class Report(keras.callbacks.Callback):
    """One line an epoch, as the other examples print."""

    def __init__(self, samples: int) -> None:
        super().__init__()
        self.samples = samples

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        logs = logs or {}
        rate = self.samples / (time.perf_counter() - self.start)
        print(
            f"epoch {epoch}: loss {logs['loss']:.3f}, val accuracy {logs['val_accuracy']:.2f}, "
            f"{rate:.0f} samples/s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--mirrored", action="store_true", help="train on every local GPU")
    parser.add_argument("--save", help="write the serving model (raw pixels in) here")
    parser.add_argument("--seed", type=int, default=0, help="of the weights and the shuffle")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)  # the same run twice gives the same losses

    data = gpuds.open(args.store)
    classes = data.classes["labels"]
    stats = data["train"].stats["standardize"]["images"]  # fitted on train by preprocess
    shape = data["train"].fields["images"].shape
    fields = ["images", "labels"]
    train_loader = data["train"].loader(args.batch, fields=fields, seed=args.seed, device="cpu")
    val_loader = data["val"].loader(args.batch, fields=fields, shuffle=False, device="cpu")
    train = gtf.dataset(train_loader, inputs="images", targets="labels")
    val = gtf.dataset(val_loader, inputs="images", targets="labels")

    strategy = tf.distribute.MirroredStrategy() if args.mirrored else tf.distribute.get_strategy()
    with strategy.scope():
        model = cnn(shape, len(classes))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    # gpuds shuffles every epoch itself: shuffle=False only silences Keras's note that it
    # cannot shuffle a tf.data.Dataset.
    model.fit(
        train,
        epochs=args.epochs,
        validation_data=val,
        shuffle=False,
        verbose=0,
        callbacks=[Report(len(data["train"]))],
    )

    # Serving: raw pixel values in, the store's train statistics standardize them, class
    # probabilities out. Checked on val: un-standardized images give the same predictions.
    serving = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Normalization(mean=stats["mean"], variance=np.square(stats["std"])),
            model,
            keras.layers.Softmax(),
        ],
        name="serving",
    )
    (images, labels), *_ = val.take(1)
    raw = images.numpy() * np.asarray(stats["std"]) + np.asarray(stats["mean"])
    predicted = np.argmax(serving.predict(raw, verbose=0), axis=1)
    agree = np.mean(predicted == np.argmax(model.predict(images, verbose=0), axis=1))
    names = ", ".join(
        f"{classes[p]} ({classes[t]})" for p, t in zip(predicted, labels.numpy(), strict=True)
    )
    print(f"serving model on raw pixels agrees on {agree:.0%} of a val batch: {names}")
    if args.save:
        serving.save(args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
