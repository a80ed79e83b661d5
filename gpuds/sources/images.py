"""Folders of image files, decoded with Pillow into ``uint8`` arrays of shape ``(N, H, W, C)``.

Layouts
-------
The path must be a folder laid out in one of two ways (entries whose name starts with ``.`` are
ignored everywhere):

* **classes**: the folder holds only subfolders, one per class, each holding image files. Fields
  ``images`` and ``labels`` (``int64``, the index of the class folder in the sorted list of class
  names, stored as the ``classes`` attribute of the field and in :meth:`metadata`).
* **flat**: the folder holds image files and no subfolder. Field ``images`` only.

Image files mixed with subfolders at the top, a subfolder inside a class folder, a class folder
without images, and a folder without images are refused. ``--fields`` may select ``images`` and/or
``labels``; every file is decoded whatever the selection, so that the samples are the same ones
(and in the same order) whichever fields are kept.

Files and order
---------------
Image files are those whose suffix is, ignoring case, ``.png .jpg .jpeg .tif .tiff .bmp .webp``.
Pillow is only allowed to decode them as PNG, JPEG (including MPO), TIFF, BMP or WebP, whatever
the suffix says, so no other Pillow plugin (nor Ghostscript) ever runs on the input. Any other
file is not read but listed in :meth:`metadata` as ``ignored_files`` (paths relative to the
folder, ``/``-separated). Samples are ordered by class folder name, then by file name, both in
Python string order (case-sensitive, not "natural": ``10.png`` comes before ``2.png``).

Frames
------
A file holding several frames (a multi-page TIFF, an animated PNG or WebP, an MPO: a JPEG holding
several pictures) is refused unless ``frames`` says how to read it; the error names the file, its
frame count and the choices:

* ``frames="first"``: frame 0 only, one sample per file.
* ``frames="all"``: one sample per frame, in frame order (every frame of a file in a class folder
  gets the file's label). Each frame is checked like a file: size, mode, decompression bomb.

Either way such files are listed in :meth:`describe` as ``multi_frame`` (``{"path", "frames"}``).

Pixels
------
Every image is converted to ``mode`` (``RGB``: C=3, ``RGBA``: C=4, ``L``: C=1):

* Palette images (``P``, ``PA``) are expanded through ``RGBA`` first, so their transparency is
  kept when converting to ``RGBA``.
* 16-bit samples are brought to 8 bits by keeping the high byte (``value >> 8``): gpuds does it
  for 16-bit grayscale (``I;16`` and its byte orders, then converted like ``L``), Pillow does it
  while decoding 16-bit RGB, RGBA and LA files.
* 32-bit integer (``I``) and floating point (``F``) images are refused: their range is unknown;
  convert them to 8-bit first.
* Otherwise Pillow's ``Image.convert`` applies: ``RGB``/``RGBA`` to ``L`` uses the ITU-R 601-2
  luma ``L = R*299/1000 + G*587/1000 + B*114/1000``; to ``RGB`` an alpha channel is dropped
  (colours as stored, not composited); to ``RGBA`` the added alpha is 255.
* EXIF orientation is not applied: pixels are stored as encoded in the file.

Every conversion is counted by the mode the file was in (``P with transparency``, ``RGB
(16-bit)``, ...) and listed in :meth:`describe` as ``conversions`` (``{"from", "to", "images",
"drops", "first"}``). ``drops`` names what the conversion loses: ``alpha``, ``transparency`` (a
transparent colour or palette entry), ``colour`` (to ``L``), ``16-bit precision``, ``K channel``
(CMYK); it is empty for lossless ones (``L`` or ``1`` to ``RGB``, ``RGB`` to ``RGBA``, ``P``
without transparency, ``YCbCr``). When any conversion drops something, :meth:`notes` has one line
with the counts.

Sizes
-----
The constructor reads only the headers of the files (cheap) to learn their sizes. Without
``resize`` every image must have the same size, else the error names two files of different
sizes. With ``resize=(H, W)`` every image is brought to exactly ``H x W`` after the mode
conversion, with the filter ``resample`` (``nearest``, ``bilinear``, ``bicubic``, ``lanczos``;
Pillow's ``Image.Resampling``), according to ``fit``:

* ``stretch``: resized to ``H x W``, ignoring the aspect ratio.
* ``crop``: the largest centred region of the image with the aspect ratio ``W/H`` (a sub-pixel
  box) is resized to ``H x W``; that is, scaled to cover ``H x W`` then centre-cropped.
* ``pad``: scaled by ``min(H/h, W/w)`` (each side rounded, at least 1 pixel) to fit inside
  ``H x W``, then pasted on a zero canvas (black, and transparent in ``RGBA``) at offset
  ``((H - h') // 2, (W - w') // 2)``, so an odd margin leaves the extra pixel at the bottom/right.

An image already of size ``H x W`` is not resampled.

Bad files
---------
A file that cannot be identified or decoded, is truncated (the whole pixel data is loaded, and
gpuds never sets ``ImageFile.LOAD_TRUNCATED_IMAGES``), has an unsupported mode, or exceeds
Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, kept on) is an error naming the
file and the reason. A file whose signature is one of the allowed formats' but whose header that
format's Pillow decoder refuses (a TIFF of 64-bit floats, say) gets that decoder's own message,
not "cannot identify". With ``skip_bad`` a bad file (or frame) is skipped instead and listed in
:meth:`metadata` as ``skipped`` (``{"path", "error"}``, plus ``"frame"`` with ``frames="all"``);
:attr:`ImageFolderSource.length` counts the samples whose header was read, an upper bound, and
blocks are shorter by the ones that fail to decode. If no file can be read, that is an error even
with ``skip_bad``. A multi-frame file is not a bad file: ``skip_bad`` does not skip it.

The files of one block are decoded by a thread pool (Pillow releases the GIL while decoding and
resizing), the frames of one file in order by one thread; the order is kept and memory holds one
block. Without ``skip_bad`` any range of samples can also be read on its own
(:meth:`ImageFolderSource.read`), which is how ingest spreads a folder over the workers of a
cluster; the conversions counted come back with the pixels (:meth:`ImageFolderSource.learn`).
"""

