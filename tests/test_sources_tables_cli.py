"""CSV layouts through `gpuds ingest` and `gpuds inspect`: what was decided, shown and recorded."""

from __future__ import annotations

import bz2
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from .conftest import only_line, plain_zarr_read

IRIS = (
    "4,4,setosa,versicolor,virginica\n"
    "5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4,0.2,0\n7.0,3.2,4.7,1.4,1\n6.3,3.3,6.0,2.5,2\n"
)


def test_metadata_row_is_skipped_said_and_recorded(cli, tmp_path: Path) -> None:
    path = tmp_path / "iris.csv.gz"
    path.write_bytes(gzip.compress(IRIS.encode()))
    out = tmp_path / "out.zarr"
    result = cli("ingest", path, "-o", out, "--label", "col4")
    assert result.code == 0, result.err
    line = next(ln for ln in result.out.splitlines() if ln.startswith(str(path)))
    assert "4 rows · gzip · delimiter ',' (sniffed) · skipped 1 line (line 1 is metadata" in line
    assert "header no (line 2 holds numbers) · 4 numeric (col0, col1, col2, col3) · 1 label" in line
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["col2"], [1.4, 1.4, 4.7, 6.0])
    np.testing.assert_array_equal(plain["labels"], [0, 0, 1, 2])
    (source,) = zarr.open_group(out).attrs["gpuds"]["sources"]
    assert source["compression"] == "gzip" and source["skip_rows"] == 1
    assert source["header"] is False and source["delimiter"] == ","
    assert source["decided"]["header"] == "line 2 holds numbers"
    assert source["kinds"] == {"numeric": ["col0", "col1", "col2", "col3"], "label": ["labels"]}
    shown = cli("inspect", out)
    assert shown.code == 0
    unwrapped = " ".join(shown.out.replace("│", " ").split())
    assert "csv: " + line in unwrapped


def test_json_summary_carries_the_decisions(cli, tmp_path: Path) -> None:
    path = tmp_path / "t.csv.bz2"
    path.write_bytes(bz2.compress(b"a;b;c\n1;x;2.5\n2;y;3.5\n"))
    result = cli("ingest", path, "-o", tmp_path / "o.zarr", "--json")
    assert result.code == 0, result.err
    (source,) = result.json()["sources"]
    assert source["delimiter"] == ";" and source["compression"] == "bz2"
    assert source["kinds"] == {"numeric": ["a", "c"], "category": ["b"]}
    assert source["decided"] == {
        "delimiter": "sniffed",
        "skip_rows": "no metadata line",
        "header": "line 1 holds no numbers",
    }


def test_whitespace_separated_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("age height weight\n5  162   60\n6  170   72\n")
    out = tmp_path / "out.zarr"
    result = cli("ingest", path, "-o", out)
    assert result.code == 0, result.err
    assert "delimiter runs of whitespace" in result.out and "3 numeric (age, height," in result.out
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["height"], [162, 170])


def test_options_win_over_the_guess(cli, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("exported by a tool\nignore me too\n1|2\n3|4\n")
    out = tmp_path / "out.zarr"
    result = cli("ingest", path, "-o", out, "--skip-rows", "2", "--delimiter", "|", "--header")
    assert result.code == 0, result.err
    assert (
        "delimiter '|' (--delimiter) · skipped 2 lines (--skip-rows) · header yes (--header)"
        in (result.out)
    )
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["1"], [3])
    np.testing.assert_array_equal(plain["2"], [4])


def test_no_header_on_a_text_first_row(cli, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ann,oslo\nbob,rome\n")
    out = tmp_path / "out.zarr"
    assert cli("ingest", path, "-o", out, "--no-header", "-q").code == 0
    assert zarr.open_group(out)["col0"].attrs["gpuds"]["vocabulary"] == ["ann", "bob"]


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        (
            "a,b\nm,kg\n1,2\n3,4\n",
            (),
            r"t\.csv: column 'a' is numeric except for its first cell\(s\) 'm' \(line 2\).*"
            r"--skip-rows 2.*--skip-rows 1 --header",
        ),
        (IRIS, ("--skip-rows", "0"), r"column 'col2' is numeric except .*'setosa' \(line 1\)"),
        ("Title\na,b\n1,2\n3,4\n", (), r"line 1 has 1 cell but the lines below it have 2"),
        ("a,b\n1,2\n", ("--delimiter", "ab"), r"Expected --delimiter to be one character"),
        ("a,b\n1,2\n", ("--skip-rows", "-1"), r"Expected --skip-rows >= 0, got -1"),
        ("a,b\n1,2\n", ("--skip-rows", "5"), r"--skip-rows 5 skips every line of the file"),
    ],
)
def test_bad_layouts_are_one_line_errors(
    cli, tmp_path: Path, text: str, args: tuple[str, ...], expected: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    out = tmp_path / "out.zarr"
    result = cli("ingest", path, "-o", out, *args)
    assert result.code == 1
    assert re.search(expected, only_line(result.err)), result.err
    assert not out.exists()


def test_truncated_gzip_is_a_one_line_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 50_000)[:-50])
    result = cli("ingest", path, "-o", tmp_path / "o.zarr")
    assert result.code == 1
    assert "t.csv.gz: the gzip data is damaged or truncated" in only_line(result.err)


def test_inspect_shows_kinds_and_vocabulary_sizes(cli, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("age,city,species\n31,Oslo,cat\n,Rome,dog\n45,Bergen,cat\n")
    out = tmp_path / "out.zarr"
    assert cli("ingest", path, "-o", out, "--label", "species", "-q").code == 0
    shown = cli("inspect", out)
    assert shown.code == 0
    rows = {ln.split()[0]: ln for ln in shown.out.splitlines() if ln.split()}
    assert "│ numeric " in rows["age"]
    assert "│ mask " in rows["age.missing"]
    assert "│ category (3 values) " in rows["city"]
    assert "│ label " in rows["labels"]
    report = json.loads(cli("inspect", out, "--json").out)
    city = next(f for f in report["fields"] if f["name"] == "city")
    assert city["kind"] == "category" and city["vocabulary_size"] == 3


def test_format_csv_on_a_compressed_file_reads_the_decompressed_text(cli, tmp_path: Path) -> None:
    path = tmp_path / "export.gz"
    path.write_bytes(gzip.compress(b"a;b;c\n1;2;3\n4;5;6\n"))
    assert cli("ingest", path, "-o", tmp_path / "x.zarr").code == 1  # no format from ".gz" alone
    out = tmp_path / "out.zarr"
    result = cli("ingest", path, "-o", out, "--format", "csv", "-q")
    assert result.code == 0, result.err
    assert "3 numeric (a, b, c)" in result.out
    plain = plain_zarr_read(out, tmp_path)
    np.testing.assert_array_equal(plain["a"], [1, 4])
    np.testing.assert_array_equal(plain["c"], [3, 6])


def test_parquet_source_gets_its_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1.5, 2.5, 3.5], "kind": ["a", "b", "a"]}), path)
    result = cli("ingest", path, "-o", tmp_path / "out.zarr")
    assert result.code == 0, result.err
    assert f"{path}: 3 rows · 1 numeric (x) · 1 category (kind)" in result.out.splitlines()
