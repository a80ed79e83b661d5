"""The reader contract.

A :class:`Source` is one raw input (a file or a folder) that yields samples along axis 0 for one or
more *fields*. Readers stream: :meth:`Source.blocks` yields consecutive blocks of at most
``max_samples`` samples as ``{field: ndarray}``, so memory stays bounded by one block whatever the
input size. Everything a reader learns that belongs in the store's attributes (class names,
vocabularies, skipped files) goes in :meth:`Source.metadata`, which is JSON-safe and complete once
the blocks are exhausted. A reader with one field per array of its input (HDF5 datasets, Zarr
arrays) builds on :class:`ArraysSource`, which selects, checks and streams the arrays.

A reader that can also read any range of samples on its own (:meth:`Source.stream_only` is None)
lets ingest spread the ranges over workers: :meth:`Source.part` is what one task takes (a copy
holding no open file, picklable), :meth:`Source.read` reads its range, and :meth:`Source.learn`
gives what reading each range taught back to the source the stage holds, range by range in
sample order.

A new reader is one module in ``gpuds/sources/`` plus one line in ``gpuds/sources/__init__.py``
(docs/DEVELOPING.md).
"""

from __future__ import annotations

import copy
import re
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from gpuds.config import parse_names
from gpuds.errors import ConfigError, SourceError
from gpuds.storage import Location
from gpuds.store import SUPPORTED_DTYPES

__all__ = [
    "WHITESPACE",
    "ArraysSource",
    "FieldSpec",
    "Member",
    "ReadOptions",
    "Samples",
    "Source",
    "check_field_name",
    "common_length",
    "native_dtype",
    "parse_delimiter",
    "parse_size",
    "select_fields",
]