from __future__ import annotations

import copy
import io
import os
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, TiffImagePlugin

from gpuds.errors import ConfigError, SourceError
from gpuds.execution import task_threads
from gpuds.sources.base import FieldSpec, ReadOptions, Samples, Source, select_fields
from gpuds.storage import Location

__all__ = ["FRAMES", "IMAGE_SUFFIXES", "MODES", "ImageFolderSource"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
"""Suffixes (lower case) of the files read as images."""

MODES = {"RGB": 3, "RGBA": 4, "L": 1}
"""Pixel modes images can be converted to, with their number of channels."""

FRAMES = ("first", "all")
"""How multi-frame files may be read (``frames``); None refuses them."""

# The only Pillow decoders allowed to run on the input, whatever the file suffix claims (the
# JPEG decoder also opens MPO, the multi-picture JPEG of phone cameras).
_PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
_FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "TIFF": "TIFF", "BMP": "BMP", "WEBP": "WebP"}
_MULTI_FRAME = {
    "TIFF": "a multi-page TIFF",
    "PNG": "an animated PNG",
    "WEBP": "an animated WebP",
    "MPO": "an MPO (a JPEG holding several pictures)",
}

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_FITS = ("stretch", "crop", "pad")
# Modes Image.convert handles (after the palette and 16-bit special cases below).
_CONVERTIBLE = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I;16"})
# Raw layouts in which Pillow decodes 16 bits per channel into 8 (keeping the high byte). Not
# BMP's "BGR;16", which packs a whole 5-6-5 pixel into 16 bits.
_RAW_16_BIT = re.compile(r"(?:L|LA|RGB|RGBA|RGBX|CMYK);16[BLN]?")
_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating point"}

