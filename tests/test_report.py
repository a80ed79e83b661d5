"""`gpuds report`: the dataset card of a store, read back as a browser and a reader would."""

from __future__ import annotations

import base64
import io
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import gpuds
from gpuds.chunks import FieldChunks, field_label
from gpuds.sources import ReadOptions

from .conftest import only_line, private_names_used

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}


class Card(HTMLParser):
    """The parts of a card the tests read: every URL-holding attribute, every image, and the
    tables of each section (header and rows, as text)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.urls: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.section = ""
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self._table: dict[str, Any] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed elements {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)
        found = dict(attrs)
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            if found.get(key) is not None:
                self.urls.append(str(found[key]))
        if tag == "script":
            self.scripts += 1
        elif tag == "img":
            self.images.append(str(found["src"]))
            if self._cell is not None:
                self._cell.append("[image]")
        elif tag == "section":
            self.section = str(found.get("id"))
        elif tag == "table":
            self._table = {"header": [], "rows": []}
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
            self.stack.pop()
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            if not self._table["header"] and not self._table["rows"] and self._is_head:
                self._table["header"] = self._row
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.tables.setdefault(self.section, []).append(self._table)
            self._table = None

    @property
    def _is_head(self) -> bool:
        return "thead" in self.stack

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table(self, section: str, *headers: str) -> dict[str, list[str]]:
        """The first table of ``section`` with all these column headers, as
        ``{first cell: row}``."""
        for t in self.tables.get(section, []):
            if set(headers) <= set(t["header"]):
                return {row[0]: row for row in t["rows"]}
        raise AssertionError(f"no table with {headers} in section {section!r}")


def _png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    return image


def _number(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text))


@pytest.fixture(scope="module")
def card(sample_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("card") / "card.html"
    summary = gpuds.report(sample_store, out, per_class=3, png_dir=out.parent / "png")
    text = out.read_text(encoding="utf-8")
    return {"path": out, "summary": summary, "text": text, "page": Card(text)}


def test_the_card_is_one_offline_page(card: dict[str, Any]):
    page, text = card["page"], card["text"]
    assert page.scripts == 0
    # Every address is inside the page: images as data: URIs, links to its own sections.
    assert page.urls and all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls)
    assert not re.search(r"https?://", text, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", text)
    assert "url(" not in text and "@import" not in text
    sections = set(page.tables) | {"samples", "history"}
    assert {"overview", "fields", "samples", "distributions", "preprocessing", "compression",
            "history"} <= sections  # fmt: skip
    assert card["summary"]["sections"] == [
        "overview", "fields", "samples", "distributions", "preprocessing", "compression", "history"
    ]  # fmt: skip


def test_every_embedded_image_decodes(card: dict[str, Any]):
    images = [_png(uri) for uri in card["page"].images]
    assert all(i.width > 10 and i.height > 10 for i in images)
    # The figures (one per --png file) and one row of samples per class.
    pngs = sorted(Path(p) for p in card["summary"]["png"])
    assert len(pngs) == card["summary"]["figures"] >= 6
    for path in pngs:
        with Image.open(path) as image:
            image.load()
    assert len(images) == len(pngs) - 1 + 3  # the sample grid figure is --png only; 3 classes


def test_the_numbers_are_inspects(card: dict[str, Any], sample_store: Path):
    report = gpuds.inspect(str(sample_store))
    page = card["page"]
    overview = page.table("overview", "split", "samples")
    sizes = {f["split"]: f["shape"][0] for f in report["fields"]}
    assert {k: int(_number(v[1])) for k, v in overview.items()} == sizes
    facts = {row[0]: row for t in page.tables["overview"] for row in t["rows"]}
    assert int(_number(facts["samples"][1])) == report["num_samples"] == 30
    assert f"{report['ratio']:.3f}×" in card["text"]
    fields = page.table("fields", "field", "ratio")
    for name in {f["name"] for f in report["fields"]}:
        parts = [f for f in report["fields"] if f["name"] == name]
        ratio = sum(f["logical_bytes"] for f in parts) / sum(f["stored_bytes"] for f in parts)
        assert _number(fields[name][7]) == round(ratio, 3)
    # Class counts: those the split op recorded, and those of the labels as stored.
    classes = page.table("distributions", "class", "train")
    targets = next(o for o in report["stats"]["ops"] if o["op"] == "split")["stats"]["targets"]
    ds = gpuds.open(str(sample_store))
    for k, name in enumerate(report["classes"]["labels"]):
        counts = [int(_number(c)) for c in classes[name][2:5]]
        assert counts == targets[str(k)]
        for split, count in zip(["train", "val", "test"], counts, strict=True):
            array = ds[split].arrays["labels"]
            labels = FieldChunks(array, field_label(str(sample_store), split, "labels"))
            assert int(np.sum(labels.read_range(0, labels.length) == k)) == count


def test_samples_are_the_stored_images_made_viewable(card: dict[str, Any], sample_store: Path):
    # Each shown image is a train image of its class, the standardisation undone: the pixels
    # as ingested (integers 0-255), enlarged 3x from 28x28.
    ds = gpuds.open(str(sample_store))["train"]
    stats = ds.stats["standardize"]["images"]
    images = FieldChunks(ds.arrays["images"], "images").read_range(0, len(ds))
    labels = FieldChunks(ds.arrays["labels"], "labels").read_range(0, len(ds))
    pixels = images * np.array(stats["std"]) + np.array(stats["mean"])
    assert np.abs(pixels - pixels.round()).max() < 1e-3
    grid = card["page"].tables["samples"][0]["rows"]
    assert [row[0] for row in grid] == ["circle (8)", "square (8)", "stripes (8)"]
    row_images = [_png(u) for u in card["page"].images[:3]]
    for k, row in enumerate(row_images):
        tiles = np.asarray(row.convert("RGB"))
        assert tiles.shape == (84, 3 * 84 + 2 * 4, 3)
        for t in range(3):
            tile = tiles[::3, t * 88 : t * 88 + 84 : 3].astype(float)
            distance = np.abs(pixels - tile).max(axis=(1, 2, 3))
            assert distance.min() < 0.6 and labels[int(distance.argmin())] == k


def test_the_sample_grid_is_the_same_for_the_same_seed(
    card: dict[str, Any], sample_store: Path, tmp_path: Path
):
    grids = {}
    for seed in (0, 1):
        out = tmp_path / f"{seed}.html"
        gpuds.report(sample_store, out, seed=seed, per_class=3)
        grids[seed] = Card(out.read_text()).images[:3]
    assert grids[0] == card["page"].images[:3]  # the card of the fixture: seed 0 too
    assert grids[1] != grids[0]


def test_a_tabular_store(tmp_path: Path, cli):
    rows = ["height,count,colour,target"]
    rng = np.random.default_rng(0)
    for i in range(60):
        height = "nan" if i % 10 == 3 else f"{rng.normal(170, 10):.1f}"
        count = "" if i % 15 == 4 else str(int(rng.integers(0, 9)))
        colour = "" if i % 12 == 5 else ("red", "blue", "green")[i % 3]
        rows.append(f"{height},{count},{colour},{('cat', 'dog')[i % 2]}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    gpuds.ingest([tmp_path / "t.csv"], tmp_path / "t.zarr", options=ReadOptions(label="target"))
    result = cli("report", tmp_path / "t.zarr", "-o", tmp_path / "t.html", "-q")
    assert result.code == 0, result.err
    assert "wrote" in result.out and "statistics exact" in result.out
    page = Card((tmp_path / "t.html").read_text())
    assert "samples" in page.tables  # the first rows, as a table: no image field
    missing = page.table("distributions", "field", "missing when")
    assert _number(missing["height"][2]) == 6  # NaN
    assert _number(missing["colour"][2]) == 5  # category code -1
    assert _number(missing["count (marked in count.missing)"][2]) == 4  # the mask
    classes = page.table("distributions", "class", "all")
    assert [int(_number(classes[c][2])) for c in ("cat", "dog")] == [30, 30]
    # The values a mask marks missing (stored as 0) are not in the statistics of the field.
    stats = [
        t for t in page.tables["distributions"] if t["header"][:2] == ["split", "samples read"]
    ]
    assert len(stats) == 2  # count and height
    ds = gpuds.open(str(tmp_path / "t.zarr"))
    count = FieldChunks(ds.arrays["count"], "count").read_range(0, 60)
    mask = FieldChunks(ds.arrays["count.missing"], "count.missing").read_range(0, 60)
    means = {_number(t["rows"][0][2]) for t in stats}
    assert round(float(count[~mask].mean()), 3) in {round(m, 3) for m in means}


def test_a_field_larger_than_the_budget_is_read_on_a_seeded_sample_of_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(8192, 64)).astype("f4"))
    gpuds.ingest([tmp_path / "x.npy"], tmp_path / "x.zarr", chunk_mb=0.125)  # 16 chunks of 128 KiB
    reads: list[tuple[str, int]] = []
    real = FieldChunks.read_into

    def spy(self: FieldChunks, index: int, *args: Any, **kwargs: Any) -> None:
        reads.append((self.label, index))
        real(self, index, *args, **kwargs)

    monkeypatch.setattr(FieldChunks, "read_into", spy)
    summaries = []
    for name in ("a", "b"):
        reads.clear()
        summaries.append(
            gpuds.report(tmp_path / "x.zarr", tmp_path / f"{name}.html", sample_mb=0.5)
        )
        chunks = {index for _, index in reads}
        # 4 chunks of the budget (each read twice: range, then histogram), and the first
        # chunk for the table of first rows.
        assert len(chunks - {0}) <= 4 and len(chunks) < 16
        if name == "a":
            first = chunks
    assert chunks == first  # the same seed, the same chunks
    stats = summaries[0]["statistics"]
    assert stats["exact"] is False and stats["samples_read"] == 4 * 512
    text = (tmp_path / "a.html").read_text()
    assert "sampled: a field of a split larger than 0.5 MiB" in text
    assert "2,048 of 8,192 samples, 4 of 16 chunks" in text


def test_bench_adds_decode_rates_per_field(sample_store: Path, tmp_path: Path):
    gpuds.report(sample_store, tmp_path / "c.html", bench=True)
    page = Card((tmp_path / "c.html").read_text())
    rates = page.table("compression", "field", "decode in memory")
    assert set(rates) >= {"images", "labels"}
    assert all(row[2].endswith("GB/s") and row[3].endswith("GB/s") for row in rates.values())
    assert _number(rates["images"][2]) > 0  # a tiny field may time below 0.0001 GB/s


def test_bad_inputs_are_one_line_errors(
    cli, sample_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("not a store")
    result = cli("report", tmp_path / "folder", "-o", tmp_path / "c.html")
    assert result.code == 1 and "not a readable Zarr group" in only_line(result.err)
    assert not (tmp_path / "c.html").exists()
    (tmp_path / "c.html").write_text("mine")
    result = cli("report", sample_store, "-o", tmp_path / "c.html")
    assert result.code == 1 and "--overwrite" in only_line(result.err)
    assert (tmp_path / "c.html").read_text() == "mine"
    result = cli("report", sample_store, "-o", sample_store / "c.html")
    assert result.code == 1 and "inside the store" in only_line(result.err)
    assert cli("report", sample_store, "-o", tmp_path / "d.html", "--per-class", "0").code == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = cli("report", sample_store, "-o", tmp_path / "d.html")
    assert result.code == 1 and "pip install 'gpuds[plot]'" in only_line(result.err)
    assert not (tmp_path / "d.html").exists()


def test_the_report_uses_only_public_names_of_other_modules():
    # The card reads a store as users do (gpuds.open, gpuds.inspect, the chunk service, the
    # bench's measurements), never through another module's private names.
    import importlib

    # `gpuds.report` is the API function; the package is the module of that name.
    package = Path(str(importlib.import_module("gpuds.report").__file__)).parent
    assert private_names_used(package) == []
