"""A small, complete JAX training loop on a gpuds store: CPU here, a GPU unchanged.

    python examples/train_jax.py quickstart-data/data.zarr [--epochs 3] [--batch 32]

It trains a softmax classifier (one dense layer on the flattened images, plain gradient descent)
on the `images`/`labels` of the `train` split and reports accuracy on `val`. Batches come from
`gpuds.jax`: shuffled per epoch, this JAX process's share of the data (`jax.process_index()` of
`jax.process_count()`), decoded by the loader (on the GPU with nvCOMP when CuPy and a GPU are
there) and handed to JAX by DLPack. The images are stored as (N, H, W, C) float32, standardized
by `gpuds preprocess`.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import jax
import jax.numpy as jnp

import gpuds
import gpuds.jax as gjax


def loss_fn(params: dict[str, jax.Array], images: jax.Array, labels: jax.Array) -> jax.Array:
    logits = images.reshape(len(images), -1) @ params["w"] + params["b"]
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
    return -jnp.mean(picked)


@jax.jit
def step(
    params: dict[str, jax.Array], images: jax.Array, labels: jax.Array, lr: float
) -> tuple[dict[str, jax.Array], jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss


@jax.jit
def predict(params: dict[str, jax.Array], images: jax.Array) -> jax.Array:
    return jnp.argmax(images.reshape(len(images), -1) @ params["w"] + params["b"], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    data = gpuds.open(args.store)
    classes = data.classes["labels"]
    features = math.prod(data["train"].fields["images"].shape)
    key = jax.random.PRNGKey(0)
    params: dict[str, Any] = {
        "w": 0.01 * jax.random.normal(key, (features, len(classes))),
        "b": jnp.zeros(len(classes)),
    }
    fields = ["images", "labels"]
    train = gjax.loader(data["train"], args.batch, fields=fields, device=args.device, seed=0)
    val = data["val"].loader(
        args.batch, fields=fields, device=args.device, shuffle=False, drop_last=False,
        rank=0, world_size=1,
    )  # fmt: skip
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        start, seen, total_loss = time.perf_counter(), 0, 0.0
        for batch in gjax.batches(train):
            params, loss = step(params, batch["images"], batch["labels"], args.lr)
            seen += len(batch["labels"])
            total_loss += float(loss) * len(batch["labels"])
        correct = count = 0
        for batch in gjax.batches(val):
            correct += int((predict(params, batch["images"]) == batch["labels"]).sum())
            count += len(batch["labels"])
        seconds = time.perf_counter() - start
        print(
            f"epoch {epoch}: loss {total_loss / max(seen, 1):.3f}, val accuracy "
            f"{correct / max(count, 1):.2f} ({count} samples), {seen / seconds:.0f} samples/s"
        )


if __name__ == "__main__":
    main()