_LAYOUTS_HINT = (
    "expected either a folder holding only class subfolders of images (root/cat/1.png, "
    "root/dog/2.png) or a flat folder of images (root/1.png)"
)


class _BadImage(Exception):
    """One file cannot become a sample; the message is the reason."""


@dataclass(frozen=True)
class _Entry:
    rel: str
    label: int
    size: tuple[int, int]  # (width, height), as Pillow reports it
    frame: int | None = None  # the frame read, when one sample per frame is made

    @property
    def name(self) -> str:
        return self.rel if self.frame is None else f"{self.rel} (frame {self.frame})"


@dataclass(frozen=True)
class _Conversion:
    """How one image reached the target mode: the mode it was in and what was lost."""

    source: str
    drops: tuple[str, ...]


@dataclass(frozen=True)
class _Learned:
    """What decoding a range of samples taught (:meth:`ImageFolderSource.learn`)."""

    decoded: int
    conversions: list[tuple[_Conversion, str, int]]
    """Each conversion met, in the order met: the first sample it was met at, and how many."""


class ImageFolderSource(Source):
    """A folder of images, flat or with one subfolder per class (see the module docstring).

    Parameters
    ----------
    path
        The folder.
    options
        ``mode``, ``resize``, ``fit``, ``resample``, ``frames``, ``skip_bad`` and ``fields``
        apply.

    Examples
    --------
    >>> src = ImageFolderSource(Path("pets"), ReadOptions(resize=(64, 64), fit="crop"))
    ... # doctest: +SKIP
    >>> src.fields[0].sample_shape, src.metadata()["classes"]  # doctest: +SKIP
    ((64, 64, 3), ['cat', 'dog'])
    """

    format = "images"

    def __init__(self, path: Path | Location, options: ReadOptions) -> None:
        super().__init__(path, options)
        self._channels = _parse_mode(options.mode)
        self._resample = _parse_options(options)
        if not path.is_dir():
            raise SourceError(f"{path}: not a folder; {_LAYOUTS_HINT}")
        self._classes: list[str] | None = None
        self._ignored: list[str] = []
        self._scan_skipped: list[dict[str, Any]] = []
        self._decode_skipped: list[dict[str, Any]] = []
        self._multi_frame: list[dict[str, Any]] = []
        self._conversions: dict[_Conversion, dict[str, Any]] = {}
        self._decoded = 0
        self._first = 0  # the sample of _entries[0] (a part holds the files of its range)
        candidates = self._find_files()
        self._entries = self._scan_headers(candidates)
        self._candidates = len(candidates)
        self._height, self._width = self._sample_size()
        available = ["images"] if self._classes is None else ["images", "labels"]
        self._selected = select_fields(
            available, options.fields, str(path), strict=options.strict_fields
        )

    @property
    def fields(self) -> list[FieldSpec]:
        specs = {
            "images": FieldSpec(
                "images", np.dtype(np.uint8), (self._height, self._width, self._channels), "image"
            ),
            "labels": FieldSpec(
                "labels", np.dtype(np.int64), (), "label", {"classes": list(self._classes or [])}
            ),
        }
        return [specs[name] for name in self._selected]

    @property
    def length(self) -> int:
        return len(self._entries)

    def blocks(self, max_samples: int) -> Iterator[dict[str, np.ndarray]]:
        self._decode_skipped = []
        self._conversions = {}
        self._decoded = 0
        if not self._selected:
            return
        with _pool(max_samples) as pool:
            for start in range(0, len(self._entries), max_samples):
                entries = self._entries[start : start + max_samples]
                images, outcomes = self._decode(entries, pool)
                keep = []
                for i, (entry, outcome) in enumerate(zip(entries, outcomes, strict=True)):
                    if isinstance(outcome, str):
                        self._bad(entry, outcome)
                        continue
                    keep.append(i)
                    if outcome is not None:
                        self._count(outcome, entry.name)
                if not keep:
                    continue
                kept = images if len(keep) == len(entries) else images[keep]
                self._decoded += len(keep)
                yield self._block(kept, [entries[i] for i in keep])
        if self._decoded == 0:
            raise SourceError(
                f"{self.path}: none of the {self._candidates} image files could be read"
            )

    def stream_only(self) -> str | None:
        if self.options.skip_bad:
            return "with --skip-bad, how many samples it holds is known only once all are read"
        return None

    def part(self, start: int, stop: int) -> ImageFolderSource:
        # The files of the range only: a task is sent its own share of a long list.
        twin = copy.copy(self)
        twin._entries = self._entries[start - self._first : stop - self._first]
        twin._first = start
        twin._ignored, twin._multi_frame, twin._scan_skipped = [], [], []
        twin._conversions = {}
        return twin

    def read(self, start: int, stop: int) -> Samples:
        entries = self._entries[start - self._first : stop - self._first]
        if not self._selected:
            return Samples({})
        with _pool(len(entries)) as pool:
            images, outcomes = self._decode(entries, pool)
        conversions: dict[_Conversion, list[Any]] = {}
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, str):
                raise self._unreadable(entry, outcome)
            if outcome is not None:
                conversions.setdefault(outcome, [entry.name, 0])[1] += 1
        learned = _Learned(len(entries), [(c, first, n) for c, (first, n) in conversions.items()])
        return Samples(self._block(images, entries), learned)

    def learn(self, facts: Any) -> None:
        assert isinstance(facts, _Learned)
        self._decoded += facts.decoded
        for conversion, first, count in facts.conversions:
            self._count(conversion, first, count)

    def _decode(
        self, entries: list[_Entry], pool: ThreadPoolExecutor
    ) -> tuple[np.ndarray, list[str | _Conversion | None]]:
        """The pixels of ``entries`` and each one's outcome (:meth:`_decode_run`)."""
        images = np.empty((len(entries), self._height, self._width, self._channels), np.uint8)
        runs = _runs(entries)
        results = pool.map(self._decode_run, [entries[r] for r in runs], [images[r] for r in runs])
        return images, [outcome for run in results for outcome in run]

    def _block(self, images: np.ndarray, entries: list[_Entry]) -> dict[str, np.ndarray]:
        block: dict[str, np.ndarray] = {}
        for name in self._selected:
            if name == "images":
                block[name] = images
            else:
                block[name] = np.array([entry.label for entry in entries], dtype=np.int64)
        return block

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        if self._classes is not None:
            meta["classes"] = list(self._classes)
        meta["ignored_files"] = list(self._ignored)
        meta["skipped"] = [dict(s) for s in self._scan_skipped + self._decode_skipped]
        return meta

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path),
            "layout": "flat" if self._classes is None else "classes",
            "files": self._candidates,
            "multi_frame": [dict(m) for m in self._multi_frame],
            "conversions": [
                {**c, "drops": list(c["drops"])}
                for c in sorted(self._conversions.values(), key=lambda c: c["from"])
            ],
        }

    def notes(self) -> list[str]:
        lossy = [c for c in self.describe()["conversions"] if c["drops"]]
        if not lossy:
            return []
        count = sum(c["images"] for c in lossy)
        parts = ", ".join(f"{c['images']} {c['from']} ({', '.join(c['drops'])})" for c in lossy)
        keep_alpha = self.options.mode != "RGBA" and any(
            d in ("alpha", "transparency") for c in lossy for d in c["drops"]
        )
        hint = "; --mode RGBA keeps alpha" if keep_alpha else ""
        return [
            f"{self.path}: {count} of {self._decoded} images lost information converting to "
            f"{self.options.mode}: {parts}{hint}; see 'conversions' in the store's sources"
        ]

    def _find_files(self) -> list[tuple[str, int]]:
        """Relative paths and labels of the candidate image files, in sample order."""
        folders, images, others = _list_folder(self.path)
        if folders and images:
            raise SourceError(
                f"{self.path}: holds both image files ({images[0]}) and subfolders "
                f"({folders[0]}/); {_LAYOUTS_HINT}"
            )
        self._ignored = list(others)
        if images:
            return [(name, 0) for name in images]
        if not folders:
            raise SourceError(f"{self.path}: holds no image files; {_LAYOUTS_HINT}")
        self._classes = folders
        found: list[tuple[str, int]] = []
        for label, name in enumerate(folders):
            sub, class_images, class_others = _list_folder(self.path / name)
            if sub:
                raise SourceError(
                    f"{self.path / name / sub[0]}: a folder inside the class folder {name!r}; "
                    f"{_LAYOUTS_HINT}"
                )
            if not class_images:
                raise SourceError(
                    f"{self.path / name}: class folder holds no image files; add images or "
                    "remove the folder"
                )
            self._ignored += [f"{name}/{other}" for other in class_others]
            found += [(f"{name}/{image}", label) for image in class_images]
        return found

    def _scan_headers(self, candidates: list[tuple[str, int]]) -> list[_Entry]:
        entries = []
        every_frame = self.options.frames == "all"
        first_multi: tuple[str, int, str] | None = None
        with warnings.catch_warnings():
            # The header scan runs on this thread alone, so the warning filter is safe here; it
            # makes Pillow's decompression-bomb warning an error for that file.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for rel, label in candidates:
                try:
                    fmt, frames, sizes = _read_header(self.path / rel, every_frame)
                except _BadImage as e:
                    self._bad(_Entry(rel, label, (0, 0)), str(e), at_scan=True)
                    continue
                if frames > 1:
                    self._multi_frame.append({"path": rel, "frames": frames})
                    first_multi = first_multi or (rel, frames, fmt)
                if every_frame and frames > 1:
                    entries += [_Entry(rel, label, size, i) for i, size in enumerate(sizes)]
                else:
                    entries.append(_Entry(rel, label, sizes[0]))
        if first_multi is not None and self.options.frames is None:
            rel, frames, fmt = first_multi
            others = len(self._multi_frame) - 1
            more = f" ({others} more file(s) hold several frames)" if others else ""
            raise SourceError(
                f"{self.path / rel}: {_MULTI_FRAME.get(fmt, 'a file')} with {frames} frames"
                f"{more}; pass --frames first to read frame 0 of each multi-frame file, or "
                "--frames all to make one sample per frame"
            )
        if not entries:
            raise SourceError(
                f"{self.path}: none of the {len(candidates)} image files could be read "
                f"(first: {self._scan_skipped[0]['path']}: {self._scan_skipped[0]['error']})"
            )
        return entries

    def _sample_size(self) -> tuple[int, int]:
        if self.options.resize is not None:
            return self.options.resize
        first = self._entries[0]
        other = next((e for e in self._entries if e.size != first.size), None)
        if other is not None:
            raise SourceError(
                f"{self.path}: images differ in size: {first.name} is {_hxw(first.size)} and "
                f"{other.name} is {_hxw(other.size)} (HxW); pass --resize HxW "
                "(with --fit stretch|crop|pad) to bring them to one size"
            )
        width, height = first.size
        return height, width

    def _bad(self, entry: _Entry, error: str, *, at_scan: bool = False) -> None:
        if not self.options.skip_bad:
            raise self._unreadable(entry, error)
        record: dict[str, Any] = {"path": entry.rel, "error": error}
        if entry.frame is not None:
            record["frame"] = entry.frame
        (self._scan_skipped if at_scan else self._decode_skipped).append(record)

    def _unreadable(self, entry: _Entry, error: str) -> SourceError:
        return SourceError(
            f"{self.path / entry.name}: cannot read the image: {error}; fix or remove the "
            "file, or pass --skip-bad to skip bad files"
        )

    def _count(self, conversion: _Conversion, first: str, images: int = 1) -> None:
        record = self._conversions.setdefault(
            conversion,
            {
                "from": conversion.source,
                "to": self.options.mode,
                "images": 0,
                "drops": list(conversion.drops),
                "first": first,
            },
        )
        record["images"] += images

    def _decode_run(self, entries: list[_Entry], out: np.ndarray) -> list[str | _Conversion | None]:
        """Decode consecutive samples of one file into ``out`` (N, H, W, C), opening it once.

        One outcome per sample: the reason it failed, or how it was converted (None: as is).
        """
        try:
            image = _open(self.path / entries[0].rel)
        except _BadImage as e:
            return [str(e)] * len(entries)
        with image:
            return [self._decode_frame(image, e, o) for e, o in zip(entries, out, strict=True)]

    def _decode_frame(
        self, image: Image.Image, entry: _Entry, out: np.ndarray
    ) -> str | _Conversion | None:
        try:
            if entry.frame is not None:
                image.seek(entry.frame)
            # The scan checked this size against the bomb limit; a file that changed since
            # must not be decoded unchecked.
            if image.size != entry.size:
                raise _BadImage(
                    f"its size changed since the folder was scanned ({_hxw(entry.size)} -> "
                    f"{_hxw(image.size)})"
                )
            _check_mode(image.mode)
            conversion = _conversion(image, self.options.mode)  # before load() drops the tile
            image.load()
            pixels = _convert(image, self.options.mode)
            if self.options.resize is not None:
                pixels = _fit(pixels, self.options.resize, self.options.fit, self._resample)
            out[...] = np.asarray(pixels).reshape(out.shape)
        except _BadImage as e:
            return str(e)
        except Exception as e:  # Pillow raises many exception types on corrupt data
            return _reason(e)
        return conversion


