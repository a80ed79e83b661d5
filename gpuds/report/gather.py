"""What a dataset card shows, gathered from a store: :func:`gather` returns a :class:`Card`.

The store is described by :func:`gpuds.inspect <gpuds.inspection.inspect_store>` (the numbers of
the header, the fields and the compression) and read through :func:`gpuds.open
<gpuds.dataset.open_dataset>` and the chunk service (statistics, samples, first rows), in
bounded memory (:mod:`gpuds.report.scan`). ``bench=True`` adds decode rates measured by the code
of ``gpuds bench`` (:func:`gpuds.bench.store.store_rows`, per field, and the memory copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuds.chunks import FieldChunks, field_label
from gpuds.dataset import Dataset, open_dataset
from gpuds.inspection import inspect_store
from gpuds.progress import Progress
from gpuds.report.samples import (
    DisplayStep,
    cell_text,
    display_steps,
    pick_samples,
    read_samples,
    row_png,
    to_pixels,
)
from gpuds.report.scan import Scan, choose_chunks, scan_fields
from gpuds.store import FIELD_ATTR, utc_now

__all__ = ["FIRST_ROWS", "MAX_CLASSES", "Card", "Grid", "gather"]

MAX_CLASSES = 24
"""Classes an image grid shows at most (the first ones, by class index)."""
FIRST_ROWS = 8
"""Rows of the other fields' table."""
_KIND_ORDER = ("image", "label", "numeric", "category", "array", "mask")


@dataclass
class Grid:
    """The samples shown of one image field: per row its label and PNG, and how chosen."""

    field: str
    split: str
    rows: list[tuple[str, bytes]]
    how: str
    chosen: str
    steps: list[DisplayStep]


@dataclass
class Card:
    """Everything a card shows (the page is rendered from it alone)."""

    path: str
    generated: str
    inspect: dict[str, Any]
    info: dict[str, Any]
    splits: list[str]
    """The splits in their recorded order, or ``[""]`` for an unsplit store."""
    sizes: dict[str, int]
    names: list[str]
    """Field names, images first, then labels, numbers, categories, arrays, masks."""
    kinds: dict[str, str]
    attrs: dict[str, dict[str, Any]]
    scan: Scan
    budget_mb: float
    seed: int
    per_class: int
    display_split: str
    grids: list[Grid] = field(default_factory=list)
    first_rows: tuple[list[str], list[list[tuple[str, bool]]]] | None = None
    bench: dict[str, Any] | None = None


def gather(
    store: str,
    *,
    seed: int,
    per_class: int,
    budget_mb: float,
    verify: bool,
    bench: bool,
    progress: Progress,
) -> Card:
    """Describe and read ``store`` for its card."""
    dataset = open_dataset(store)
    described = inspect_store(store, verify=verify, progress=progress)
    info = dict(dataset.info)
    splits = list(info.get("splits") or []) or [""]
    parts: dict[str, Dataset] = {s: dataset[s] for s in splits} if splits != [""] else {"": dataset}
    first = parts[splits[0]]
    kinds = {name: f.kind for name, f in first.fields.items()}
    attrs = {}
    for name, array in first.arrays.items():
        found = array.attrs.get(FIELD_ATTR)
        attrs[name] = dict(found) if isinstance(found, dict) else {}
    names = sorted(kinds, key=lambda n: (_rank(kinds[n]), n))
    readers = {
        (split, name): FieldChunks(parts[split].arrays[name], field_label(store, split, name))
        for split in splits
        for name in names
    }
    budget = max(1, int(budget_mb * 2**20))
    scan = scan_fields(readers, kinds, attrs, budget, seed, progress)
    display = "train" if "train" in splits else splits[0]
    card = Card(
        path=store,
        generated=utc_now(),
        inspect=described,
        info=info,
        splits=splits,
        sizes={s: len(parts[s]) for s in splits},
        names=names,
        kinds=kinds,
        attrs=attrs,
        scan=scan,
        budget_mb=budget_mb,
        seed=seed,
        per_class=per_class,
        display_split=display,
    )
    card.grids = [_grid(card, readers, name, budget) for name in names if kinds[name] == "image"]
    others = [n for n in names if kinds[n] != "image"]
    if others:
        card.first_rows = _first_rows(card, readers, others)
    if bench:
        card.bench = _bench(store, display, parts[display])
    return card


def _rank(kind: str) -> int:
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


