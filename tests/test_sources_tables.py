from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpuds.errors import SourceError
from gpuds.sources import open_source, tables
from gpuds.sources.base import FieldSpec, ReadOptions, Source
from gpuds.sources.tables import CsvSource, ParquetSource


def read_all(src: Source, max_samples: int = 3) -> dict[str, np.ndarray]:
    blocks = list(src.blocks(max_samples))
    sizes = [len(next(iter(b.values()))) for b in blocks]
    assert all(size == max_samples for size in sizes[:-1])
    assert sum(sizes) == src.length
    names = [spec.name for spec in src.fields]
    for block in blocks:
        assert list(block) == names
    return {name: np.concatenate([b[name] for b in blocks]) for name in names}


def spec(src: Source, name: str) -> FieldSpec:
    return next(s for s in src.fields if s.name == name)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_parquet(path: Path, table: pa.Table, **kwargs: Any) -> Path:
    pq.write_table(table, path, **kwargs)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- values and types -------------------------------------------------------------------------


def test_csv_numeric_columns_keep_values_and_dtypes(tmp_path: Path) -> None:
    rows = [(i, i * 0.25 - 1, -(10**12) * i) for i in range(8)]
    text = "i,f,big\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
    path = write_csv(tmp_path / "t.csv", text)
    src = CsvSource(path, ReadOptions())
    assert [(s.name, s.dtype, s.kind) for s in src.fields] == [
        ("i", np.dtype(np.int64), "numeric"),
        ("f", np.dtype(np.float64), "numeric"),
        ("big", np.dtype(np.int64), "numeric"),
    ]
    assert src.length == 8
    data = read_all(src)
    np.testing.assert_array_equal(data["i"], np.arange(8))
    np.testing.assert_array_equal(data["f"], np.arange(8) * 0.25 - 1)
    np.testing.assert_array_equal(data["big"], -(10**12) * np.arange(8))
    assert data["i"].dtype == np.int64 and data["f"].dtype == np.float64
    assert src.describe() == {
        "format": "csv",
        "path": str(path),
        "rows": 8,
        "kinds": {"numeric": ["i", "f", "big"]},
        "compression": None,
        "delimiter": ",",
        "quote": '"',
        "skip_rows": 0,
        "header": True,
        "decided": {
            "delimiter": "sniffed",
            "skip_rows": "no metadata line",
            "header": "line 1 holds no numbers",
        },
    }


def test_parquet_keeps_narrow_dtypes(tmp_path: Path) -> None:
    f32 = np.array([0.5, -1.25, 3.0, 7.75, 1e-3], np.float32)
    i8 = np.array([-128, -1, 0, 1, 127], np.int8)
    u16 = np.array([0, 1, 2, 65535, 7], np.uint16)
    flags = np.array([True, False, True, True, False])
    table = pa.table({"f32": f32, "i8": i8, "u16": u16, "flag": flags})
    path = write_parquet(tmp_path / "t.parquet", table, row_group_size=2)
    with ParquetSource(path, ReadOptions()) as src:
        assert [(s.name, s.dtype) for s in src.fields] == [
            ("f32", np.dtype(np.float32)),
            ("i8", np.dtype(np.int8)),
            ("u16", np.dtype(np.uint16)),
            ("flag", np.dtype(bool)),
        ]
        data = read_all(src, 2)
        assert src.describe()["row_groups"] == 3
    expected_columns: dict[str, np.ndarray] = {"f32": f32, "i8": i8, "u16": u16, "flag": flags}
    for name, expected in expected_columns.items():
        assert data[name].dtype == expected.dtype
        np.testing.assert_array_equal(data[name], expected)


def test_blocks_are_exactly_max_samples_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables, "PARQUET_BATCH_ROWS", 7)
    values = np.arange(50, dtype=np.int64)
    path = write_parquet(tmp_path / "t.parquet", pa.table({"v": values}), row_group_size=11)
    with ParquetSource(path, ReadOptions()) as src:
        blocks = list(src.blocks(5))
    assert [len(b["v"]) for b in blocks] == [5] * 10
    np.testing.assert_array_equal(np.concatenate([b["v"] for b in blocks]), values)


