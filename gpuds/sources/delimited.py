"""Delimited text (CSV, TSV, whitespace-separated): how to open it and how it is laid out.

:func:`decide_layout` reads the first :data:`SAMPLE_BYTES` of *decompressed* text and settles
the compression (from the magic bytes), the delimiter and quote character (``csv.Sniffer``),
how many leading lines to skip and whether the next row holds the column names. What the user
passed (``delimiter``, ``skip_rows``, ``header``) always wins; every guess carries the reason
shown to the user and recorded in the store. The rules are in docs/ingest.md ("CSV layout").

:func:`open_data` then yields the bytes pyarrow's CSV reader parses: decompressed and, for
whitespace-separated files, with each run of spaces and tabs between cells turned into one tab.
"""

from __future__ import annotations

import csv
import io
import lzma
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from gpuds.errors import SourceError
from gpuds.sources.base import WHITESPACE, ReadOptions
from gpuds.storage import Location

__all__ = [
    "COMPRESSIONS",
    "MAX_SAMPLE_BYTES",
    "SAMPLE_BYTES",
    "SAMPLE_LINES",
    "SNIFF_BYTES",
    "Layout",
    "compression_of",
    "damaged",
    "decide_layout",
    "open_data",
    "open_rows",
    "read_ragged",
    "whitespace_to_tabs",
]

SAMPLE_BYTES = 1 << 16
"""Decompressed bytes read to decide the layout (the rows in it are checked for consistency)..."""

SAMPLE_LINES = 20
"""... or more, up to :data:`MAX_SAMPLE_BYTES`, until the sample holds this many whole lines."""

MAX_SAMPLE_BYTES = 1 << 24
"""The most a sample grows to for lines that long."""

SNIFF_BYTES = 4096
"""Bytes given to ``csv.Sniffer``: its quote search takes time quadratic in the sample."""

COMPRESSIONS = ("gzip", "bz2", "xz", "zstd")
"""Compressions read, recognised by their magic bytes whatever the file is called."""

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?inf(inity)?", re.IGNORECASE)
_NULLS = frozenset(pa_csv.ConvertOptions().null_values)
_NEWLINE = re.compile(rb"\r\n|\r|\n")
_TO_SPACE = bytes.maketrans(b"\t\f\v", b"   ")
_QUOTED_OR_RUN = re.compile(rb'("[^"\r\n]*")|[ \t\f\v]+')
_EDGES = re.compile(rb"^\t|\t(?=[\r\n]|\Z)|(?<=\r)\t", re.MULTILINE)
_BOM = b"\xef\xbb\xbf"
_READ = 1 << 16
_SHOWN_CELLS = 3


def compression_of(path: Path | Location) -> str | None:
    """The compression of ``path`` from its first bytes (one of :data:`COMPRESSIONS`), or None."""
    try:
        with path.open("rb") as fh:
            head = fh.read(10)
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror or e})") from e
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    # "BZh", the block size digit, then the magic of a first block or of an empty stream.
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return None


def _open_binary(path: Path | Location, compression: str | None) -> Any:
    """The decompressed bytes of ``path`` as a readable binary stream (pyarrow's or Python's);
    an object in an object store is read by ranged requests as the parser asks."""
    if compression == "xz":
        return lzma.open(path.open("rb") if isinstance(path, Location) else path, "rb")
    if compression is not None and not pa.Codec.is_available(compression):
        raise SourceError(
            f"{path}: this pyarrow build cannot decompress {compression}; decompress the file "
            "first or install a pyarrow wheel from PyPI (they include it)"
        )
    if isinstance(path, Location):
        raw: Any = pa.PythonFile(path.open("rb"), mode="r")
    else:
        raw = pa.OSFile(str(path))
    return raw if compression is None else pa.CompressedInputStream(raw, compression)


