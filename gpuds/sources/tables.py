"""CSV and Parquet tables: one field per column, read in two streaming passes.

Both readers stream with bounded memory (pyarrow's streaming CSV reader, one
``ParquetFile.iter_batches`` batch at a time). Opening a table runs **pass 1**, which reads every
selected column once to learn its final type, the row count, how many values are missing and,
for text columns, the distinct values. :meth:`~TableSource.blocks` is **pass 2**; it re-slices
pyarrow's batches so that every block holds exactly ``max_samples`` rows (the last one fewer).

Column to field mapping (the field is named after the column):

========================== ====================================================================
column type                field
========================== ====================================================================
integer (signed, unsigned) same dtype, ``kind="numeric"``; a missing value is stored as 0
float16/32/64              same dtype, ``kind="numeric"``; a missing value is stored as NaN
bool                       ``bool``, ``kind="numeric"``; a missing value is stored as False
string, dictionary         ``int32`` codes into the sorted vocabulary (code-point order),
                           ``kind="category"``, attrs ``{"vocabulary": [...], "missing_code": -1}``;
                           a missing value is code -1
all values missing (null)  a category with an empty vocabulary: every code is -1
timestamp                  ``int64`` nanoseconds since 1970-01-01T00:00:00, ``kind="numeric"``,
                           attrs ``{"unit": "ns", "epoch": ..., "timezone": tz or None}``; a
                           zone-aware timestamp counts UTC nanoseconds, a naive one counts its wall
                           clock as if it were UTC; missing values are 0
date                       ``int32`` days since 1970-01-01, ``kind="numeric"``, attrs
                           ``{"unit": "days", "epoch": "1970-01-01"}``; missing values are 0
anything else              refused (decimal, time of day, binary, list, struct, ...): the error
                           names the column and its type and suggests ``--fields`` to leave it out
========================== ====================================================================

An integer, bool, timestamp or date column that holds missing values gets a companion field
``<column>.missing`` (``bool``, ``kind="mask"``, attrs ``{"mask_of": <column>}``), True where the
value is missing, placed right after its column. The companion exists only when pass 1 found a
missing value, so a complete column never carries an all-False mask. A text column with more than
:data:`MAX_VOCABULARY` distinct values is refused (it is probably free text).

``ReadOptions.fields`` keeps the named columns in the order given. ``ReadOptions.label`` turns one
column into the field ``labels`` (``kind="label"``, ``int64``), placed after the other fields and
never also stored under its own name: a text column becomes codes into its sorted values (attrs
``{"classes": [...]}``), an integer column keeps its values, a bool column becomes 0/1 with
classes ``["false", "true"]``; any other type, or a missing label anywhere, is an error naming the
column (and the first bad data row, counted from 1 after the header).

CSV specifics:

- Layout (:mod:`gpuds.sources.delimited`, rules in docs/ingest.md): gzip, bz2, xz and zstd files
  are decompressed (recognised by their magic bytes); ``ReadOptions.delimiter``, ``skip_rows``
  and ``header`` are used as given, and whatever is not given is decided from the first 64 KiB
  of text: the delimiter by ``csv.Sniffer`` among ``,`` ``;`` tab (``.tsv``: tab), else runs of
  whitespace when they split every line alike; the header is the first row unless it holds a
  number; a first row that holds numbers but does not fit the rows below it (text above numeric
  columns, another number of cells) is metadata and skipped; a column that stays numeric except
  for its first cells is an error naming them. ``describe()`` records what was decided and why.
- Header names are stripped of surrounding whitespace; an empty, duplicate or invalid name is an
  error suggesting ``--no-header`` or a fixed header (an empty or invalid name only when that
  column is selected, so ``--fields`` can leave out, e.g., the unnamed index column that
  ``pandas.DataFrame.to_csv`` writes). Without a header the columns are named ``col0``, ``col1``,
  ...
- Missing values: an empty cell and pyarrow's default null spellings (``NA``, ``N/A``, ``NaN``,
  ``null``, ``NULL``, ``nan``, ``#N/A``, ...) are missing in every column, text columns included.
- Types: pyarrow infers each column's type from the first block (:data:`CSV_BLOCK_SIZE` bytes).
  When a later block does not fit, pass 1 widens that column (no values → int64 → float64 →
  string; any other type → string) and starts again, until the whole file converts. Values that
  cannot be stored (a timestamp beyond the nanosecond range, an unsigned label above 2**63 - 1)
  are found in pass 1 too.
- Quoted values may span lines (not in whitespace-separated files). A row with the wrong number
  of cells is an error naming its line. The file must be UTF-8 (a leading byte-order mark is
  ignored).

Parquet specifics: the file's own column types are used (dictionary-encoded text, e.g. pandas
categoricals, becomes a category field). Page checksums are verified where the writer stored
them; a file that cannot be decoded is an error naming it. Columns pandas writes for a
non-default index (``__index_level_0__``, ...) are not data and are left out; ``metadata()``
lists them under ``ignored_columns``.
"""

