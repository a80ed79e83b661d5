"""``dedupe``: drop samples that repeat an earlier sample exactly."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpuds.backend import array_module
from gpuds.errors import ConfigError
from gpuds.ops.base import Block, Op, Spec, parse_fields, require_fields

__all__ = ["Dedupe"]


class Dedupe(Op):
    """Drop every sample whose content equals that of an earlier sample; keep the first.

    Two samples are duplicates when the bytes of their values in the chosen fields are equal:
    each sample is hashed with BLAKE2b (16-byte digest) over a header naming the chosen fields
    with their dtypes and per-sample shapes, followed by the C-order bytes of the sample's value in
    each field, in the order of ``fields``. Equality is therefore *bitwise*: two NaNs with the same
    bit pattern are equal (so rows that are NaN in the same places are duplicates), while ``0.0``
    and ``-0.0``, or NaNs with different payloads, are different. "Earlier" means earlier in the
    stream reaching the op, so a shuffle placed before ``dedupe`` changes which copy is kept.

    Every field of the kept samples passes through unchanged and stays aligned; output dtypes and
    shapes equal the input ones.

    In the engine a fit pass hashes every block (in tasks, anywhere) and then decides, in block
    order, which samples repeat an earlier one (the map of hashes reduced in input order); the
    apply pass keeps what was decided for its block (1 bit per sample). The fit holds the digests
    of the unique samples seen so far, about 100 bytes per unique sample (a 16-byte ``bytes``
    object plus its slot in a Python set): ~1 GB per 10 million unique samples, freed at its end.
    Two different samples collide with probability about ``n**2 / 2**129`` for ``n`` samples,
    i.e. never in practice. Each block's chosen fields are copied to the host once (from the GPU
    if the block lives there) to be hashed. Applied without a fit, the op dedupes the blocks it is
    given in order, as a stream.

    Config keys
    -----------
    fields : str or list of str, optional
        The fields whose content defines a duplicate. Default: every field reaching the op.

    Counters
    --------
    :meth:`counts` reports ``dropped`` and ``kept`` sample totals for the last apply pass. Each
    apply pass starts from an empty set of seen samples, so every pass drops the same samples.

    Examples
    --------
    >>> op = Dedupe({"op": "dedupe"})
    >>> _ = op.plan({"x": Spec(np.dtype("int64"), ())})
    >>> out = op.apply(Block({"x": np.array([5, 7, 5, 7, 1])}, np.arange(5)))
    >>> out.fields["x"].tolist(), out.index.tolist(), op.counts()
    ([5, 7, 1], [0, 1, 4], {'dropped': 2, 'kept': 3})
    """

    name = "dedupe"
    keys = ("fields",)
    drops = True
    fit_passes = 1
    fits_on_split = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.fields = parse_fields(config, self.where, required=False)
        self._chosen: list[str] = []
        self._header = b""
        self._seen: set[bytes] = set()
        self._digests: list[np.ndarray] = []
        self._keep: dict[int, tuple[int, np.ndarray]] = {}
        self._next = 0
        self._dropped = 0
        self._kept = 0

    def plan(self, specs: dict[str, Spec]) -> dict[str, Spec]:
        require_fields(specs, self.fields, self.where)
        self._chosen = list(self.fields) if self.fields else list(specs)
        header = []
        for name in self._chosen:
            spec = specs[name]
            if spec.dtype.hasobject:
                raise ConfigError(
                    f"{self.where}: field {name!r} holds Python objects ({spec.dtype}), which "
                    "have no canonical bytes; leave it out of 'fields'"
                )
            # The layout is part of the key so that the same bytes under another dtype or shape
            # (another field list, another pipeline) never collide.
            header.append(f"{name}|{spec.dtype.str}|{spec.sample_shape};")
        self._header = "".join(header).encode()
        self.reset()
        return specs

    def digests(self, block: Block) -> np.ndarray:
        """One 16-byte digest per sample of ``block`` (an ``(n, 16)`` uint8 array)."""
        n = len(block)
        rows = _sample_bytes([block.fields[name] for name in self._chosen], n)
        prefix = hashlib.blake2b(self._header, digest_size=16)
        out = np.empty((n, 16), dtype=np.uint8)
        for i in range(n):
            digest = prefix.copy()
            digest.update(rows[i].data)
            out[i] = np.frombuffer(digest.digest(), dtype=np.uint8)
        return out

    # The fit pass hashes every block (in tasks) and decides, in block order, which samples
    # repeat an earlier one: the seen set lives in the engine's copy only.
    def fit_start(self, pass_index: int) -> None:
        self._seen = set()
        self._digests = []
        self._keep = {}

    def fit_block(self, block: Block) -> None:
        self._digests.append(self.digests(block))

    def fit_partial(self, pass_index: int) -> Any:
        return list(self._digests)

    def fit_merge(self, partial: Any, pass_index: int) -> None:
        keep = [self._first_seen(d) for d in partial]
        mask = np.concatenate(keep) if keep else np.zeros(0, dtype=bool)
        self._keep[len(self._keep)] = (len(mask), np.packbits(mask))

    def fit_end(self, pass_index: int) -> None:
        for digests in self._digests:  # fitted here, block by block, rather than merged
            mask = self._first_seen(digests)
            self._keep[len(self._keep)] = (len(mask), np.packbits(mask))
        self._digests = []
        self._seen = set()  # ~100 bytes per unique sample: not kept past the fit

    def _first_seen(self, digests: np.ndarray) -> np.ndarray:
        seen = self._seen
        keep = np.zeros(len(digests), dtype=bool)
        for i, row in enumerate(digests):
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                keep[i] = True
        return keep

    def for_block(self, key: int) -> Op:
        op = copy.copy(self)
        op._seen, op._digests = set(), []
        op._keep = {key: self._keep[key]} if key in self._keep else {}
        return op

    def reset(self) -> None:
        self._next = 0
        self._seen = set()
        self._dropped = 0
        self._kept = 0

    def apply(self, block: Block) -> Block:
        n = len(block)
        key = block.key if block.key is not None else self._next
        self._next += 1
        planned = self._keep.get(key)
        if n == 0:
            return block
        if planned is None and self._keep:
            raise ConfigError(
                f"{self.where}: block {key} was not seen by the fit pass (the data changed "
                "between the passes); rerun preprocess"
            )
        if planned is None:
            # Not fitted: dedupe the stream as it comes (blocks applied in order here).
            keep = self._first_seen(self.digests(block))
        else:
            length, packed = planned
            if length != n:
                raise ConfigError(
                    f"{self.where}: block {key} holds {n} samples, the fit pass saw {length} "
                    "(the data changed between the passes); rerun preprocess"
                )
            keep = np.unpackbits(packed, count=n).astype(bool)
        kept = int(keep.sum())
        self._kept += kept
        self._dropped += n - kept
        if kept == n:
            return block
        xp = array_module(block.index)
        return block.select(xp.asarray(keep))

    def counts(self) -> dict[str, int]:
        return {"dropped": self._dropped, "kept": self._kept}


def _sample_bytes(values: list[Any], n: int) -> np.ndarray:
    """An ``(n, total_bytes)`` uint8 host array: each row the canonical bytes of one sample."""
    parts = [np.zeros((n, 0), dtype=np.uint8)]
    for x in values:
        get = getattr(x, "get", None)
        host = np.ascontiguousarray(get() if get is not None else x)
        # Explicit row length: reshape(n, -1) fails on empty samples (shape (n, 0)).
        parts.append(host.reshape(n, host.size // n).view(np.uint8).reshape(n, -1))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