def native_dtype(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    """The native-byte-order plain dtype to deliver, or None when it is not a supported dtype."""
    if dtype.kind not in "biufc":
        return None
    # np.dtype(dtype.str) drops metadata (e.g. h5py's enum mapping); '=' makes big-endian native.
    native = np.dtype(dtype.str).newbyteorder("=")
    return native if native in SUPPORTED_DTYPES else None


def common_length(lengths: dict[str, int], where: str, what: str = "fields") -> int:
    """The one length all ``lengths`` share (0 when empty), else an error naming two of them."""
    if not lengths:
        return 0
    first, n_first = next(iter(lengths.items()))
    for name, n in lengths.items():
        if n != n_first:
            raise SourceError(
                f"{where}: {what} have different lengths: {first!r} has {n_first} samples, "
                f"{name!r} has {n}; select {what} of one length with --fields"
            )
    return n_first


FieldKind = Literal["array", "image", "label", "numeric", "category", "mask"]


@dataclass(frozen=True)
class FieldSpec:
    """What a field will hold, known before any data is read.

    ``attrs`` carries JSON-safe facts stored with the field (``classes`` for labels,
    ``vocabulary`` and ``missing_code`` for categories, ``mask_of`` for missing-value masks, ...).
    """

    name: str
    dtype: np.dtype[Any]
    sample_shape: tuple[int, ...]
    kind: FieldKind = "array"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.sample_shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class ReadOptions:
    """Settings shared by the readers; each reader uses the ones that apply to it.

    Everything here is recorded in the store's history, so it must stay JSON-safe via
    :meth:`to_dict`.
    """

    fields: tuple[str, ...] | None = None
    header: bool | None = None
    label: str | None = None
    mode: str = "RGB"
    resize: tuple[int, int] | None = None
    fit: Literal["stretch", "crop", "pad"] = "stretch"
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    skip_bad: bool = False
    strict_fields: bool = True
    frames: Literal["first", "all"] | None = None
    delimiter: str | None = None
    skip_rows: int | None = None

    def __post_init__(self) -> None:
        if self.delimiter is not None:
            object.__setattr__(self, "delimiter", parse_delimiter(self.delimiter))
        if self.skip_rows is not None and (
            isinstance(self.skip_rows, bool)
            or not isinstance(self.skip_rows, int)
            or self.skip_rows < 0
        ):
            raise ConfigError(f"Expected --skip-rows >= 0, got {self.skip_rows!r}")

    @classmethod
    def from_text(
        cls, *, fields: str | None = None, resize: str | None = None, **options: Any
    ) -> ReadOptions:
        """The options as the command line gives them: ``fields`` comma-separated, ``resize`` as
        ``HxW``; every other option as its value.

        >>> ReadOptions.from_text(fields="x, y", resize="224x224", fit="crop").resize
        (224, 224)
        """
        names = tuple(parse_names(fields)) if fields else None
        return cls(fields=names, resize=parse_size(resize) if resize else None, **options)

    @classmethod
    def choices(cls, option: str) -> tuple[str, ...]:
        """The values of ``option`` (``fit``, ``resample``, ``frames``), as its type declares them.

        >>> ReadOptions.choices("fit")
        ('stretch', 'crop', 'pad')
        """
        hint = typing.get_type_hints(cls)[option]
        kinds = typing.get_args(hint) if typing.get_origin(hint) is not Literal else (hint,)
        return tuple(v for kind in kinds for v in typing.get_args(kind) if isinstance(v, str))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields) if self.fields is not None else None,
            "header": self.header,
            "label": self.label,
            "mode": self.mode,
            "resize": list(self.resize) if self.resize is not None else None,
            "fit": self.fit,
            "resample": self.resample,
            "skip_bad": self.skip_bad,
            "strict_fields": self.strict_fields,
            "frames": self.frames,
            "delimiter": self.delimiter,
            "skip_rows": self.skip_rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReadOptions:
        """Read settings from a mapping: :meth:`to_dict`'s (a store's ``history`` records it,
        so ``gpuds.ingest(..., options=recorded)`` reads the sources again the same way), or
        one written by hand (``resize`` also as ``"HxW"``). Unknown keys and values of the
        wrong type are a :class:`~gpuds.errors.ConfigError` naming the option.

        Examples
        --------
        >>> ReadOptions.from_dict({"resize": "64x48", "fit": "crop"}).resize
        (64, 48)
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"Expected read options as a mapping, got {data!r}")
        known = [f.name for f in dataclass_fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"Unknown read option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        values = dict(data)
        fields = values.get("fields")
        if fields is not None:
            if not isinstance(fields, list | tuple) or not all(isinstance(f, str) for f in fields):
                raise ConfigError(
                    f"Expected read option 'fields' to be a list of names, got {fields!r}"
                )
            values["fields"] = tuple(fields)
        resize = values.get("resize")
        if isinstance(resize, str):
            values["resize"] = parse_size(resize)
        elif resize is not None:
            if (
                not isinstance(resize, list | tuple)
                or len(resize) != 2
                or not all(_is_size(v) for v in resize)
            ):
                raise ConfigError(
                    "Expected read option 'resize' to be [height, width] or \"HxW\", "
                    f"got {resize!r}"
                )
            values["resize"] = (int(resize[0]), int(resize[1]))
        for key, kinds in _OPTION_TYPES.items():
            value = values.get(key)
            if value is not None and not isinstance(value, kinds):
                raise ConfigError(
                    f"Expected read option {key!r} to be a {kinds.__name__}, got {value!r}"
                )
        return cls(**values)


_OPTION_TYPES: dict[str, type] = {
    "header": bool,
    "label": str,
    "mode": str,
    "fit": str,
    "resample": str,
    "skip_bad": bool,
    "strict_fields": bool,
    "frames": str,
    "delimiter": str,
}
"""Types of the read options :meth:`ReadOptions.from_dict` takes as they are (``None`` aside);
their values are checked by the readers that use them."""


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class Samples:
    """Samples ``[start, stop)`` of every field of a source (:meth:`Source.read`)."""

    values: dict[str, np.ndarray]
    facts: Any = None
    """What reading them taught the source (conversions counted, checksums of the bytes read),
    for :meth:`Source.learn`; picklable. None when there is nothing to learn."""


class Source(ABC):
    """One raw input, read as aligned fields of equal length along axis 0."""

    format: ClassVar[str]

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        self.path = path
        self.options = options
        self.copied = False
        """Read from a temporary local copy of an object-store input (``Reader.remote``)."""

    @property
    @abstractmethod
    def fields(self) -> list[FieldSpec]:
        """The fields this source will yield, in order."""

    @property
    @abstractmethod
    def length(self) -> int:
        """Number of samples; an upper bound when ``skip_bad`` may drop some."""

    @abstractmethod
    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield consecutive blocks of at most ``max_samples`` samples, one array per field."""

    def stream_only(self) -> str | None:
        """Why this source is read front to back, by :meth:`blocks` in one process (a phrase
        for the note that says so), or None when :meth:`read` reads any range of samples, in
        any process that sees the input."""
        return f"a {self.format} source is read in one stream"

    def part(self, start: int, stop: int) -> Source:
        """This source as a task reading samples ``[start, stop)`` takes it, in this process or
        pickled to another: a copy without open files (its :meth:`read` opens what it needs,
        the task closes it) carrying what that range needs.

        The copy goes through ``__getstate__``, where a reader of ranges drops its open files.
        """
        return copy.copy(self)

    def read(self, start: int, stop: int) -> Samples:
        """Samples ``[start, stop)`` of every field, for a source whose :meth:`stream_only` is
        None. It leaves the source as it was: what reading taught comes back in
        :attr:`Samples.facts`."""
        # Ingest reads ranges only of sources that say they can: anything else is a bug.
        raise TypeError(f"{type(self).__name__} is read in one stream: {self.stream_only()}")

    def learn(self, facts: Any) -> None:  # noqa: B027 - most readers learn nothing from reading
        """Take in the :attr:`Samples.facts` of one range. Given those of every range, in sample
        order, :meth:`metadata`, :meth:`describe` and :meth:`notes` are complete as after
        :meth:`blocks`; a problem only the whole input shows (a checksum) is raised here."""

    def metadata(self) -> dict[str, Any]:
        """JSON-safe facts for the store's attributes; complete after :meth:`blocks` ends."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Where this source came from and what was decided reading it (the store's ``sources``
        entry); complete after :meth:`blocks` ends."""
        return {"format": self.format, "path": str(self.path)}

    def notes(self) -> list[str]:
        """One-line messages the user should read (e.g. information lost converting images);
        complete after :meth:`blocks` ends."""
        if self.copied:
            return [
                f"{self.path}: read from a temporary local copy ({self.format}'s library reads "
                "local files only)"
            ]
        return []

    def close(self) -> None:  # noqa: B027 - optional hook, most readers hold nothing open
        """Release open files."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Member:
    """An array a reader found in its input: how messages name it (``dataset /x``,
    ``array 'x'``), where it lies (recorded in the reader's metadata), the array itself (anything
    with ``shape`` and ``dtype``: an ``h5py.Dataset``, a ``zarr.Array``), or why it cannot be
    read."""

    label: str
    location: str
    array: Any = None
    problem: str | None = None


class ArraysSource(Source):
    """A reader with one field per array of its input (HDF5 datasets, Zarr arrays).

    A subclass finds the arrays, hands them to :meth:`_take` by field name, reads samples of one
    (:meth:`_read`, through :meth:`_array`) and opens them again by their location in a copy
    (:meth:`_reopen`). This class selects the fields (``--fields``), refuses the arrays that
    cannot be read and the names that cannot be fields, checks that the arrays share their
    length, and reads blocks and ranges.
    """

    what: ClassVar[str] = "arrays"
    """How the error about arrays of different lengths names them."""

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        self._arrays: dict[str, Any] = {}
        self._locations: dict[str, str] = {}
        self._specs: list[FieldSpec] = []
        self._length = 0

    def _take(self, members: Mapping[str, Member]) -> None:
        """Keep the selected members as the fields; an unreadable one is an error."""
        where = str(self.path)
        names = select_fields(
            list(members), self.options.fields, where, strict=self.options.strict_fields
        )
        for name in names:
            member = members[name]
            if member.problem is not None or member.array is None:
                raise SourceError(
                    f"{where}: {member.label} (field {name!r}) {member.problem}; leave it out "
                    "with --fields"
                )
            check_field_name(name, f"{where}: {member.label}")
            self._arrays[name] = member.array
            self._locations[name] = member.location
            self._specs.append(self._spec(name, member.array))
        lengths = {name: int(array.shape[0]) for name, array in self._arrays.items()}
        self._length = common_length(lengths, where, self.what)

    def _spec(self, name: str, array: Any) -> FieldSpec:
        """The field an array gives (its dtype in native byte order)."""
        dtype = native_dtype(array.dtype)
        assert dtype is not None, "an array of another dtype carries a problem"
        return FieldSpec(name, dtype, tuple(array.shape[1:]))

    @abstractmethod
    def _read(self, spec: FieldSpec, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of the field ``spec``, in its dtype."""

    @abstractmethod
    def _reopen(self) -> dict[str, Any]:
        """The arrays of the fields again, by their locations (in a copy that was pickled)."""

    def _array(self, name: str) -> Any:
        """The array of the field ``name``, opened again first in a copy."""
        if not self._arrays:
            self._arrays = self._reopen()
        return self._arrays[name]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # open files: a copy opens them again when it reads
        return state

    @property
    def fields(self) -> list[FieldSpec]:
        return list(self._specs)

    @property
    def length(self) -> int:
        return self._length

    def stream_only(self) -> str | None:
        if self.copied:
            return "it is read from a temporary local copy, which only this machine has"
        return None

    def read(self, start: int, stop: int) -> Samples:
        return Samples({spec.name: self._read(spec, start, stop) for spec in self._specs})

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self._length, max_samples):
            yield self.read(start, min(start + max_samples, self._length)).values