def _pool(files: int) -> ThreadPoolExecutor:
    """Threads that decode ``files`` files at once (Pillow releases the GIL while decoding)."""
    return ThreadPoolExecutor(max_workers=max(1, min(files, task_threads())))


def _parse_mode(mode: str) -> int:
    if mode not in MODES:
        raise ConfigError(f"Expected an image mode in {', '.join(MODES)}, got {mode!r}")
    return MODES[mode]


def _parse_options(options: ReadOptions) -> Image.Resampling:
    if options.fit not in _FITS:
        raise ConfigError(f"Expected fit in {', '.join(_FITS)}, got {options.fit!r}")
    if options.resample not in _RESAMPLE:
        raise ConfigError(
            f"Expected a resampling filter in {', '.join(_RESAMPLE)}, got {options.resample!r}"
        )
    if options.frames is not None and options.frames not in FRAMES:
        raise ConfigError(
            f"Expected frames in {', '.join(FRAMES)} (or None to refuse multi-frame files), "
            f"got {options.frames!r}"
        )
    if options.resize is not None:
        height, width = options.resize
        if height < 1 or width < 1:
            raise ConfigError(f"Expected a resize of positive HxW, got {height}x{width}")
    return _RESAMPLE[options.resample]


def _list_folder(folder: Path | Location) -> tuple[list[str], list[str], list[str]]:
    """Sorted names of the visible subfolders, image files and other entries of ``folder`` (a
    local folder, or a prefix of an object store: one listing request)."""
    if isinstance(folder, Location):
        subfolders, files = folder.entries()
        folders = [name for name in subfolders if not name.startswith(".")]
        names = [name for name in files if not name.startswith(".")]
    else:
        try:
            listed = sorted(name for name in os.listdir(folder) if not name.startswith("."))
        except OSError as e:
            raise SourceError(f"{folder}: cannot list the folder ({e.strerror or e})") from e
        folders = [name for name in listed if (folder / name).is_dir()]
        names = [name for name in listed if name not in set(folders)]
    images = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    others = [n for n in names if os.path.splitext(n)[1].lower() not in IMAGE_SUFFIXES]
    return folders, images, others


