"""How a CSV is laid out: compression, delimiter, skipped lines, header; guesses and overrides."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from gpuds.errors import ConfigError, SourceError
from gpuds.sources import delimited, detect_format
from gpuds.sources.base import ReadOptions, Source
from gpuds.sources.delimited import whitespace_to_tabs
from gpuds.sources.tables import CsvSource

# The layout of tables shipped with ML libraries: counts and class names above the data.
IRIS_ROWS = [(5.1, 3.5, 1.4, 0.2, 0), (4.9, 3.0, 1.4, 0.2, 0), (7.0, 3.2, 4.7, 1.4, 1)]
IRIS_ROWS += [(6.3, 3.3, 6.0, 2.5, 2), (5.8, 2.7, 5.1, 1.9, 2)]
IRIS = "5,4,setosa,versicolor,virginica\n" + "".join(
    ",".join(map(str, r)) + "\n" for r in IRIS_ROWS
)

COMPRESS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda data: pa.compress(data, codec="zstd", asbytes=True),
}
NAMES = {"gz": "gzip", "bz2": "bz2", "xz": "xz", "zst": "zstd"}


def read_all(src: Source) -> dict[str, np.ndarray]:
    blocks = list(src.blocks(2))
    return {spec.name: np.concatenate([b[spec.name] for b in blocks]) for spec in src.fields}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def assert_iris_values(data: dict[str, np.ndarray], names: list[str]) -> None:
    expected = np.array(IRIS_ROWS)
    assert list(data) == names
    for j, name in enumerate(names[:4]):
        assert data[name].dtype == np.float64
        np.testing.assert_array_equal(data[name], expected[:, j])
    assert data[names[4]].dtype == np.int64
    np.testing.assert_array_equal(data[names[4]], [0, 0, 1, 2, 2])


# --- a first row of metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, False])
def test_metadata_first_row_is_skipped_not_sample_0(tmp_path: Path, header: bool | None) -> None:
    src = CsvSource(write(tmp_path / "iris.csv", IRIS), ReadOptions(header=header))
    assert src.length == 5
    assert_iris_values(read_all(src), ["col0", "col1", "col2", "col3", "col4"])
    assert all(spec.kind == "numeric" for spec in src.fields)
    described = src.describe()
    assert described["skip_rows"] == 1 and described["header"] is False
    assert described["kinds"] == {"numeric": ["col0", "col1", "col2", "col3", "col4"]}
    why = described["decided"]["skip_rows"]
    assert why.startswith("line 1 is metadata") and "text above numeric columns" in why
    assert "5,4,setosa,versicolor,virginica" in why
    assert described["decided"]["header"] == (
        "--no-header" if header is False else "line 2 holds numbers"
    )


def test_metadata_row_with_another_cell_count_is_skipped(tmp_path: Path) -> None:
    # 13 features and a target below "178,13,class_0,class_1,class_2" (5 cells).
    rows = [[i + j for j in range(13)] + [i % 3] for i in range(4)]
    text = "178,13,class_0,class_1,class_2\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    src = CsvSource(write(tmp_path / "wine.csv", text), ReadOptions(label="col13"))
    data = read_all(src)
    assert src.layout.skip_rows == 1 and src.layout.delimiter == ","
    assert "5 cells where the lines below have 14" in src.layout.reasons["skip_rows"]
    np.testing.assert_array_equal(data["col0"], [0, 1, 2, 3])
    np.testing.assert_array_equal(data["col12"], [12, 13, 14, 15])
    np.testing.assert_array_equal(data["labels"], [0, 1, 2, 0])


def test_metadata_row_above_a_header_row(tmp_path: Path) -> None:
    text = "3,2,a,b\nwidth,height\n1.5,2\n2.5,3\n3.5,4\n"
    src = CsvSource(write(tmp_path / "t.csv", text), ReadOptions())
    assert (src.layout.skip_rows, src.layout.header) == (1, True)
    data = read_all(src)
    np.testing.assert_array_equal(data["width"], [1.5, 2.5, 3.5])
    np.testing.assert_array_equal(data["height"], [2, 3, 4])


def test_forced_header_keeps_the_first_row_as_names(tmp_path: Path) -> None:
    src = CsvSource(write(tmp_path / "iris.csv", IRIS), ReadOptions(header=True))
    assert src.layout.skip_rows == 0 and src.layout.reasons["header"] == "--header"
    assert_iris_values(read_all(src), ["5", "4", "setosa", "versicolor", "virginica"])


def test_stating_skip_and_header_reads_rows_as_they_are(tmp_path: Path) -> None:
    src = CsvSource(write(tmp_path / "iris.csv", IRIS), ReadOptions(header=False, skip_rows=0))
    assert src.length == 6
    col2 = next(s for s in src.fields if s.name == "col2")
    assert col2.kind == "category" and "setosa" in col2.attrs["vocabulary"]


def test_a_too_short_file_is_not_guessed_to_have_metadata(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "1,2,3\n4,5\n")
    with pytest.raises(SourceError, match=r"line 1 has 3 cells but the lines below it have 2"):
        CsvSource(path, ReadOptions())


# --- a column numeric but for its first cells ----------------------------------------------------


def test_numeric_column_with_odd_first_cells_is_one_line_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "depth,mass\nm,kg\n1,2\n3,4\n5,6\n")
    with pytest.raises(SourceError) as info:
        CsvSource(path, ReadOptions())
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: column 'depth' is numeric except for its first cell(s) 'm'")
    assert "(line 2)" in message and "(and 1 other column like it)" in message
    assert "pass --skip-rows 2" in message and "--skip-rows 1 --header" in message
    # The options the message names settle it.
    src = CsvSource(path, ReadOptions(skip_rows=1, header=True))
    assert [s.name for s in src.fields] == ["m", "kg"]
    np.testing.assert_array_equal(read_all(src)["kg"], [2, 4, 6])
    src = CsvSource(path, ReadOptions(skip_rows=2))
    assert src.layout.header is False
    np.testing.assert_array_equal(read_all(src)["col0"], [1, 3, 5])


def test_stated_skip_rows_does_not_skip_more(tmp_path: Path) -> None:
    path = write(tmp_path / "iris.csv", IRIS)
    with pytest.raises(SourceError) as info:
        CsvSource(path, ReadOptions(skip_rows=0))
    message = str(info.value)
    assert "column 'col2' is numeric except for its first cell(s) 'setosa' (line 1)" in message
    assert "pass --skip-rows 1" in message


def test_one_odd_cell_with_a_header(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b\n1,x\n2,3\n4,5\n")
    with pytest.raises(SourceError, match=r"column 'b' is numeric except .* 'x' \(line 2\)"):
        CsvSource(path, ReadOptions())


def test_text_columns_and_mixed_columns_are_not_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "code,city\nA1,Oslo\n7,Rome\nB2,Oslo\n")
    src = CsvSource(path, ReadOptions())
    assert [s.kind for s in src.fields] == ["category", "category"]
    assert src.fields[0].attrs["vocabulary"] == ["7", "A1", "B2"]


# --- delimiters ----------------------------------------------------------------------------------


def test_whitespace_separated_values(tmp_path: Path) -> None:
    text = "  5 162  60\n6\t170 72 \n\n7   180\t\t80\n"
    src = CsvSource(write(tmp_path / "t.txt", text), ReadOptions())
    assert src.layout.delimiter == "whitespace" and src.layout.header is False
    assert "runs of spaces" in src.layout.reasons["delimiter"]
    data = read_all(src)
    np.testing.assert_array_equal(data["col0"], [5, 6, 7])
    np.testing.assert_array_equal(data["col1"], [162, 170, 180])
    np.testing.assert_array_equal(data["col2"], [60, 72, 80])


def test_whitespace_separated_with_header_quotes_bom_and_crlf(tmp_path: Path) -> None:
    text = '\ufeffid  name      score\r\n1   "ann lee"  3.5\r\n2   bob        4\r\n'
    src = CsvSource(write(tmp_path / "t.txt", text), ReadOptions())
    assert [s.name for s in src.fields] == ["id", "name", "score"]
    data = read_all(src)
    assert src.fields[1].attrs["vocabulary"] == ["ann lee", "bob"]
    np.testing.assert_array_equal(data["name"], [0, 1])
    np.testing.assert_array_equal(data["score"], [3.5, 4.0])


def test_forced_header_on_whitespace_separated_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "5 162 60\n6 170 72\n")
    src = CsvSource(path, ReadOptions(header=True))
    assert [s.name for s in src.fields] == ["5", "162", "60"]
    np.testing.assert_array_equal(read_all(src)["162"], [170])


@pytest.mark.parametrize(
    ("given", "text", "expected"),
    [
        (";", "a,b;c\n1,5;2\n", {"a,b": ["1,5"], "c": [2]}),
        ("tab", "a b\tc\n1\t2\n", {"a b": [1], "c": [2]}),
        ("whitespace", "a,b c\n1,5 2\n", {"a,b": ["1,5"], "c": [2]}),
        ("space", "a  b\n1  2\n", {"a": [1], "": None, "b": [2]}),
    ],
)
def test_given_delimiter_wins(
    tmp_path: Path, given: str, text: str, expected: dict[str, Any]
) -> None:
    wanted = tuple(name for name, values in expected.items() if values is not None)
    src = CsvSource(write(tmp_path / "t.csv", text), ReadOptions(delimiter=given, fields=wanted))
    assert src.layout.reasons["delimiter"] == "--delimiter"
    data = read_all(src)
    for name in wanted:
        values = expected[name]
        spec = next(s for s in src.fields if s.name == name)
        shown = (
            [spec.attrs["vocabulary"][c] for c in data[name]]
            if spec.kind == "category"
            else data[name].tolist()
        )
        assert shown == values


def test_delimiter_sniffed_past_a_title_line(tmp_path: Path) -> None:
    text = "Sensor export\n" + "a;b;c\n" + "".join(f"{i};{i + 1};{i + 2}\n" for i in range(3))
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(SourceError) as info:
        CsvSource(path, ReadOptions())
    assert str(info.value) == (
        f"{path}: line 1 has 1 cell but the lines below it have 3 (split at ';'); if line 1 is "
        "a title or metadata, pass --skip-rows 1, and if the cells are split wrongly, pass "
        "--delimiter"
    )
    src = CsvSource(path, ReadOptions(skip_rows=1))
    assert src.layout.header is True and src.layout.reasons["skip_rows"] == "--skip-rows"
    np.testing.assert_array_equal(read_all(src)["c"], [2, 3, 4])


def test_sniffed_single_quotes(tmp_path: Path) -> None:
    src = CsvSource(write(tmp_path / "t.csv", "a,b\n'x, y',1\n'z',2\n"), ReadOptions())
    assert src.layout.quote == "'"
    assert src.fields[0].attrs["vocabulary"] == ["x, y", "z"]


@pytest.mark.parametrize("value", ["ab", '"', "\n", ""])
def test_bad_delimiter_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"Expected --delimiter to be one character"):
        ReadOptions(delimiter=value)


@pytest.mark.parametrize("value", [-1, True, 1.5])
def test_bad_skip_rows_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"Expected --skip-rows >= 0"):
        ReadOptions(skip_rows=value)


def test_read_options_round_trip() -> None:
    options = ReadOptions(delimiter=r"\t", skip_rows=3, header=False)
    assert options.delimiter == "\t"
    assert ReadOptions.from_dict(options.to_dict()) == options


@pytest.mark.parametrize("quoted", [False, True])
def test_whitespace_to_tabs_keeps_line_breaks(quoted: bool) -> None:
    raw = b' a  b \n\n"x  y"\t\tz \r\n  \n\v1\f\t 2 \r 3  4\rlast '
    out = b'a\tb\n\n"x  y"\tz\r\n\n1\t2\r3\t4\rlast'
    if not quoted:
        raw, out = raw.replace(b'"x  y"', b"xy"), out.replace(b'"x  y"', b"xy")
    assert whitespace_to_tabs(raw) == out


# --- compressed files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(COMPRESS))
@pytest.mark.parametrize("delimiter", [",", ";"])
def test_compressed_csv_by_suffix(tmp_path: Path, suffix: str, delimiter: str) -> None:
    text = "id,size,kind\n1,2.5,x\n2,3.5,y\n".replace(",", delimiter)
    path = write(tmp_path / f"t.csv.{suffix}", COMPRESS[suffix](text.encode()))
    assert detect_format(path) == "csv"
    src = CsvSource(path, ReadOptions())
    assert src.describe()["compression"] == NAMES[suffix]
    assert src.layout.delimiter == delimiter and src.layout.header is True
    assert [s.name for s in src.fields] == ["id", "size", "kind"]
    data = read_all(src)
    np.testing.assert_array_equal(data["id"], [1, 2])
    np.testing.assert_array_equal(data["size"], [2.5, 3.5])
    np.testing.assert_array_equal(data["kind"], [0, 1])


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_compression_is_recognised_by_magic_bytes(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / "misnamed.csv", COMPRESS[suffix](IRIS.encode()))
    src = CsvSource(path, ReadOptions())
    assert src.layout.compression == NAMES[suffix] and src.layout.skip_rows == 1
    assert_iris_values(read_all(src), ["col0", "col1", "col2", "col3", "col4"])


def test_plain_text_named_gz_is_read_as_text(tmp_path: Path) -> None:
    src = CsvSource(write(tmp_path / "t.csv.gz", "a,b\n1,2\n"), ReadOptions())
    assert src.layout.compression is None
    np.testing.assert_array_equal(read_all(src)["b"], [2])


def test_compressed_tsv_and_whitespace(tmp_path: Path) -> None:
    tsv = write(tmp_path / "t.tsv.gz", gzip.compress(b"a,x\tb\n1,5\t2\n"))
    src = CsvSource(tsv, ReadOptions())
    assert src.layout.delimiter == "\t" and src.layout.reasons["delimiter"] == "the .tsv name"
    ws = write(tmp_path / "t.txt.xz", lzma.compress(b"1  2\n3  4\n5 6\n"))
    src = CsvSource(ws, ReadOptions())
    assert src.layout.delimiter == "whitespace"
    np.testing.assert_array_equal(read_all(src)["col1"], [2, 4, 6])


def test_large_compressed_file_streams_past_the_sample(tmp_path: Path) -> None:
    n = 30_000
    body = "".join(f"{i} {i * 0.5}\n" for i in range(n)).encode()
    assert len(body) > 4 * delimited.SAMPLE_BYTES
    path = write(tmp_path / "t.txt.gz", gzip.compress(b"meta 2 x y z\n" + body))
    src = CsvSource(path, ReadOptions())
    assert src.layout.skip_rows == 1 and src.length == n
    data = read_all(src)
    np.testing.assert_array_equal(data["col0"], np.arange(n))
    np.testing.assert_array_equal(data["col1"], np.arange(n) * 0.5)


@pytest.mark.parametrize("cut", [10, 2000])
def test_truncated_gzip_is_refused(tmp_path: Path, cut: int) -> None:
    data = gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * 7) for i in range(50_000)))
    path = write(tmp_path / "t.csv.gz", data[:-cut])
    with pytest.raises(SourceError, match=r"t\.csv\.gz: the gzip data is damaged or truncated"):
        CsvSource(path, ReadOptions())


def test_zstd_needs_a_pyarrow_with_zstd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "t.csv.zst", COMPRESS["zst"](b"a\n1\n"))

    class PyarrowWithoutZstd:
        """pyarrow as built without zstd (pa.Codec.is_available("zstd") is False)."""

        class Codec:
            @staticmethod
            def is_available(name: str) -> bool:
                return name != "zstd"

        def __getattr__(self, name: str) -> Any:
            return getattr(pa, name)

    monkeypatch.setattr(delimited, "pa", PyarrowWithoutZstd())
    with pytest.raises(SourceError, match=r"this pyarrow build cannot decompress zstd"):
        CsvSource(path, ReadOptions())


# --- skip rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_skip_rows_counts_lines(tmp_path: Path, newline: str) -> None:
    lines = ["title, with, 4, commas", "", "a,b", "1,2", "3,4"]
    path = write(tmp_path / "t.csv", newline.join(lines) + newline)
    src = CsvSource(path, ReadOptions(skip_rows=2))
    assert src.layout.header is True and src.layout.reasons["header"] == "line 3 holds no numbers"
    np.testing.assert_array_equal(read_all(src)["b"], [2, 4])


def test_ragged_line_after_skipped_lines_is_located(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "junk\njunk\na,b\n1,2\n3,4\n5\n")
    with pytest.raises(SourceError, match=r"ragged row: line 6 has 1 cells, expected 2"):
        CsvSource(path, ReadOptions(skip_rows=2))


def test_skip_rows_past_the_end(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(SourceError, match=r"--skip-rows 2 skips every line of the file"):
        CsvSource(path, ReadOptions(skip_rows=2))


def test_wide_header_longer_than_the_sample(tmp_path: Path) -> None:
    width = 12_000
    names = ",".join(f"feature_{j}" for j in range(width))
    rows = "".join(",".join(str(i + j) for j in range(width)) + "\n" for i in range(3))
    assert len(names) > delimited.SAMPLE_BYTES
    src = CsvSource(write(tmp_path / "t.csv", names + "\n" + rows), ReadOptions())
    assert src.layout.header is True and src.length == 3
    assert src.fields[-1].name == f"feature_{width - 1}"
    np.testing.assert_array_equal(
        read_all(src)[f"feature_{width - 1}"], [width - 1, width, width + 1]
    )
