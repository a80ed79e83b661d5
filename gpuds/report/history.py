"""The provenance parts of a dataset card: the preprocessing ops with their fitted statistics and
what they changed, and the history of stages as a timeline."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpuds.ops.stats import RunningMoments
from gpuds.report.gather import Card
from gpuds.report.page import Cell, esc, num, table

__all__ = ["before_after", "fitted_on", "operations", "pooled", "timeline"]

_BEFORE_AFTER = {
    "standardize": ("mean", "std"),
    "normalize": ("min", "max"),
    "clip": ("min", "max"),
}
"""The fitted statistics of an op that the store's values can be compared with."""


def _last_preprocess(info: Mapping[str, Any]) -> dict[str, Any] | None:
    found = [e for e in info.get("history") or [] if e.get("stage") == "preprocess"]
    return found[-1] if found else None


def fitted_on(settings: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """The samples a ``preprocess`` fitted its statistics on: its ``fit_split`` when the store
    has that split, else all of them."""
    split = settings.get("fit_split")
    return str(split) if split and split in (info.get("splits") or []) else "all samples"


def _number(value: Any, scale: float | None = None) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    return f"{value:,}" if isinstance(value, int) else num(value, scale)


def _values(values: Any, scales: Any = None) -> str:
    """A statistic (one value per channel) as text; ``scales`` (per channel) mark values within
    a millionth of them as 0."""
    if isinstance(values, list):
        scale = scales if isinstance(scales, list) else [None] * len(values)
        return " · ".join(_number(v, s) for v, s in zip(values, scale, strict=False))
    return _number(values)


def _settings(config: Mapping[str, Any], skip: Sequence[str] = ("op", "fields", "seed")) -> str:
    parts = [
        f"{esc(k)} <code>{esc(json.dumps(v))}</code>" for k, v in config.items() if k not in skip
    ]
    return ", ".join(parts)


def operations(card: Card) -> str:
    """The ops of the last ``preprocess``, in order: settings, effect, fitted statistics."""
    entry = _last_preprocess(card.info)
    if entry is None:
        return '<p class="note">This store was not preprocessed: its values are as ingested.</p>'
    settings = entry.get("settings") or {}
    ops = list(settings.get("ops") or [])
    counts = list(entry.get("counts") or [])
    fitted = {int(e.get("index", -1)): e for e in (card.info.get("stats") or {}).get("ops") or []}
    intro = (
        f"<p><code>gpuds preprocess</code> read <code>{esc((entry.get('input') or {}).get('path'))}"
        f"</code> and ran {len(ops)} op{'s' * (len(ops) != 1)} in this order (seed "
        f"{esc(settings.get('seed'))}; statistics fitted on "
        f"{esc(fitted_on(settings, card.info))}; device "
        f"{esc(settings.get('device'))}).</p>"
    )
    items = []
    for index, config in enumerate(ops):
        fields = config.get("fields")
        on = (
            f" on <code>{esc(', '.join(fields) if isinstance(fields, list) else fields)}</code>"
            if fields
            else ""
        )
        parts = [f'<span class="badge">{esc(config.get("op"))}</span>{on}']
        extra = _settings(config)
        if extra:
            parts.append(f"<div>{extra}</div>")
        effect = counts[index] if index < len(counts) else {}
        said = {k: v for k, v in effect.items() if k != "op"}
        if said:
            parts.append(
                '<div class="note">'
                + ", ".join(f"{esc(k)} {_number(v)}" for k, v in said.items())
                + "</div>"
            )
        if index in fitted:
            parts.append(_fitted(fitted[index], card.kinds))
        items.append("<li>" + "".join(parts) + "</li>")
    return intro + '<ol class="ops" start="0">' + "".join(items) + "</ol>"


def _fitted(entry: Mapping[str, Any], fields: Mapping[str, str]) -> str:
    """What an op fitted: per field a table; what it records otherwise (the split's sizes, the
    shuffle's buckets) as one line."""
    stats = entry.get("stats") or {}
    rows: list[list[Cell]] = []
    other = []
    for key, values in stats.items():
        if key not in fields or not isinstance(values, dict):
            if isinstance(values, dict):
                text = ", ".join(f"{esc(k)}: {_values(v)}" for k, v in values.items())
            else:
                text = _values(values)
            other.append(f"{esc(key)}: {text}")
            continue
        per = values.get("per")
        for stat, value in values.items():
            if stat == "per":
                continue
            channels = per == "channel" and isinstance(value, list) and len(value) > 1
            rows.append(
                [
                    f"<code>{esc(key)}</code>",
                    f"{esc(stat)}{' (per channel)' if channels else ''}",
                    _values(value),
                ]
            )
    out = f'<div class="note">recorded: {"; ".join(other)}</div>' if other else ""
    if rows:
        out += table(["field", "fitted statistic", "value"], rows)
    return out


def pooled(moments: Sequence[RunningMoments | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and std per channel of several :class:`RunningMoments` merged (the same
    channels in each)."""
    count = mean = m2 = None
    for m in moments:
        if m is None or m.count is None or m.mean is None or m.m2 is None:
            continue
        if count is None or mean is None or m2 is None:
            count, mean, m2 = m.count.copy(), m.mean.copy(), m.m2.copy()
            continue
        total = count + m.count
        safe = np.maximum(total, 1)
        delta = m.mean - mean
        mean = mean + delta * m.count / safe
        m2 = m2 + m.m2 + delta * delta * count * m.count / safe
        count = total
    if count is None or mean is None or m2 is None:
        empty = np.zeros(0)
        return empty, empty, empty
    return count, mean, np.sqrt(m2 / np.maximum(count, 1))


def _measured(card: Card, field: str, split: str, per: str) -> dict[str, list[float]] | None:
    """The mean, std, min and max of ``field`` in ``split`` as stored, per channel (``per`` of
    the op: ``channel``) or over all values."""
    summary = card.scan.summaries.get((split, field))
    if summary is None or summary.moments is None or summary.ranges is None:
        return None
    ranges = summary.ranges
    if summary.moments.count is None or ranges.min is None or ranges.max is None:
        return None
    count, mean, std = pooled([summary.moments])
    lo, hi = ranges.min.astype(np.float64), ranges.max.astype(np.float64)
    if per != "channel" and len(count) > 1:
        # Over all values: the channels' moments merged, their ranges joined.
        total = count.sum()
        all_mean = float((count * mean).sum() / max(total, 1))
        m2 = float((count * (std**2 + (mean - all_mean) ** 2)).sum())
        return {
            "mean": [all_mean],
            "std": [float(np.sqrt(m2 / max(total, 1)))],
            "min": [float(lo.min())],
            "max": [float(hi.max())],
        }
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "min": lo.tolist(),
        "max": hi.tolist(),
    }


def before_after(card: Card) -> str:
    """Each fitted statistic next to the same statistic of the values in this store: what the
    op saw (fitted on the fit split) against what it left (measured on that split here)."""
    entry = _last_preprocess(card.info)
    if entry is None:
        return ""
    fit = fitted_on(entry.get("settings") or {}, card.info)
    split = fit if fit in card.splits else card.display_split
    rows: list[list[Cell]] = []
    for op in (card.info.get("stats") or {}).get("ops") or []:
        names = _BEFORE_AFTER.get(str(op.get("op")))
        if names is None:
            continue
        for field, fitted in (op.get("stats") or {}).items():
            if not isinstance(fitted, dict) or field not in card.kinds:
                continue
            per = str(fitted.get("per", "none"))
            measured = _measured(card, field, split, per)
            if measured is None:
                continue
            coverage = card.scan.summaries[(split, field)].coverage
            read = "all" if coverage.exact else f"{coverage.samples:,} sampled"
            for stat in names:
                before = fitted.get(stat)
                if before is None:
                    continue
                # A standardised mean is ~1e-9: read against the std beside it, that is 0.
                after = _values(measured[stat], measured["std"] if stat == "mean" else None)
                rows.append(
                    [
                        f'<span class="badge">{esc(op.get("op"))}</span> <code>{esc(field)}</code>',
                        esc(stat),
                        (_values(before), "num"),
                        (after, "num"),
                        esc(read),
                    ]
                )
    if not rows:
        return ""
    where = f"the {split} split" if split else "the store"
    note = (
        f'<p class="note">Before: the statistic each op fitted on its input '
        f"({esc(fit)}). After: the same statistic of the values stored "
        f"now, measured on {esc(where)} (per channel where the op worked per channel). After "
        "standardize a mean near 0 and a std near 1 are expected; after normalize, its range.</p>"
    )
    return (
        "<h3>Before and after</h3>"
        + note
        + table(
            [
                "op and field",
                "statistic",
                ("before (fitted)", "num"),
                ("after (in this store)", "num"),
                "values read",
            ],
            rows,
        )
    )


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return ""
    return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def _facts(entry: Mapping[str, Any], info: Mapping[str, Any], first: bool) -> list[str]:
    """What a history entry says, as short sentences (HTML)."""
    stage = entry.get("stage")
    settings = entry.get("settings") or {}
    facts = []
    source = entry.get("input")
    if isinstance(source, dict) and source.get("path"):
        facts.append(
            f"read <code>{esc(source['path'])}</code> (fingerprint "
            f"<code>{esc(source.get('fingerprint'))}</code>)"
        )
    if stage == "ingest":
        if first:
            for src in info.get("sources") or []:
                what = ", ".join(
                    f"{_number(src[k])} {k}" for k in ("files", "rows", "bytes") if k in src
                )
                facts.append(
                    f"read {esc(src.get('format'))} <code>{esc(src.get('path'))}</code>"
                    + (f": {what}" if what else "")
                )
        from gpuds.sources.base import ReadOptions

        defaults = ReadOptions().to_dict()
        options = {
            k: v
            for k, v in (settings.get("options") or {}).items()
            if k not in defaults or defaults[k] != v
        }
        if options:
            facts.append("options " + _settings(options, skip=()))
        codec = settings.get("codec") or {}
        if codec:
            facts.append(
                f"wrote chunks of {esc(settings.get('chunk_mb'))} MiB with "
                f"<code>{esc(codec.get('name'))}</code> "
                + _settings(codec.get("configuration") or {}, skip=())
            )
    elif stage == "preprocess":
        ops = [str(o.get("op")) for o in settings.get("ops") or []]
        facts.append(f"ran {len(ops)} ops: " + " → ".join(f"<code>{esc(o)}</code>" for o in ops))
        dropped = [
            f"{esc(c.get('op'))} dropped {_number(c['dropped'])}"
            for c in entry.get("counts") or []
            if c.get("dropped")
        ]
        facts.append("; ".join(dropped) if dropped else "dropped no sample")
        facts.append(
            f"seed {esc(settings.get('seed'))}, fitted on "
            f"{esc(fitted_on(settings, info))}, "
            f"device {esc(settings.get('device'))}"
        )
    elif stage == "compress":
        groups: dict[str, list[str]] = {}
        for name, field in (settings.get("fields") or {}).items():
            level = field.get("level")
            key = (
                f"{field.get('codec')}{'' if level is None else f' level {level}'}, byte shuffle "
                f"{'on' if field.get('shuffle') else 'off'}, chunks of {field.get('chunk_mb')} MiB"
                f", shards of {field.get('shard_mb')} MiB"
            )
            groups.setdefault(key, []).append(name.split("/")[-1])
        for key, names in groups.items():
            unique = ", ".join(dict.fromkeys(names))
            facts.append(f"{esc(key)}: <code>{esc(unique)}</code>")
        facts.append(
            f"device {esc(settings.get('device'))}, "
            f"{'verified against its input' if settings.get('verify') else 'not verified'}"
        )
    else:
        facts += [f"{esc(k)} <code>{esc(json.dumps(v))}</code>" for k, v in settings.items()]
    return facts


def timeline(card: Card) -> str:
    """Every stage that made the store, oldest first, with what it read, did and decided."""
    history = list(card.info.get("history") or [])
    if not history:
        return '<p class="note">The store records no history.</p>'
    items = []
    for i, entry in enumerate(history):
        facts = "".join(f"<li>{f}</li>" for f in _facts(entry, card.info, i == 0))
        decisions = (entry.get("settings") or {}).get("decisions") or {}
        if decisions:
            facts += "".join(
                f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in decisions.items()
            )
        full = esc(json.dumps(entry, indent=1))
        items.append(
            f'<li><span class="badge">{esc(entry.get("stage"))}</span>'
            f'<span class="when">{esc(entry.get("time"))} · took {_duration(entry.get("seconds"))}'
            f'</span><ul class="facts">{facts}</ul>'
            "<details><summary>every setting, as recorded</summary>"
            f"<pre>{full}</pre></details></li>"
        )
    written = (
        f'<li><span class="badge">written</span><span class="when">{esc(card.info.get("created"))}'
        f'</span><ul class="facts"><li>this store, by gpuds {esc(card.info.get("tool_version"))}'
        f", fingerprint <code>{esc(card.info.get('fingerprint'))}</code></li></ul></li>"
    )
    return f'<ol class="timeline">{"".join(items)}{written}</ol>'