def _binary(path: Path | Location) -> IO[bytes]:
    """The file to decode: a local file, or an object's bytes (one request: images are small)."""
    if isinstance(path, Location):
        return io.BytesIO(path.read_bytes())  # a failed request is a StoreError, not a bad image
    return open(path, "rb")


def _runs(entries: list[_Entry]) -> list[slice]:
    """Slices of ``entries`` holding consecutive samples of one file (frames of one file)."""
    runs = []
    start = 0
    for i in range(1, len(entries) + 1):
        if i == len(entries) or entries[i].rel != entries[start].rel:
            runs.append(slice(start, i))
            start = i
    return runs


def _open(path: Path | Location) -> Image.Image:
    source: Any = _binary(path) if isinstance(path, Location) else path
    try:
        return Image.open(source, formats=_PILLOW_FORMATS)
    except Image.UnidentifiedImageError as e:
        raise _BadImage(_unidentified(path)) from e
    except Image.DecompressionBombWarning as e:
        raise _BadImage(f"{e}; refused as a possible decompression bomb") from e
    except Image.DecompressionBombError as e:
        raise _BadImage(f"{e}; refused as a possible decompression bomb") from e
    except Exception as e:  # Pillow raises many exception types on corrupt headers
        raise _BadImage(_reason(e)) from e


