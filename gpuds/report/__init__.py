"""``gpuds report``: a dataset card, one self-contained HTML file that shows what a store holds.

Modules: :mod:`~gpuds.report.scan` (statistics in bounded memory), :mod:`~gpuds.report.samples`
(the samples shown), :mod:`~gpuds.report.gather` (everything read from the store),
:mod:`~gpuds.report.figures` (matplotlib), :mod:`~gpuds.report.sections`,
:mod:`~gpuds.report.history` and :mod:`~gpuds.report.page` (the HTML). docs/report.md describes
the card.

>>> import gpuds
>>> gpuds.report("data.zarr", "card.html")["output"]              # doctest: +SKIP
'card.html'
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gpuds._version import __version__
from gpuds.errors import ConfigError, StoreExistsError
from gpuds.progress import NullProgress, Progress
from gpuds.report.figures import require_matplotlib

__all__ = ["report"]

MAX_PER_CLASS = 64


def report(
    store: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    seed: int = 0,
    per_class: int = 8,
    sample_mb: float = 64.0,
    bench: bool = False,
    png_dir: str | Path | None = None,
    verify: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the dataset card of ``store`` to ``out`` (HTML, self-contained).

    Parameters
    ----------
    store
        A complete gpuds store (any stage).
    out
        The HTML file to write; an existing file is replaced only with ``overwrite``.
    overwrite
        Replace ``out`` and, with ``png_dir``, the PNG files of the same names.
    seed
        Chooses the samples shown, and the chunks read of a field larger than ``sample_mb``.
    per_class
        Images shown per class (1 to 64).
    sample_mb
        A field of a split holding at most this many MiB (uncompressed) is read whole for the
        statistics; a larger one on a seeded sample of its chunks of that size. Memory holds one
        chunk at a time either way.
    bench
        Measure each field's decode rate with the code of ``gpuds bench`` (seconds per field).
    png_dir
        Also write every figure as a PNG file in this folder (created if needed).
    verify
        Read and decode every chunk first, as ``gpuds inspect --verify``, and say so.
    progress
        Receives the phases (verify, read).

    Returns
    -------
    dict
        ``output``, ``bytes``, ``store``, ``sections`` (their ids), ``figures`` (how many),
        ``png`` (the files written), ``seconds``, and ``statistics``: how they were read
        (``exact``, ``samples_read`` and ``samples`` counted per field and split,
        ``chunk_reads``, ``sample_mb``, ``seed``).

    Examples
    --------
    See :mod:`gpuds.report`.
    """
    require_matplotlib()
    started = time.perf_counter()
    progress = progress or NullProgress()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"Expected a seed >= 0, got {seed!r}")
    if (
        isinstance(per_class, bool)
        or not isinstance(per_class, int)
        or not 1 <= per_class <= MAX_PER_CLASS
    ):
        raise ConfigError(f"Expected per_class from 1 to {MAX_PER_CLASS}, got {per_class!r}")
    if not sample_mb > 0:
        raise ConfigError(f"Expected sample_mb > 0, got {sample_mb!r}")
    target = Path(out)
    _check_output(target, Path(store), overwrite)

    from gpuds.report.gather import gather
    from gpuds.report.page import document, esc
    from gpuds.report.sections import make_figures, render_sections, statistics_note

    card = gather(
        str(store),
        seed=seed,
        per_class=per_class,
        budget_mb=float(sample_mb),
        verify=verify,
        bench=bench,
        progress=progress,
    )
    figs = make_figures(card, grids=png_dir is not None)
    pngs: list[Path] = []
    if png_dir is not None:
        folder = Path(png_dir)
        pngs = [folder / f"{stem}.png" for stem in figs]
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--png {folder}: exists and is not a folder")
        taken = [p for p in pngs if p.exists()]
        if taken and not overwrite:
            raise StoreExistsError(
                f"{taken[0]} exists{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}; "
                "pass --overwrite to replace the card's PNG files"
            )
    sections = render_sections(card, figs)
    name = Path(str(store).rstrip("/")).name or str(store)
    page = document(
        title=name,
        subtitle=(
            f"{card.inspect['num_samples']:,} samples · {len(card.names)} fields · "
            f"card written {esc(card.generated)} by gpuds {esc(__version__)}"
        ),
        sections=sections,
        footer=(
            f"Written by gpuds {esc(__version__)} from <code>{esc(card.path)}</code> on "
            f"{esc(card.generated)}. Statistics: {esc(statistics_note(card))}. Rewrite it with "
            f"<code>gpuds report {esc(card.path)} -o {esc(target.name)} --overwrite</code>."
        ),
        version=__version__,
    )
    _write(target, page.encode("utf-8"))
    if pngs:
        pngs[0].parent.mkdir(parents=True, exist_ok=True)
        for path, (png, _) in zip(pngs, figs.values(), strict=True):
            _write(path, png.data)
    parts = list(card.scan.summaries.values())
    return {
        "output": str(target),
        "bytes": target.stat().st_size,
        "store": card.path,
        "sections": [key for key, _, _ in sections],
        "figures": len(figs),
        "png": [str(p) for p in pngs],
        "statistics": {
            "exact": all(s.coverage.exact for s in parts),
            "samples_read": sum(s.coverage.samples for s in parts),
            "samples": sum(s.coverage.length for s in parts),
            "chunk_reads": card.scan.chunks_read,
            "sample_mb": float(sample_mb),
            "seed": seed,
        },
        "seconds": round(time.perf_counter() - started, 2),
    }


def _check_output(target: Path, store: Path, overwrite: bool) -> None:
    """The card may replace a file only with ``overwrite``, never a folder, and never lie in
    the store (a stage never modifies its input)."""
    if target.is_dir():
        raise ConfigError(f"{target}: is a folder; give the path of the HTML file to write")
    if target.exists() and not overwrite:
        raise StoreExistsError(f"{target} exists; pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise ConfigError(f"{target}: its folder {target.parent} does not exist")
    if "://" not in str(store):
        inside = target.resolve()
        if store.resolve() == inside or store.resolve() in inside.parents:
            raise ConfigError(
                f"{target} lies inside the store {store}; write the card elsewhere (nothing "
                "modifies a stage's input)"
            )


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling renamed into place: a reader never
    sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