def _grid(
    card: Card, readers: Mapping[tuple[str, str], FieldChunks], name: str, budget: int
) -> Grid:
    """The image field's samples of the display split: ``per_class`` per class of its first
    label field (the first :data:`MAX_CLASSES` classes), or rows of samples without one."""
    split = card.display_split
    images = readers[(split, name)]
    labels = next(
        (n for n in card.names if card.kinds[n] == "label" and card.attrs[n].get("classes")), None
    )
    if labels is not None:
        classes = list(card.attrs[labels]["classes"])
        label_reader = readers[(split, labels)]
        key = f"{split}/{labels}" if split else labels
        chunks = choose_chunks(
            label_reader.nchunks, label_reader.chunk_nbytes, budget, card.seed, key
        )
        groups = min(len(classes), MAX_CLASSES)
        picked = pick_samples(
            label_reader, chunks, label_reader.length, groups, card.per_class, card.seed
        )
        coverage = card.scan.summaries[(split, labels)].coverage
        source = (
            f"all {coverage.length:,}"
            if coverage.exact
            else f"the {coverage.samples:,} of {coverage.length:,} whose labels were read"
        )
        shown = f"the first {groups} of {len(classes)} classes" if groups < len(classes) else ""
        chosen = (
            f"{card.per_class} per class (fewer where a class has fewer), chosen with seed "
            f"{card.seed} among {source} samples of the {split or 'store'} split by "
            f"{labels!r}{', ' + shown if shown else ''}"
        )
        titles = {k: classes[k] for k in range(groups)}
    else:
        rows = 4
        picked = pick_samples(None, [], images.length, rows, card.per_class, card.seed)
        everything = picked[0]
        picked = {r: everything[r * card.per_class : (r + 1) * card.per_class] for r in range(rows)}
        picked = {r: members for r, members in picked.items() if members}
        chosen = (
            f"{len(everything)} samples chosen with seed {card.seed} among all "
            f"{images.length:,} of the {split or 'store'} (no label field)"
        )
        titles = {
            r: f"samples {r * card.per_class + 1}-{r * card.per_class + len(m)}"
            for r, m in picked.items()
        }
    values = read_samples(images, [i for members in picked.values() for i in members])
    order = [(group, i) for group, members in picked.items() for i in members]
    pixels, how = to_pixels([values[i] for _, i in order], display_steps(card.info, name))
    by_group: dict[int, list[np.ndarray]] = {}
    for (group, _), p in zip(order, pixels, strict=True):
        by_group.setdefault(group, []).append(p)
    counts = card.scan.summaries.get((split, labels)) if labels is not None else None
    rows_out = []
    for group in picked:
        if group not in by_group:
            continue
        label = titles[group]
        if counts is not None and counts.counts is not None:
            label = f"{label} ({int(counts.counts[group]):,})"
        rows_out.append((label, row_png(by_group[group])))
    return Grid(name, split, rows_out, how, chosen, display_steps(card.info, name))


def _first_rows(
    card: Card, readers: Mapping[tuple[str, str], FieldChunks], names: list[str]
) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """The first :data:`FIRST_ROWS` samples of the display split, one column per field."""
    split = card.display_split
    columns = []
    count = min(FIRST_ROWS, card.sizes[split])
    masked = {str(card.attrs[n]["mask_of"]): n for n in names if card.kinds[n] == "mask"}
    for name in names:
        reader = readers[(split, name)]
        values = reader.read_range(0, count)
        column = [cell_text(v, card.kinds[name], card.attrs[name]) for v in values]
        if name in masked:
            # An integer or boolean value is stored as 0 where its mask says it is missing.
            marks = readers[(split, masked[name])].read_range(0, count).reshape(count, -1)
            column = [
                ("missing (stored as 0)", True) if mark.any() else cell
                for cell, mark in zip(column, marks, strict=True)
            ]
        columns.append(column)
    rows = [[column[i] for column in columns] for i in range(count)]
    return names, rows


def _bench(store: str, split: str, dataset: Dataset) -> dict[str, Any]:
    """Per field of ``split``: the store section of ``gpuds bench`` on that field alone (read,
    decode in memory, both with their bound), and the memory copy rate; CPU, 3 repeats, about
    32 MiB of each field."""
    from gpuds.backend import resolve
    from gpuds.bench.reference import memcpy
    from gpuds.bench.store import store_rows
    from gpuds.environment import environment

    backend = resolve("cpu")
    repeats, limit = 3, 32 * 2**20
    copy = memcpy(repeats, quick=True)
    fields: dict[str, list[dict[str, Any]]] = {}
    for name, array in dataset.arrays.items():
        rows, _ = store_rows(store, split, [(name, array)], repeats, backend, limit)
        fields[name] = [r for r in rows if r["device"] == "cpu"]
    return {
        "split": split,
        "environment": environment(backend),
        "memcpy": copy,
        "fields": fields,
        "repeats": repeats,
        "limit_mb": limit // 2**20,
    }