def whitespace_to_tabs(lines: bytes) -> bytes:
    """Whole lines whose cells are separated by runs of whitespace, with one tab between cells.

    Leading and trailing whitespace goes; a double-quoted cell keeps its spaces; line breaks stay.

    >>> whitespace_to_tabs(b'  5   162 60 \\r\\n"New York"  7\\n')
    b'5\\t162\\t60\\r\\n"New York"\\t7\\n'
    """
    if b'"' in lines:
        return _EDGES.sub(b"", _QUOTED_OR_RUN.sub(lambda m: m.group(1) or b"\t", lines))
    # bytes methods run at memory speed where a regular expression takes ~15x longer.
    out = lines.translate(_TO_SPACE)
    while b"  " in out:
        out = out.replace(b"  ", b" ")
    for edge in (b" \n", b" \r", b"\n ", b"\r "):
        out = out.replace(edge, edge.strip(b" "))
    return out.removeprefix(b" ").removesuffix(b" ").replace(b" ", b"\t")


class _WhitespaceToTabs(io.RawIOBase):
    """A binary stream of lines with :func:`whitespace_to_tabs` applied, line for line."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw
        self._rest = b""
        self._out = b""
        self._pos = 0
        self._start = True
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos == len(self._out) and not self._eof:
            chunk = self._raw.read(_READ)
            if self._start:
                chunk = chunk.removeprefix(_BOM)
                self._start = False
            data = self._rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                data, self._rest = data[:cut], data[cut:]
            else:
                self._eof, self._rest = True, b""
            self._out, self._pos = whitespace_to_tabs(data), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


@dataclass(frozen=True)
class Layout:
    """How a delimited file is laid out, and why each part was chosen.

    ``delimiter`` is one character or :data:`~gpuds.sources.base.WHITESPACE`; ``skip_rows``
    counts physical lines (blank ones included) before the header or the first data row;
    ``reasons`` maps ``delimiter``, ``skip_rows`` and ``header`` to why they were chosen.
    """

    compression: str | None
    delimiter: str
    quote: str
    skip_rows: int
    header: bool
    reasons: dict[str, str]

    @property
    def parse_delimiter(self) -> str:
        """The delimiter of the bytes :func:`open_data` yields."""
        return "\t" if self.delimiter == WHITESPACE else self.delimiter

    def to_dict(self) -> dict[str, Any]:
        return {
            "compression": self.compression,
            "delimiter": self.delimiter,
            "quote": self.quote,
            "skip_rows": self.skip_rows,
            "header": self.header,
            "decided": dict(self.reasons),
        }


@contextmanager
def open_data(path: Path | Location, layout: Layout) -> Iterator[Any]:
    """The bytes to parse with ``layout.parse_delimiter``: decompressed, whitespace runs as tabs."""
    stream = _open_binary(path, layout.compression)
    if layout.delimiter == WHITESPACE:
        stream = _WhitespaceToTabs(stream)
    try:
        yield stream
    finally:
        stream.close()


@contextmanager
def open_rows(
    path: Path | Location, layout: Layout
) -> Iterator[tuple[Iterator[list[str]], Callable[[], int]]]:
    """Python's ``csv.reader`` over the data rows' text (after ``skip_rows`` lines).

    Yields the reader and a function giving the (1-based) line of the file the reader is at.
    """
    with open_data(path, layout) as stream:
        buffered = io.BufferedReader(stream) if isinstance(stream, io.RawIOBase) else stream
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="replace", newline="")
        for _ in range(layout.skip_rows):
            text.readline()
        reader = csv.reader(text, delimiter=layout.parse_delimiter, quotechar=layout.quote)
        yield reader, lambda: layout.skip_rows + reader.line_num


def decide_layout(path: Path | Location, options: ReadOptions) -> Layout:
    """Decide how ``path`` is laid out, from ``options`` and the first lines of its text.

    Examples
    --------
    >>> layout = decide_layout(Path("iris.csv.gz"), ReadOptions())     # doctest: +SKIP
    >>> layout.skip_rows, layout.header, layout.reasons["skip_rows"]   # doctest: +SKIP
    (1, False, "line 1 is metadata, not column names or data: it holds numbers and ...")
    """
    compression = compression_of(path)
    skip = options.skip_rows or 0
    try:
        with _open_binary(path, compression) as stream:
            sample, complete = _sample(stream, skip)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise SourceError(damaged(path, compression, e)) from e
    if skip and not sample and complete:
        raise SourceError(f"{path}: --skip-rows {skip} skips every line of the file")
    text = sample.decode("utf-8", errors="replace")
    delimiter, quote, why_delimiter = _delimiter(text, complete, options, _is_tsv(path))
    if delimiter == WHITESPACE:
        sample = whitespace_to_tabs(sample)
        text = sample.decode("utf-8", errors="replace")
    rows = _rows(text, "\t" if delimiter == WHITESPACE else delimiter, quote, skip, complete)
    decided = _Decider(path, options, rows, delimiter).decide()
    reasons = {"delimiter": why_delimiter, **decided.reasons}
    return Layout(compression, delimiter, quote, decided.skip, decided.header, reasons)


def damaged(path: Path | Location, compression: str | None, exc: BaseException) -> str:
    """The message for a file that cannot be read or decompressed."""
    detail = str(exc).strip() or type(exc).__name__
    if compression is None:
        return f"{path}: cannot read ({detail})"
    return f"{path}: the {compression} data is damaged or truncated ({detail})"


def _is_tsv(path: Path | Location) -> bool:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    return bool(suffixes) and (suffixes[-1] == ".tsv" or suffixes[0] == ".tsv")


def _sample(stream: Any, skip: int) -> tuple[bytes, bool]:
    """The sample after ``skip`` lines, and whether it is all there is: :data:`SAMPLE_BYTES`, or
    more (wide tables) until it holds :data:`SAMPLE_LINES` lines or :data:`MAX_SAMPLE_BYTES`."""
    data = _skip_lines(stream, skip) if skip else stream.read(len(_BOM)).removeprefix(_BOM)
    chunks = [data]
    size, lines = len(data), len(_NEWLINE.findall(data))
    while size <= SAMPLE_BYTES or (lines < SAMPLE_LINES and size <= MAX_SAMPLE_BYTES):
        chunk = stream.read(_READ)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size, lines = size + len(chunk), lines + len(_NEWLINE.findall(chunk))
    return b"".join(chunks), False


def _skip_lines(stream: Any, skip: int) -> bytes:
    """Read past ``skip`` lines (``\\n``, ``\\r\\n`` or ``\\r``, as pyarrow counts them); return
    what was read after them."""
    carry = b""
    lines = 0
    while chunk := stream.read(_READ):
        data = carry + chunk
        for match in _NEWLINE.finditer(data):
            if match.group() == b"\r" and match.end() == len(data):
                break  # maybe the first half of "\r\n": decided with the next chunk
            lines += 1
            if lines == skip:
                return data[match.end() :]
        carry = b"\r" if data.endswith(b"\r") else b""
    return b""


def _delimiter(text: str, complete: bool, options: ReadOptions, tsv: bool) -> tuple[str, str, str]:
    """The delimiter, the quote character and why."""
    head = text[:SNIFF_BYTES]
    if len(text) > SNIFF_BYTES or not complete:
        cut = head.rfind("\n")
        head = head[: cut + 1] if cut > 0 else head
    if options.delimiter is not None:
        given = options.delimiter
        quote = _sniff(head, given)[1] if given != WHITESPACE else '"'
        return given, quote, "--delimiter"
    if tsv:
        return "\t", _sniff(head, "\t")[1], "the .tsv name"
    delimiter, quote = _sniff(head, ",;\t")
    if not delimiter:
        # A title or metadata line can hide the delimiter from the sniffer: try without it.
        delimiter, quote = _sniff(head.partition("\n")[2], ",;\t")
    if delimiter:
        return delimiter, quote, "sniffed"
    if _whitespace_separated(head):
        return WHITESPACE, '"', "no , ; or tab, and every line splits at runs of spaces"
    return ",", '"', "no , ; or tab: one column"


def _sniff(head: str, delimiters: str) -> tuple[str, str]:
    """``csv.Sniffer``'s delimiter (one of ``delimiters``, "" when it finds none) and quote."""
    try:
        dialect = csv.Sniffer().sniff(head, delimiters=delimiters)
    except csv.Error:
        return "", '"'
    quote = dialect.quotechar if dialect.quotechar in ("'", '"') else '"'
    return (dialect.delimiter if dialect.delimiter in delimiters else ""), quote