def test_strings_become_codes_into_sorted_vocabulary(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", 'kind\nzebra\napple\n"mango, ripe"\napple\nÉclair\n')
    src = CsvSource(path, ReadOptions())
    field = spec(src, "kind")
    assert field.dtype == np.int32 and field.kind == "category"
    vocabulary = ["apple", "mango, ripe", "zebra", "Éclair"]
    assert field.attrs == {"vocabulary": vocabulary, "missing_code": -1}
    np.testing.assert_array_equal(read_all(src)["kind"], [2, 0, 1, 0, 3])
    meta = src.metadata()
    assert meta["vocabularies"] == {"kind": vocabulary}
    assert json.loads(json.dumps(meta)) == meta


def test_vocabulary_is_json_safe(tmp_path: Path) -> None:
    odd = ['quote "x"', "back\\slash", "tab\there", "new\nline", "emoji 🙂", "nul\x00byte"]
    path = write_parquet(tmp_path / "t.parquet", pa.table({"s": odd}))
    with ParquetSource(path, ReadOptions()) as src:
        codes = read_all(src)["s"]
        meta = src.metadata()
        attrs = spec(src, "s").attrs
    restored = json.loads(json.dumps(meta, ensure_ascii=False))
    assert restored["vocabularies"]["s"] == sorted(odd)
    assert json.loads(json.dumps(attrs)) == attrs
    assert [attrs["vocabulary"][c] for c in codes] == odd


def test_parquet_dictionary_column_is_a_category(tmp_path: Path) -> None:
    column = pa.array(["b", "a", None, "b", "c"]).dictionary_encode()
    path = write_parquet(tmp_path / "t.parquet", pa.table({"d": column}), row_group_size=2)
    with ParquetSource(path, ReadOptions()) as src:
        assert spec(src, "d").attrs["vocabulary"] == ["a", "b", "c"]
        np.testing.assert_array_equal(read_all(src)["d"], [1, 0, -1, 1, 2])


def test_parquet_timestamps_and_dates(tmp_path: Path) -> None:
    stamps = pa.array([dt.datetime(1970, 1, 1, 0, 0, 1), None, dt.datetime(2024, 2, 29)])
    zoned = pa.array([0, 1, 2], pa.timestamp("ms", tz="Europe/Paris"))
    dates = pa.array([dt.date(1970, 1, 2), dt.date(1969, 12, 31), dt.date(2000, 1, 1)])
    table = pa.table({"t": stamps, "z": zoned, "d": dates})
    path = write_parquet(tmp_path / "t.parquet", table)
    with ParquetSource(path, ReadOptions()) as src:
        assert [s.name for s in src.fields] == ["t", "t.missing", "z", "d"]
        assert spec(src, "t").attrs == {"unit": "ns", "epoch": tables.EPOCH, "timezone": None}
        assert spec(src, "z").attrs["timezone"] == "Europe/Paris"
        assert spec(src, "d").attrs == {"unit": "days", "epoch": "1970-01-01"}
        data = read_all(src)
    second = 10**9
    expected_t = [second, 0, (dt.date(2024, 2, 29) - dt.date(1970, 1, 1)).days * 86400 * second]
    np.testing.assert_array_equal(data["t"], expected_t)
    np.testing.assert_array_equal(data["t.missing"], [False, True, False])
    np.testing.assert_array_equal(data["z"], [0, 10**6, 2 * 10**6])
    assert data["d"].dtype == np.int32
    np.testing.assert_array_equal(data["d"], [1, -1, 10957])


def test_timestamp_beyond_nanosecond_range_is_refused(tmp_path: Path) -> None:
    stamps = pa.array([dt.datetime(2000, 1, 1), dt.datetime(3000, 1, 1)], pa.timestamp("s"))
    path = write_parquet(tmp_path / "t.parquet", pa.table({"when": stamps}))
    with pytest.raises(SourceError, match=r"column 'when' has a value that does not fit"):
        ParquetSource(path, ReadOptions())


def test_csv_dates_are_days(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "day\n1970-01-11\n2000-01-01\n")
    src = CsvSource(path, ReadOptions())
    np.testing.assert_array_equal(read_all(src)["day"], [10, 10957])


# --- missing values ----------------------------------------------------------------------------


def test_missing_values_in_each_kind(tmp_path: Path) -> None:
    text = "n,f,s,b,full\n1,0.5,x,true,1\n,,,,2\n3,NaN,NA,false,3\n4,2.5,y,,4\n"
    src = CsvSource(write_csv(tmp_path / "t.csv", text), ReadOptions())
    assert [s.name for s in src.fields] == ["n", "n.missing", "f", "s", "b", "b.missing", "full"]
    mask = spec(src, "n.missing")
    assert (mask.dtype, mask.kind, mask.attrs) == (np.dtype(bool), "mask", {"mask_of": "n"})
    data = read_all(src)
    np.testing.assert_array_equal(data["n"], [1, 0, 3, 4])
    np.testing.assert_array_equal(data["n.missing"], [False, True, False, False])
    np.testing.assert_array_equal(data["f"], [0.5, np.nan, np.nan, 2.5])
    np.testing.assert_array_equal(data["s"], [0, -1, -1, 1])
    np.testing.assert_array_equal(data["b"], [True, False, False, False])
    np.testing.assert_array_equal(data["b.missing"], [False, True, False, True])
    np.testing.assert_array_equal(data["full"], [1, 2, 3, 4])
    columns = src.metadata()["columns"]
    assert columns["n"] == {"type": "int64", "dtype": "int64", "kind": "numeric", "nulls": 1}
    assert (
        columns["f"]["nulls"] == 2 and columns["s"]["nulls"] == 2 and columns["full"]["nulls"] == 0
    )


def test_parquet_int_nulls_get_a_mask(tmp_path: Path) -> None:
    table = pa.table({"v": pa.array([5, None, -2], pa.int16())})
    with ParquetSource(write_parquet(tmp_path / "t.parquet", table), ReadOptions()) as src:
        data = read_all(src, 2)
    assert data["v"].dtype == np.int16
    np.testing.assert_array_equal(data["v"], [5, 0, -2])
    np.testing.assert_array_equal(data["v.missing"], [False, True, False])


def test_all_missing_column_is_an_empty_category(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", "a,empty\n1,\n2,\n"), ReadOptions())
    assert spec(src, "empty").attrs == {"vocabulary": [], "missing_code": -1}
    np.testing.assert_array_equal(read_all(src)["empty"], [-1, -1])


def test_mask_name_colliding_with_a_column_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,x.missing\n1,true\n,false\n")
    with pytest.raises(SourceError, match=r"'x.missing'"):
        CsvSource(path, ReadOptions())


# --- labels -------------------------------------------------------------------------------------


def test_string_label_column(tmp_path: Path) -> None:
    text = "size,species\n1.5,setosa\n2.5,virginica\n3.5,setosa\n4.5,versicolor\n"
    src = CsvSource(write_csv(tmp_path / "t.csv", text), ReadOptions(label="species"))
    assert [s.name for s in src.fields] == ["size", "labels"]
    labels = spec(src, "labels")
    assert labels.dtype == np.int64 and labels.kind == "label"
    assert labels.attrs == {"classes": ["setosa", "versicolor", "virginica"]}
    data = read_all(src)
    np.testing.assert_array_equal(data["labels"], [0, 2, 0, 1])
    np.testing.assert_array_equal(data["size"], [1.5, 2.5, 3.5, 4.5])
    meta = src.metadata()
    assert meta["label_column"] == "species"
    assert meta["columns"]["species"]["kind"] == "label"
    assert json.loads(json.dumps(meta)) == meta


def test_int_label_column_in_parquet(tmp_path: Path) -> None:
    table = pa.table({"y": pa.array([3, 1, 2], pa.int8()), "x": [0.1, 0.2, 0.3]})
    path = write_parquet(tmp_path / "t.parquet", table)
    with ParquetSource(path, ReadOptions(fields=("x", "y"), label="y")) as src:
        assert [s.name for s in src.fields] == ["x", "labels"]
        assert spec(src, "labels").attrs == {}
        data = read_all(src)
    assert data["labels"].dtype == np.int64
    np.testing.assert_array_equal(data["labels"], [3, 1, 2])


def test_float_label_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,y\n1,0.5\n2,1.5\n")
    with pytest.raises(SourceError, match="label column must be integer or categorical"):
        CsvSource(path, ReadOptions(label="y"))


def test_missing_label_names_column_and_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,y\n1,a\n2,b\n3,\n4,\n")
    with pytest.raises(SourceError, match=r"'y' has 2 missing value\(s\), the first in data row 3"):
        CsvSource(path, ReadOptions(label="y"))


def test_unknown_label_column_lists_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,y\n1,a\n")
    with pytest.raises(SourceError, match=r"no label column 'z'; columns: x, y"):
        CsvSource(path, ReadOptions(label="z"))


def test_column_named_labels_clashes_with_label(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "labels,y\n1,a\n")
    with pytest.raises(SourceError, match="'labels'"):
        CsvSource(path, ReadOptions(label="y"))


# --- CSV header and delimiter -------------------------------------------------------------------


def test_header_guessed_absent_when_first_row_has_numbers(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", "1,a\n2,b\n"), ReadOptions())
    assert src.describe()["header"] is False
    assert [s.name for s in src.fields] == ["col0", "col1"]
    data = read_all(src)
    np.testing.assert_array_equal(data["col0"], [1, 2])
    assert spec(src, "col1").attrs["vocabulary"] == ["a", "b"]


def test_header_guessed_present_for_all_text_rows(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", "name,city\nann,oslo\n"), ReadOptions())
    assert src.describe()["header"] is True
    assert [s.name for s in src.fields] == ["name", "city"]
    assert src.length == 1


def test_forced_no_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "name,city\nann,oslo\n")
    src = CsvSource(path, ReadOptions(header=False))
    assert [s.name for s in src.fields] == ["col0", "col1"]
    assert src.length == 2
    assert spec(src, "col0").attrs["vocabulary"] == ["ann", "name"]


def test_forced_header_on_numeric_names(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", "1, 2\n3,4\n"), ReadOptions(header=True))
    assert [s.name for s in src.fields] == ["1", "2"]
    np.testing.assert_array_equal(read_all(src)["2"], [4])


def test_header_names_are_stripped(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", " a ,\tb\n1,2\n"), ReadOptions(fields=("b",)))
    np.testing.assert_array_equal(read_all(src)["b"], [2])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("a,b,a", r"columns 1 and 3 both 'a'.*--no-header"),
        ("a, b ,b", r"columns 2 and 3 both 'b'.*--no-header"),
        ("a,,c", r"column 2 has an empty header name.*--no-header"),
        ("a,__b,c", r"header column 2: '__b' cannot be a field name.*--no-header"),
    ],
)
def test_bad_header_names_are_refused(tmp_path: Path, header: str, message: str) -> None:
    path = write_csv(tmp_path / "t.csv", f"{header}\nx,y,z\n")
    with pytest.raises(SourceError, match=message):
        CsvSource(path, ReadOptions())


def test_unnamed_column_can_be_left_out(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ",a,b\n0,x,1\n1,y,2\n")
    src = CsvSource(path, ReadOptions(fields=("b", "a")))
    assert [s.name for s in src.fields] == ["b", "a"]
    np.testing.assert_array_equal(read_all(src)["b"], [1, 2])


@pytest.mark.parametrize(
    ("name", "text", "delimiter"),
    [
        ("t.tsv", "a,x\tb\n1,5\t2\n", "\t"),
        ("t.csv", "a;b\n1,5;2\n", ";"),
        ("t.csv", 'a\t"b;c;d"\n1\t2\n', "\t"),
        ("t.csv", "a\n1\n", ","),
    ],
)
def test_delimiter(tmp_path: Path, name: str, text: str, delimiter: str) -> None:
    src = CsvSource(write_csv(tmp_path / name, text), ReadOptions())
    assert src.describe()["delimiter"] == delimiter


def test_semicolon_values(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", "a;b\nx,y;2\n"), ReadOptions())
    data = read_all(src)
    assert spec(src, "a").attrs["vocabulary"] == ["x,y"]
    np.testing.assert_array_equal(data["b"], [2])


def test_quoted_newlines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes('\ufeffnote,n\n"two\nlines",1\nplain,2\n'.encode())
    src = CsvSource(path, ReadOptions())
    assert [s.name for s in src.fields] == ["note", "n"]
    assert spec(src, "note").attrs["vocabulary"] == ["plain", "two\nlines"]
    np.testing.assert_array_equal(read_all(src)["n"], [1, 2])


# --- CSV type widening -------------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "CSV_BLOCK_SIZE", 4096)


@pytest.mark.usefixtures("small_blocks")
def test_int_column_widens_to_float_after_first_block(tmp_path: Path) -> None:
    n = 10_000
    lines = [f"{i},{i % 7}" for i in range(n)] + ["2.5,1"]
    path = write_csv(tmp_path / "t.csv", "v,w\n" + "\n".join(lines) + "\n")
    src = CsvSource(path, ReadOptions())
    assert spec(src, "v").dtype == np.float64
    assert spec(src, "w").dtype == np.int64
    data = read_all(src, 4096)
    np.testing.assert_array_equal(data["v"], [*range(n), 2.5])
    np.testing.assert_array_equal(data["w"], [*(i % 7 for i in range(n)), 1])


@pytest.mark.usefixtures("small_blocks")
def test_widening_to_string_and_from_empty(tmp_path: Path) -> None:
    n = 3000
    lines = [f"{i},," for i in range(n)] + ["oops,7,"] + ["1,,1e400"]
    path = write_csv(tmp_path / "t.csv", "v,late,huge\n" + "\n".join(lines) + "\n")
    src = CsvSource(path, ReadOptions())
    assert spec(src, "v").kind == "category"
    assert spec(src, "late").dtype == np.int64
    assert spec(src, "huge").dtype == np.float64
    data = read_all(src, 1000)
    vocabulary = spec(src, "v").attrs["vocabulary"]
    assert len(vocabulary) == n + 1 and "oops" in vocabulary
    assert vocabulary[data["v"][n]] == "oops"
    np.testing.assert_array_equal(data["late.missing"], [True] * n + [False, True])
    assert data["late"][n] == 7
    assert np.isinf(data["huge"][-1]) and np.isnan(data["huge"][0])


# --- bad inputs ----------------------------------------------------------------------------------


def test_ragged_row_names_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b\n1,2\n3\n4,5\n")
    with pytest.raises(SourceError, match=r"t\.csv: ragged row: line 3 has 1 cells, expected 2"):
        CsvSource(path, ReadOptions())


@pytest.mark.usefixtures("small_blocks")
def test_ragged_row_in_a_later_block(tmp_path: Path) -> None:
    lines = [f"{i},{i}" for i in range(2000)] + ["1,2,3"]
    path = write_csv(tmp_path / "t.csv", "a,b\n" + "\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"ragged row: line 2002 has 3 cells, expected 2"):
        CsvSource(path, ReadOptions())


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_empty_csv_is_refused(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path / "t.csv", text)
    with pytest.raises(SourceError, match=r"t\.csv: .*(empty|no rows)"):
        CsvSource(path, ReadOptions())


def test_header_only_csv_has_no_rows(tmp_path: Path) -> None:
    src = CsvSource(write_csv(tmp_path / "t.csv", "a,b\n"), ReadOptions())
    assert src.length == 0
    assert list(src.blocks(3)) == []


def test_invalid_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"name,n\n\xff\xfeab,1\n")
    with pytest.raises(SourceError, match=r"'name' holds binary data.*UTF-8.*--fields"):
        CsvSource(path, ReadOptions())


@pytest.mark.parametrize(
    "content", [b"not a parquet file at all", b"PAR1" + b"\x00" * 40 + b"PAR1"]
)
def test_corrupt_parquet(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=r"bad\.parquet: not a readable Parquet file"):
        ParquetSource(path, ReadOptions())


def test_truncated_parquet(tmp_path: Path) -> None:
    good = write_parquet(tmp_path / "good.parquet", pa.table({"v": np.arange(1000)}))
    path = tmp_path / "cut.parquet"
    path.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(SourceError, match=r"cut\.parquet"):
        ParquetSource(path, ReadOptions())


def test_parquet_page_checksum_mismatch(tmp_path: Path) -> None:
    values = np.random.default_rng(0).random(10_000)
    good = write_parquet(
        tmp_path / "good.parquet", pa.table({"v": values}), write_page_checksum=True
    )
    damaged = bytearray(good.read_bytes())
    for i in range(2000, 2100):
        damaged[i] ^= 0xFF
    path = tmp_path / "flipped.parquet"
    path.write_bytes(bytes(damaged))
    with pytest.raises(SourceError, match=r"flipped\.parquet: cannot read the Parquet data.*CRC"):
        ParquetSource(path, ReadOptions())


def test_unknown_column_selection_lists_available(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(SourceError, match=r"no field\(s\) 'c'; available: a, b"):
        CsvSource(path, ReadOptions(fields=("a", "c")))
    table = pa.table({"a": [1], "b": [2]})
    with pytest.raises(SourceError, match=r"available: a, b"):
        ParquetSource(write_parquet(tmp_path / "t.parquet", table), ReadOptions(fields=("c",)))


def test_selection_order_and_lenient_selection(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b,c\n1,2,3\n")
    src = CsvSource(path, ReadOptions(fields=("c", "a")))
    assert [s.name for s in src.fields] == ["c", "a"]
    src = CsvSource(path, ReadOptions(fields=("b", "other"), strict_fields=False))
    assert [s.name for s in src.fields] == ["b"]


def test_unsupported_column_type(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2], "tags": [[1, 2], [3]]})
    path = write_parquet(tmp_path / "t.parquet", table)
    with pytest.raises(SourceError, match=r"column 'tags' holds type list<.*--fields"):
        ParquetSource(path, ReadOptions())
    with ParquetSource(path, ReadOptions(fields=("x",))) as src:
        np.testing.assert_array_equal(read_all(src)["x"], [1, 2])


def test_decimal_column_is_refused(tmp_path: Path) -> None:
    table = pa.table({"price": pa.array([1, 2], pa.decimal128(10, 2))})
    with pytest.raises(SourceError, match=r"'price' holds type decimal128\(10, 2\)"):
        ParquetSource(write_parquet(tmp_path / "t.parquet", table), ReadOptions())


def test_vocabulary_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "MAX_VOCABULARY", 5)
    path = write_csv(tmp_path / "t.csv", "x,text\n" + "".join(f"{i},w{i}\n" for i in range(6)))
    with pytest.raises(SourceError, match=r"'text' holds more than 5 distinct.*--fields"):
        CsvSource(path, ReadOptions())
    src = CsvSource(path, ReadOptions(fields=("x",)))
    np.testing.assert_array_equal(read_all(src)["x"], np.arange(6))


def test_pandas_index_column_is_ignored(tmp_path: Path) -> None:
    table = pa.table({"v": [1.0, 2.0], "__index_level_0__": ["r1", "r2"]})
    with ParquetSource(write_parquet(tmp_path / "t.parquet", table), ReadOptions()) as src:
        assert [s.name for s in src.fields] == ["v"]
        assert src.metadata()["ignored_columns"] == ["__index_level_0__"]


def test_parquet_column_with_bad_name(tmp_path: Path) -> None:
    table = pa.table({"a/b": [1], "ok": [2]})
    path = write_parquet(tmp_path / "t.parquet", table)
    with pytest.raises(SourceError, match=r"'a/b' cannot be a field name"):
        ParquetSource(path, ReadOptions())
    with ParquetSource(path, ReadOptions(fields=("ok",))) as src:
        assert [s.name for s in src.fields] == ["ok"]


# --- the registry and the inputs ---------------------------------------------------------------


def test_registry_opens_tables_and_inputs_stay_unchanged(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "t.csv", "a,b\n1,x\n,y\n")
    pq_path = write_parquet(tmp_path / "t.parquet", pa.table({"c": [1.5, None]}))
    before = {p: digest(p) for p in (csv_path, pq_path)}
    for path, cls in [(csv_path, CsvSource), (pq_path, ParquetSource)]:
        with open_source(path, ReadOptions()) as src:
            assert isinstance(src, cls)
            read_all(src, 1)
            meta = src.metadata()
            assert json.loads(json.dumps(meta)) == meta
            assert json.loads(json.dumps(src.describe())) == src.describe()
    assert {p: digest(p) for p in (csv_path, pq_path)} == before