WHITESPACE = "whitespace"
"""The ``delimiter`` that separates cells by runs of spaces and tabs."""

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "space": " ", WHITESPACE: WHITESPACE}


def parse_delimiter(text: str) -> str:
    r"""One delimiter character, :data:`WHITESPACE`, or the names ``tab`` (also ``\t``) and
    ``space``; anything else is an error.

    >>> parse_delimiter("tab"), parse_delimiter(r"\t"), parse_delimiter(";")
    ('\t', '\t', ';')
    """
    value = _DELIMITER_NAMES.get(text.lower() if len(text) > 1 else text, text)
    if value == WHITESPACE or (len(value) == 1 and value not in '"\r\n'):
        return value
    raise ConfigError(
        f"Expected --delimiter to be one character other than a quote or line break, 'tab', "
        f"'space' or 'whitespace' (runs of spaces and tabs), got {text!r}"
    )


_FORBIDDEN_NAME = re.compile(r"[/\\\x00]")


def check_field_name(name: str, where: str) -> str:
    """Return ``name`` if it is a valid field (Zarr node) name, else raise naming ``where``."""
    if not name or name in {".", ".."} or name.startswith("__") or _FORBIDDEN_NAME.search(name):
        raise SourceError(
            f"{where}: {name!r} cannot be a field name (empty, '.', '..', leading '__', or "
            "containing '/'); rename it in the source or select other fields with --fields"
        )
    return name


def select_fields(
    available: Sequence[str], wanted: Sequence[str] | None, where: str, *, strict: bool = True
) -> list[str]:
    """Keep the ``wanted`` names (in the order asked), or all when ``wanted`` is None.

    With ``strict=False`` (several sources share one ``--fields`` list) names this source lacks
    are ignored; the caller checks that each name was found somewhere.
    """
    if wanted is None:
        return list(available)
    missing = [w for w in wanted if w not in available]
    if missing and not strict:
        return [w for w in wanted if w in available]
    if missing:
        raise SourceError(
            f"{where}: no field(s) {', '.join(map(repr, missing))}; "
            f"available: {', '.join(available) or '(none)'}"
        )
    return list(wanted)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"224x224"``) into ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError(
            f"Expected a size as HxW with positive integers (e.g. 224x224), got {text!r}"
        )
    return int(match.group(1)), int(match.group(2))