from __future__ import annotations

import lzma
import re
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from gpuds.errors import SourceError
from gpuds.sources.base import (
    WHITESPACE,
    FieldSpec,
    ReadOptions,
    Source,
    check_field_name,
    select_fields,
)
from gpuds.sources.delimited import damaged, decide_layout, open_data, open_rows, read_ragged
from gpuds.storage import Location

__all__ = [
    "CSV_BLOCK_SIZE",
    "MAX_VOCABULARY",
    "PARQUET_BATCH_ROWS",
    "CsvSource",
    "ParquetSource",
    "TableSource",
]

CSV_BLOCK_SIZE = 1 << 20
"""Bytes per pyarrow CSV block; also how much of the file decides the inferred column types."""

PARQUET_BATCH_ROWS = 65_536
"""Rows per Parquet record batch read."""

MAX_VOCABULARY = 1_000_000
"""Most distinct values a text column may hold before it is refused as free text."""

EPOCH = "1970-01-01T00:00:00"
LABEL_FIELD = "labels"
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_CONVERSION = re.compile(
    r"In CSV column #(\d+): .*?CSV conversion error to \S+?: invalid value '(.*)'", re.DOTALL
)
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")

_Mode = Literal[
    "integer", "float", "bool", "category", "timestamp", "date", "label_codes", "label_int"
]


