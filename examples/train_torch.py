"""A small, complete PyTorch training loop on a gpuds store: CPU here, a GPU unchanged.

    python examples/train_torch.py quickstart-data/data.zarr [--epochs 3] [--batch 32]

It trains a small CNN on the `images`/`labels` of the `train` split and reports accuracy on `val`.
Batches come from `gpuds.torch.GpudsIterableDataset`: shuffled per epoch, split across DDP ranks
and DataLoader workers, already decoded (on the GPU with nvCOMP when `--device cuda`) and handed
to torch without a copy. Under torchrun it picks up RANK/WORLD_SIZE by itself.
The images are stored as (N, H, W, C) float32 (standardized by `gpuds preprocess`); the model
wants (N, C, H, W).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import gpuds
from gpuds.torch import GpudsIterableDataset


def model_for(channels: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args()

    data = gpuds.open(args.store)
    classes = data.classes["labels"]
    channels = data["train"].fields["images"].shape[-1]
    device = (
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    train = GpudsIterableDataset(
        args.store, split="train", batch_size=args.batch, fields=["images", "labels"],
        device=device, seed=0,
    )  # fmt: skip
    val = GpudsIterableDataset(
        args.store, split="val", batch_size=args.batch, fields=["images", "labels"],
        device=device, shuffle=False, drop_last=False, rank=0, world_size=1,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(train, batch_size=None, num_workers=args.workers)
    model = model_for(channels, len(classes)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        model.train()
        start, seen, total_loss = time.perf_counter(), 0, 0.0
        for batch in loader:
            images = batch["images"].permute(0, 3, 1, 2)  # NHWC -> NCHW, a view
            labels = batch["labels"]
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            seen += len(labels)
            total_loss += loss.item() * len(labels)
        model.eval()
        correct = count = 0
        with torch.no_grad():
            for batch in val:
                predicted = model(batch["images"].permute(0, 3, 1, 2)).argmax(dim=1)
                correct += int((predicted == batch["labels"]).sum())
                count += len(batch["labels"])
        seconds = time.perf_counter() - start
        print(
            f"epoch {epoch}: loss {total_loss / max(seen, 1):.3f}, val accuracy "
            f"{correct / max(count, 1):.2f} ({count} samples), {seen / seconds:.0f} samples/s"
        )


if __name__ == "__main__":
    main()