def _unidentified(path: Path | Location) -> str:
    """Why Pillow could not open ``path``: the refusal of the allowed decoder whose signature
    the file carries (as ``Image.open`` tried it), else that no allowed format matches."""
    try:
        with _binary(path) as fh:
            prefix = fh.read(16)  # as much as Image.open gives the signature checks
        for fmt in _PILLOW_FORMATS:
            factory, accept = Image.OPEN[fmt]
            verdict = accept(prefix) if accept is not None else True
            if isinstance(verdict, str):  # Pillow's own reason, e.g. a codec not built in
                return verdict
            if not verdict:
                continue
            try:
                with _binary(path) as fh:
                    factory(fh, str(path))
            except Exception as e:
                detail = _tiff_samples(path) if fmt == "TIFF" else ""
                message = str(e) if isinstance(e, SyntaxError) else _reason(e)
                return f"Pillow's {_FORMAT_NAMES[fmt]} decoder refused it: {message}{detail}"
    except OSError as e:
        return e.strerror or str(e)
    return "not a PNG, JPEG, TIFF, BMP or WebP image Pillow can identify"


def _tiff_samples(path: Path | Location) -> str:
    """`` (pixels of N samples of B-bit KIND)`` from a TIFF's first directory, or ``""``."""
    try:
        with _binary(path) as fh:
            directory = TiffImagePlugin.ImageFileDirectory_v2(fh.read(8))
            fh.seek(directory.next)
            directory.load(fh)
        bits = directory.get(258, (1,))
        kind = _TIFF_SAMPLE_FORMATS.get(directory.get(339, (1,))[0], "unknown format")
        samples = int(directory.get(277, 1))
        noun = "sample" if samples == 1 else "samples"
        return f" (pixels of {samples} {noun} of {int(bits[0])}-bit {kind})"
    except Exception:  # a detail only: the decoder's refusal above is the reason
        return ""