def _decoded(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        return arr.dictionary_decode()
    return arr


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_text(t: pa.DataType) -> bool:
    t = _value_type(t)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


class _Column:
    """One table column: what pass 1 learned about it, and how pass 2 turns it into fields."""

    def __init__(self, name: str, key: str, where: str, *, label: bool = False) -> None:
        self.name = name
        self.key = key
        self.where = where
        self.label = label
        self.type: pa.DataType = pa.null()
        self.nulls = 0
        self.first_null: int | None = None
        self.distinct: set[str] = set()
        self.specs: list[FieldSpec] = []
        self._mode: _Mode = "category"
        self._vocabulary = pa.array([], pa.large_string())

    def reset(self, dtype: pa.DataType) -> None:
        self.type = dtype
        self.nulls = 0
        self.first_null = None
        self.distinct = set()

    def observe(self, arr: pa.Array, offset: int) -> None:
        """Pass 1: count missing values and collect distinct text values."""
        t = _value_type(arr.type)
        # Casts that can fail run here too, so that a bad value stops the read before pass 2.
        if pa.types.is_timestamp(t) and t.unit != "ns":
            self._cast(_decoded(arr), pa.timestamp("ns", t.tz))
        elif self.label and pa.types.is_uint64(t):
            self._cast(_decoded(arr), pa.int64())
        if arr.null_count:
            if self.first_null is None:
                self.first_null = offset + int(pc.index(arr.is_null(), True).as_py())
            self.nulls += arr.null_count
        if _is_text(arr.type):
            values = pc.unique(_decoded(arr)).drop_null().to_pylist()
            self.distinct.update(values)
            if len(self.distinct) > MAX_VOCABULARY:
                raise SourceError(
                    f"{self.where}: column {self.name!r} holds more than {MAX_VOCABULARY:,} "
                    "distinct values (probably free text, not a category); leave it out with "
                    "--fields"
                )

    def plan(self) -> None:
        """After pass 1: decide the stored field(s) from the final type."""
        t = _value_type(self.type)
        if self.label:
            self._plan_label(t)
            return
        name = self.name
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            self._mode = "integer"
            if pa.types.is_floating(t):
                self._mode = "float"
            elif pa.types.is_boolean(t):
                self._mode = "bool"
            value = FieldSpec(name, np.dtype(t.to_pandas_dtype()), (), "numeric")
        elif _is_text(t) or pa.types.is_null(t):
            self._mode = "category"
            vocabulary = sorted(self.distinct)
            self._vocabulary = pa.array(vocabulary, pa.large_string())
            attrs = {"vocabulary": vocabulary, "missing_code": -1}
            value = FieldSpec(name, np.dtype(np.int32), (), "category", attrs)
        elif pa.types.is_timestamp(t):
            self._mode = "timestamp"
            attrs = {"unit": "ns", "epoch": EPOCH, "timezone": t.tz}
            value = FieldSpec(name, np.dtype(np.int64), (), "numeric", attrs)
        elif pa.types.is_date(t):
            self._mode = "date"
            attrs = {"unit": "days", "epoch": EPOCH[:10]}
            value = FieldSpec(name, np.dtype(np.int32), (), "numeric", attrs)
        else:
            raise SourceError(self._unsupported(t))
        self.specs = [value]
        if self.nulls and self._mode not in ("float", "category"):
            mask = FieldSpec(self.mask_name, np.dtype(bool), (), "mask", {"mask_of": name})
            self.specs.append(mask)

    @property
    def mask_name(self) -> str:
        return f"{self.name}.missing"

    def _plan_label(self, t: pa.DataType) -> None:
        attrs: dict[str, Any] = {}
        if _is_text(t):
            self._mode = "label_codes"
            vocabulary = sorted(self.distinct)
            self._vocabulary = pa.array(vocabulary, pa.large_string())
            attrs = {"classes": vocabulary}
        elif pa.types.is_integer(t):
            self._mode = "label_int"
        elif pa.types.is_boolean(t):
            self._mode = "label_int"
            attrs = {"classes": ["false", "true"]}
        else:
            raise SourceError(
                f"{self.where}: label column must be integer or categorical, but column "
                f"{self.name!r} holds {t} values; pick another --label or store it as a field"
            )
        if self.first_null is not None:
            raise SourceError(
                f"{self.where}: label column {self.name!r} has {self.nulls} missing value(s), the "
                f"first in data row {self.first_null + 1}; fill them in or drop those rows"
            )
        self.specs = [FieldSpec(LABEL_FIELD, np.dtype(np.int64), (), "label", attrs)]

    def _unsupported(self, t: pa.DataType) -> str:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            found = "binary data (in a CSV: text that is not valid UTF-8)"
        else:
            found = f"type {t}"
        return (
            f"{self.where}: column {self.name!r} holds {found}, which gpuds cannot store; "
            "leave it out with --fields (list the columns to keep)"
        )

    def convert(self, arr: pa.Array) -> dict[str, np.ndarray]:
        """Pass 2: this column's share of one batch, as arrays of the planned fields."""
        arr = _decoded(arr)
        value = self.specs[0]
        if self.label and arr.null_count:
            raise self._changed()
        if self._mode in ("category", "label_codes"):
            out = self._codes(arr)
        elif self._mode == "float":
            out = arr.to_numpy(zero_copy_only=False)
        elif self._mode == "label_int":
            out = self._cast(arr, pa.int64()).to_numpy(zero_copy_only=False)
        else:
            if self._mode == "timestamp":
                arr = self._cast(arr, pa.timestamp("ns", arr.type.tz)).cast(pa.int64())
            elif self._mode == "date":
                # date64 counts milliseconds of whole days, so truncating to days loses nothing.
                arr = arr.cast(pa.date32(), safe=False).cast(pa.int32())
            if arr.null_count and len(self.specs) == 1:
                raise self._changed()
            filled = arr.fill_null(False if self._mode == "bool" else 0)
            out = filled.to_numpy(zero_copy_only=False)
        block = {value.name: np.asarray(out, dtype=value.dtype)}
        if len(self.specs) > 1:
            block[self.mask_name] = arr.is_null().to_numpy(zero_copy_only=False)
        return block

    def _codes(self, arr: pa.Array) -> np.ndarray:
        if pa.types.is_null(arr.type):
            return np.full(len(arr), -1, dtype=np.int32)
        codes = pc.index_in(arr.cast(pa.large_string()), value_set=self._vocabulary)
        if codes.null_count != arr.null_count:
            raise self._changed()
        return np.asarray(codes.fill_null(-1).to_numpy(zero_copy_only=False))

    def _cast(self, arr: pa.Array, target: pa.DataType) -> pa.Array:
        try:
            return arr.cast(target)
        except pa.ArrowInvalid as e:
            raise SourceError(
                f"{self.where}: column {self.name!r} has a value that does not fit {target} ({e})"
            ) from e

    def _changed(self) -> SourceError:
        return SourceError(
            f"{self.where}: column {self.name!r} holds values the first pass did not see; "
            "the file changed while it was being read, so read it again"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "type": str(self.type),
            "dtype": str(self.specs[0].dtype),
            "kind": self.specs[0].kind,
            "nulls": self.nulls,
        }


class TableSource(Source):
    """Shared machinery of :class:`CsvSource` and :class:`ParquetSource`.

    Subclasses find the column names, call :meth:`_select`, run pass 1 (:meth:`_scan`) over their
    record batches and then :meth:`_plan`; :meth:`_batches` yields the record batches of pass 2.
    """

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        self._columns: list[_Column] = []
        self._rows = 0
        self._ignored: list[str] = []

    @abstractmethod
    def _batches(self) -> Iterator[pa.RecordBatch]:
        """Record batches of the selected columns, with their final types."""

    def _select(self, names: Sequence[str], keys: Sequence[str]) -> None:
        """Pick the columns to read: the selected ones, then the label column."""
        where = str(self.path)
        label = self.options.label
        if label is not None and label not in names:
            raise SourceError(
                f"{where}: no label column {label!r}; columns: {', '.join(names) or '(none)'}"
            )
        wanted = self.options.fields
        if wanted is not None and label is not None:
            wanted = tuple(w for w in wanted if w != label)
        features = [n for n in names if n != label] if wanted is None else names
        chosen = select_fields(features, wanted, where, strict=self.options.strict_fields)
        key_of = dict(zip(names, keys, strict=True))
        self._columns = [_Column(n, key_of[n], where) for n in chosen]
        if label is not None:
            self._columns.append(_Column(label, key_of[label], where, label=True))

    def _scan(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Pass 1 over ``batches``; the columns must have been reset to the batches' types."""
        rows = 0
        for batch in batches:
            for column in self._columns:
                column.observe(batch.column(column.key), rows)
            rows += batch.num_rows
        self._rows = rows

    def _plan(self) -> None:
        for column in self._columns:
            column.plan()
        seen: dict[str, str] = {}
        for column in self._columns:
            for spec in column.specs:
                if spec.kind != "label":
                    check_field_name(spec.name, f"{self.path} column {column.name!r}")
                if spec.name in seen:
                    raise SourceError(
                        f"{self.path}: column {column.name!r} would be stored as field "
                        f"{spec.name!r}, which column {seen[spec.name]!r} already gives; "
                        "rename one column or leave one out with --fields"
                    )
                seen[spec.name] = column.name

    @property
    def fields(self) -> list[FieldSpec]:
        return [spec for column in self._columns for spec in column.specs]

    @property
    def length(self) -> int:
        return self._rows

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        if max_samples < 1:
            raise ValueError(f"Expected max_samples >= 1, got {max_samples}")
        if self._columns:
            yield from _rebatch(self._converted(), max_samples)

    def _converted(self) -> Iterator[dict[str, np.ndarray]]:
        rows = 0
        for batch in self._batches():
            block: dict[str, np.ndarray] = {}
            for column in self._columns:
                block.update(column.convert(batch.column(column.key)))
            rows += batch.num_rows
            yield block
        if rows != self._rows:
            raise SourceError(
                f"{self.path}: read {rows} rows but the first pass counted {self._rows}; "
                "the file changed while it was being read, so read it again"
            )

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "rows": self._rows,
            "columns": {c.name: c.describe() for c in self._columns},
            "vocabularies": {
                spec.name: spec.attrs["vocabulary"]
                for spec in self.fields
                if spec.kind == "category"
            },
        }
        if self.options.label is not None:
            meta["label_column"] = self.options.label
        if self._ignored:
            meta["ignored_columns"] = list(self._ignored)
        return meta

    def describe(self) -> dict[str, Any]:
        """Provenance plus the fields by kind (``numeric``, ``category``, ``label``, ``mask``)."""
        kinds: dict[str, list[str]] = {}
        for spec in self.fields:
            kinds.setdefault(spec.kind, []).append(spec.name)
        return {**super().describe(), "rows": self._rows, "kinds": kinds}


class CsvSource(TableSource):
    """A CSV (or TSV, or whitespace-separated) file, plain or compressed: one field per column,
    see the module documentation for the rules. :attr:`layout` says how the file was read.

    Parameters
    ----------
    path
        The ``.csv`` / ``.tsv`` file (UTF-8), possibly gzip, bz2, xz or zstd compressed.
    options
        ``fields`` (columns to keep), ``label``, and ``delimiter``, ``skip_rows``, ``header``
        (each None to guess).

    Examples
    --------
    >>> src = CsvSource(Path("iris.csv"), ReadOptions(label="species"))  # doctest: +SKIP
    >>> [f.name for f in src.fields]                                     # doctest: +SKIP
    ['sepal_length', 'sepal_width', 'petal_length', 'petal_width', 'labels']
    >>> src.layout.header, src.layout.reasons["header"]                  # doctest: +SKIP
    (True, 'line 1 holds no numbers')
    """

    format = "csv"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            empty = (path.size() if isinstance(path, Location) else path.stat().st_size) == 0
        except OSError as e:
            raise SourceError(f"{path}: cannot read ({e.strerror or e})") from e
        if empty:
            raise SourceError(f"{path}: the file is empty; a CSV needs at least one row")
        self.layout = decide_layout(path, options)
        self._keys: list[str] = []
        with self._open({}, None) as reader:
            self._keys = reader.schema.names
        keys = self._keys
        header = self.layout.header
        names = self._header_names(keys) if header else [f"col{i}" for i in range(len(keys))]
        self._select(names, keys)
        self._types = self._scan_widening()
        self._plan()

    def stream_only(self) -> str:
        return (
            "a CSV file is parsed front to back (where a row starts is known only by parsing "
            "all that comes before it)"
        )

    def _header_names(self, raw: Sequence[str]) -> list[str]:
        names = [name.strip() for name in raw]
        wanted = self.options.fields
        selected = set(names if wanted is None else wanted) | {self.options.label}
        seen: dict[str, int] = {}
        for position, name in enumerate(names, start=1):
            if name in seen:
                raise SourceError(
                    f"{self.path}: header names columns {seen[name]} and {position} both "
                    f"{name!r}; fix the header, or pass --no-header if the first row is data"
                )
            seen[name] = position
            if name not in selected:
                continue
            if not name:
                raise SourceError(
                    f"{self.path}: column {position} has an empty header name; fix the header, "
                    "leave the column out with --fields, or pass --no-header if the first row is "
                    "data"
                )
            try:
                check_field_name(name, f"{self.path} header column {position}")
            except SourceError as e:
                raise SourceError(f"{e}; or pass --no-header if the first row is data") from e
        return names

    @contextmanager
    def _open(
        self, types: dict[str, pa.DataType], include: Sequence[str] | None
    ) -> Iterator[pa_csv.CSVStreamingReader]:
        layout = self.layout
        with self._arrow_errors(), open_data(self.path, layout) as stream:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(
                    block_size=CSV_BLOCK_SIZE,
                    skip_rows=layout.skip_rows,
                    autogenerate_column_names=not layout.header,
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=layout.parse_delimiter,
                    quote_char=layout.quote,
                    newlines_in_values=True,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=types,
                    include_columns=list(include) if include is not None else None,
                    strings_can_be_null=True,
                ),
            )
            with reader:
                yield reader

    def _scan_widening(self) -> dict[str, pa.DataType]:
        """Pass 1, again with a wider type each time a column does not convert."""
        include = [c.key for c in self._columns]
        types: dict[str, pa.DataType] = {}
        while True:
            with self._open(types, include) as reader:
                schema = reader.schema
                for column in self._columns:
                    column.reset(schema.field(column.key).type)
                try:
                    self._scan(reader)
                    return {f.name: f.type for f in schema}
                except pa.ArrowInvalid as e:
                    match = _CONVERSION.search(str(e))
                    if match is None:
                        raise
                    key = self._keys[int(match.group(1))]
                    wider = _wider(schema.field(key).type, match.group(2))
                    if wider is None:
                        raise
                    types = {f.name: f.type for f in schema}
                    types[key] = wider

    def _batches(self) -> Iterator[pa.RecordBatch]:
        with self._open(self._types, [c.key for c in self._columns]) as reader:
            yield from reader

    @contextmanager
    def _arrow_errors(self) -> Iterator[None]:
        """Turn pyarrow's CSV errors into one-line messages naming the file (and line or column)."""
        try:
            yield
        except (pa.ArrowException, OSError, EOFError, lzma.LZMAError) as e:
            raise self._error(e) from e

    def _error(self, exc: Exception) -> SourceError:
        message = str(exc).strip()
        if "Empty CSV file" in message:
            return SourceError(f"{self.path}: the file holds no rows")
        if "Expected" in message and "columns, got" in message:
            where = self._locate_ragged_row() or message
            return SourceError(
                f"{self.path}: ragged row: {where}; every row needs as many cells as the first "
                f"(cells split at {self._split_at()}: pass --delimiter if that is wrong)"
            )
        if isinstance(exc, (OSError, EOFError, lzma.LZMAError)):
            # Not a parse error (those are ArrowInvalid): the bytes could not be read.
            return SourceError(damaged(self.path, self.layout.compression, exc))
        match = re.search(r"CSV column #(\d+)", message)
        column = next(
            (c.name for c in self._columns if match and c.key == self._keys[int(match.group(1))]),
            None,
        )
        if "invalid UTF8" in message:
            return SourceError(
                f"{self.path}: column {column!r} holds text that is not valid UTF-8; convert the "
                "file to UTF-8 or leave the column out with --fields"
            )
        where = f"column {column!r}: " if column is not None else ""
        return SourceError(f"{self.path}: cannot read the CSV ({where}{message})")

    def _locate_ragged_row(self) -> str:
        """Find the first row whose cell count differs from the first row's (error path only)."""
        try:
            with open_rows(self.path, self.layout) as (reader, line):
                return read_ragged(reader, line)
        except (OSError, EOFError, lzma.LZMAError):
            return ""

    def _split_at(self) -> str:
        delimiter = self.layout.delimiter
        return "runs of whitespace" if delimiter == WHITESPACE else repr(delimiter)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.layout.to_dict()}