def _whitespace_separated(head: str) -> bool:
    """Every line after the first splits at runs of whitespace into the same number (2 or more)
    of cells (the first line may differ: it is checked later as a possible title)."""
    converted = whitespace_to_tabs(head.encode()).decode()
    counts = [len(cells) for cells in csv.reader(io.StringIO(converted), delimiter="\t") if cells]
    if not counts:
        return False
    rest = counts[1:] or counts
    return rest[0] >= 2 and len(set(rest)) == 1


@dataclass(frozen=True)
class _Row:
    first_line: int  # 1-based line of the file where the row starts
    last_line: int
    cells: list[str]

    def shown(self, delimiter: str) -> str:
        sep = " " if delimiter == WHITESPACE else delimiter
        text = sep.join(self.cells)
        return repr(text if len(text) <= 40 else text[:39] + "…")


def _rows(text: str, delimiter: str, quote: str, skip: int, complete: bool) -> list[_Row]:
    """The non-blank rows of ``text`` (which starts after ``skip`` lines); the last one is left
    out when the text was cut short."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quote)
    rows: list[_Row] = []
    last = 0
    try:
        for cells in reader:
            if cells:
                rows.append(_Row(skip + last + 1, skip + reader.line_num, cells))
            last = reader.line_num
    except csv.Error:
        complete = False
    if not complete and rows:
        rows.pop()
    return rows


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _is_number(cell: str) -> bool:
    return _NUMBER.fullmatch(cell.strip()) is not None


def _is_missing(cell: str) -> bool:
    return cell.strip() in _NULLS


def _holds_number(row: _Row) -> bool:
    return any(_is_number(cell) for cell in row.cells)


@dataclass(frozen=True)
class _Odd:
    """A column that is numeric but for its first cell(s)."""

    column: int
    cells: list[tuple[int, str]]  # (line, text)


def _numeric_but_first(rows: Sequence[_Row]) -> list[_Odd]:
    """Columns whose text cells all come before their numbers (and are not more than them)."""
    found: list[_Odd] = []
    for j in range(max((len(r.cells) for r in rows), default=0)):
        text: list[tuple[int, str]] = []
        numbers = 0
        for row in rows:
            if j >= len(row.cells) or _is_missing(row.cells[j]):
                continue
            if _is_number(row.cells[j]):
                numbers += 1
            elif numbers:
                break  # text after numbers: a text column, not a numeric one
            else:
                text.append((row.first_line, row.cells[j]))
        else:
            if text and numbers >= len(text):
                found.append(_Odd(j, text))
    return found


@dataclass(frozen=True)
class _Ragged:
    row: _Row
    expected: int


@dataclass(frozen=True)
class _Decision:
    skip: int
    header: bool
    reasons: dict[str, str]


class _Decider:
    """Picks ``skip_rows`` and ``header`` so that the data rows are consistent (docs/ingest.md)."""

    def __init__(
        self, path: Path | Location, options: ReadOptions, rows: list[_Row], delimiter: str
    ) -> None:
        self.path = path
        self.options = options
        self.rows = rows
        self.delimiter = delimiter

    def decide(self) -> _Decision:
        options, rows = self.options, self.rows
        base = options.skip_rows or 0
        skip_reason = "--skip-rows" if options.skip_rows is not None else "no metadata line"
        if not rows:
            header = bool(options.header)
            return _Decision(base, header, self._reasons(skip_reason, header, None))
        header = self._header(rows[0])
        problem = self._problem(rows, header)
        if problem is None or (options.skip_rows is not None and options.header is not None):
            return _Decision(base, header, self._reasons(skip_reason, header, rows[0]))
        # Line 1 holding a number cannot be column names; if the rows below it (two at least)
        # agree without it, it is metadata (e.g. "150,4,setosa,versicolor,virginica" above data).
        if options.skip_rows is None and len(rows) > 2 and _holds_number(rows[0]):
            rest = rows[1:]
            header_below = self._header(rest[0])
            if self._problem(rest, header_below) is None:
                why = self._metadata(rows[0], problem)
                return _Decision(
                    rows[0].last_line, header_below, self._reasons(why, header_below, rest[0])
                )
        raise SourceError(self._message(problem, header))

    def _header(self, first: _Row) -> bool:
        if self.options.header is not None:
            return self.options.header
        return not _holds_number(first)

    def _problem(self, rows: list[_Row], header: bool) -> _Ragged | list[_Odd] | None:
        widths = {len(r.cells) for r in rows[1:]}
        if len(widths) == 1 and len(rows[0].cells) not in widths:
            return _Ragged(rows[0], widths.pop())
        return _numeric_but_first(rows[1:] if header else rows) or None

    def _reasons(self, skip_reason: str, header: bool, first: _Row | None) -> dict[str, str]:
        if self.options.header is not None:
            why = "--header" if header else "--no-header"
        elif first is None:
            why = "no rows"
        elif header:
            why = f"line {first.first_line} holds no numbers"
        else:
            why = f"line {first.first_line} holds numbers"
        return {"skip_rows": skip_reason, "header": why}

    def _metadata(self, first: _Row, problem: _Ragged | list[_Odd]) -> str:
        if isinstance(problem, _Ragged):
            found = f"{_cells(len(first.cells))} where the lines below have {problem.expected}"
        else:
            found = "text above numeric columns"
        return (
            f"line {first.first_line} is metadata, not column names or data: it holds numbers "
            f"and {found} ({first.shown(self.delimiter)})"
        )

    def _message(self, problem: _Ragged | list[_Odd], header: bool) -> str:
        path = self.path
        if isinstance(problem, _Ragged):
            line = problem.row.last_line
            split = "runs of whitespace" if self.delimiter == WHITESPACE else repr(self.delimiter)
            return (
                f"{path}: line {problem.row.first_line} has {_cells(len(problem.row.cells))} but "
                f"the lines below it have {problem.expected} (split at {split}); if line "
                f"{problem.row.first_line} is a title or metadata, pass --skip-rows {line}, and "
                "if the cells are split wrongly, pass --delimiter"
            )
        first = problem[0]
        names = self.rows[0].cells if header else []
        name = names[first.column].strip() if first.column < len(names) else f"col{first.column}"
        cells = ", ".join(f"{text!r} (line {line})" for line, text in first.cells[:_SHOWN_CELLS])
        if len(first.cells) > _SHOWN_CELLS:
            cells += f" and {len(first.cells) - _SHOWN_CELLS} more"
        others = len(problem) - 1
        more = f" (and {others} other column{'s' * (others > 1)} like it)" if others else ""
        last_line = max(line for odd in problem for line, _ in odd.cells)
        last = next(r for r in self.rows if r.first_line == last_line)
        start = self.rows[0].first_line
        lines = f"line {start}" if start == last_line else f"lines {start}-{last_line}"
        hint = f"if {lines} {'is' if start == last_line else 'are'} not data, pass --skip-rows "
        hint += str(last.last_line)
        if not _holds_number(last):
            hint += (
                f"; if line {last_line} holds the column names, pass --skip-rows "
                f"{last.first_line - 1} --header"
            )
        return (
            f"{path}: column {name!r} is numeric except for its first cell(s) {cells}{more}; "
            f"{hint} (giving both --skip-rows and --header/--no-header turns this check off)"
        )


def read_ragged(reader: Iterator[list[str]], line: Callable[[], int]) -> str:
    """Find the first row whose cell count differs from the first row's (error path only)."""
    expected: int | None = None
    try:
        for row in reader:
            if not row:
                continue
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                return f"line {line()} has {len(row)} cells, expected {expected}"
    except csv.Error:
        pass
    return ""