def _read_header(
    path: Path | Location, every_frame: bool
) -> tuple[str, int, list[tuple[int, int]]]:
    """The format, the number of frames and the (width, height) of frame 0 (of every frame
    when ``every_frame``) of ``path``, reading headers only."""
    with _open(path) as image:
        _check_mode(image.mode)
        try:
            # Counting TIFF pages parses every page header, which may be corrupt.
            frames = int(getattr(image, "n_frames", 1))
            sizes = [image.size]
            if every_frame:
                for index in range(1, frames):
                    image.seek(index)
                    _check_frame(image, index)
                    sizes.append(image.size)
        except _BadImage:
            raise
        except Exception as e:
            raise _BadImage(_reason(e)) from e
        return image.format or "", frames, sizes


def _check_frame(image: Image.Image, index: int) -> None:
    """Checks ``Image.open`` makes on frame 0 only: the bomb limit (as an error, like the scan
    makes its warning) and the mode."""
    width, height = image.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise _BadImage(
            f"frame {index} has {width * height} pixels, over the limit of {limit}; refused as "
            "a possible decompression bomb"
        )
    _check_mode(image.mode)


def _check_mode(mode: str) -> None:
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise _BadImage(
            f"{kind} pixels (Pillow mode {mode}) have no fixed range; "
            "convert the file to 8-bit first"
        )
    if mode not in _CONVERTIBLE and not mode.startswith("I;16"):
        raise _BadImage(f"Pillow mode {mode} is not supported; convert the file to RGB or L")