class ParquetSource(TableSource):
    """A Parquet file: one field per top-level column, see the module documentation for the rules.

    Parameters
    ----------
    path
        The ``.parquet`` file.
    options
        ``fields`` (columns to keep) and ``label``.

    Examples
    --------
    >>> src = ParquetSource(Path("table.parquet"), ReadOptions(fields=("x", "y")))  # doctest: +SKIP
    >>> [f.name for f in src.fields]                                             # doctest: +SKIP
    ['x', 'y']
    """

    format = "parquet"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        try:
            # Pages carry CRCs only when the writer added them; those that do are checked. An
            # object store's file is read by ranged requests (footer, then the row groups).
            source = path.open("rb") if isinstance(path, Location) else path
            self._file = pq.ParquetFile(source, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"{path}: not a readable Parquet file ({e})") from e
        try:
            self._scan_file()
        except BaseException:
            self._file.close()
            raise

    def _scan_file(self) -> None:
        path = self.path
        schema = self._file.schema_arrow
        names = [n for n in schema.names if not _PANDAS_INDEX.fullmatch(n)]
        self._ignored = [n for n in schema.names if _PANDAS_INDEX.fullmatch(n)]
        if not names:
            raise SourceError(f"{path}: the Parquet file has no columns")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SourceError(
                f"{path}: column name(s) {', '.join(map(repr, duplicates))} appear more than "
                "once; rewrite the file with distinct column names"
            )
        self._select(names, names)
        for column in self._columns:
            column.reset(schema.field(column.key).type)
        self._scan(self._batches())
        self._plan()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._file.iter_batches(
                batch_size=PARQUET_BATCH_ROWS,
                columns=[c.key for c in self._columns],
                use_pandas_metadata=False,
            )
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"{self.path}: cannot read the Parquet data ({e})") from e

    def stream_only(self) -> str:
        return "a Parquet file is read in one stream of row groups"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "row_groups": self._file.num_row_groups}

    def close(self) -> None:
        self._file.close()