def _conversion(image: Image.Image, target: str) -> _Conversion | None:
    """What converting ``image`` (opened, not yet loaded) to ``target`` does; None when the
    file is already in ``target`` and nothing is lost."""
    mode = "I;16" if image.mode.startswith("I;16") else image.mode
    deep = mode == "I;16" or any(
        isinstance(raw := _raw_mode(tile), str) and _RAW_16_BIT.fullmatch(raw)
        for tile in getattr(image, "tile", [])
    )
    transparent = "transparency" in image.info and mode not in _ALPHA_MODES
    source = f"{mode} (16-bit)" if deep and mode != "I;16" else mode
    source += " with transparency" if transparent else ""
    drops = []
    if deep:
        drops.append("16-bit precision")
    if mode in _ALPHA_MODES and target != "RGBA":
        drops.append("alpha")
    # gpuds rebuilds I;16 images from their high bytes, which leaves the transparent value out.
    if transparent and (target != "RGBA" or mode == "I;16"):
        drops.append("transparency")
    if target == "L" and mode not in _GRAY_MODES:
        drops.append("colour")
    if mode == "CMYK":
        drops.append("K channel")
    if source == target and not drops:
        return None
    return _Conversion(source, tuple(drops))


def _raw_mode(tile: Any) -> str | None:
    """The raw pixel layout a Pillow tile decodes (``RGB;16B``...), when it names one."""
    args = tile[3]
    if isinstance(args, tuple) and args:
        args = args[0]
    return args if isinstance(args, str) else None


def _convert(image: Image.Image, mode: str) -> Image.Image:
    if image.mode.startswith("I;16"):
        high = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        image = Image.fromarray(high)
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return image if image.mode == mode else image.convert(mode)


def _fit(
    image: Image.Image, size: tuple[int, int], fit: str, resample: Image.Resampling
) -> Image.Image:
    height, width = size
    w, h = image.size
    if (w, h) == (width, height):
        return image
    if fit == "stretch":
        return image.resize((width, height), resample)
    if fit == "crop":
        if w * height > h * width:  # wider than the target: keep the full height
            box_w, box_h = h * width / height, float(h)
        else:
            box_w, box_h = float(w), w * height / width
        left, top = (w - box_w) / 2, (h - box_h) / 2
        return image.resize((width, height), resample, box=(left, top, left + box_w, top + box_h))
    scale = min(height / h, width / w)
    new_w = min(width, max(1, round(w * scale)))
    new_h = min(height, max(1, round(h * scale)))
    scaled = image if (new_w, new_h) == (w, h) else image.resize((new_w, new_h), resample)
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(scaled, ((width - new_w) // 2, (height - new_h) // 2))
    return canvas


def _hxw(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if not isinstance(error, OSError) else text