def _wider(current: pa.DataType, value: str) -> pa.DataType | None:
    """The next CSV column type that may hold ``value``, or None when there is none."""
    if pa.types.is_null(current) and _INTEGER.fullmatch(value):
        return pa.int64()
    if (pa.types.is_null(current) or pa.types.is_integer(current)) and _is_float(value):
        return pa.float64()
    if pa.types.is_string(current) or pa.types.is_large_string(current):
        return None
    return pa.string()


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _rebatch(
    parts: Iterator[dict[str, np.ndarray]], max_samples: int
) -> Iterator[dict[str, np.ndarray]]:
    """Regroup blocks of any size into blocks of exactly ``max_samples`` rows (the last fewer)."""
    pending: list[dict[str, np.ndarray]] = []
    held = 0
    for part in parts:
        rows = len(next(iter(part.values())))
        if rows == 0:
            continue
        pending.append(part)
        held += rows
        while held >= max_samples:
            block, pending = _take(pending, max_samples)
            held -= max_samples
            yield block
    if held:
        yield _take(pending, held)[0]


def _take(
    pending: list[dict[str, np.ndarray]], count: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    pieces: list[dict[str, np.ndarray]] = []
    need = count
    for i, part in enumerate(pending):
        rows = len(next(iter(part.values())))
        if rows > need:
            pieces.append({k: v[:need] for k, v in part.items()})
            rest = [{k: v[need:] for k, v in part.items()}, *pending[i + 1 :]]
            break
        pieces.append(part)
        need -= rows
        if need == 0:
            rest = pending[i + 1 :]
            break
    if len(pieces) == 1:
        return pieces[0], rest
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}, rest
