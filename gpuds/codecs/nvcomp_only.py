"""``--codec gdeflate | bitcomp | ans | cascaded``: nvCOMP's own formats, encoded and decoded on
a GPU only.

They are stored as the Zarr codec ``gpuds.nvcomp`` (:mod:`gpuds.codecs.zarr_nvcomp`) whose
configuration records everything decoding needs::

    {"name": "gpuds.nvcomp",
     "configuration": {"algorithm": "cascaded", "level": 2, "data_type": "<i4"}}

``data_type`` is nvCOMP's option for the element type (bitcomp, ans and cascaded: the field's
little-endian dtype when nvCOMP takes it and bytes are not shuffled, else ``|u1``; gdeflate takes
none). A RAW stream does not record it, so decoding passes the stored value; a chain without it
(stores written before it was recorded) was written with ``|u1``. Levels map to nvCOMP's knobs:
gdeflate's ``algorithm_type`` (0-5), cascaded's ``compression_level``; bitcomp and ans take none.
No CPU decodes these formats: reading them without a GPU is a clear error naming the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpuds.codecs.spec import CodecSpec, GpuImpl

__all__ = ["CODECS", "DEFAULT_DATA_TYPE", "ZARR_NAME"]

ZARR_NAME = "gpuds.nvcomp"
DEFAULT_DATA_TYPE = "|u1"
"""What a stored configuration without ``data_type`` was written with."""

_MIB = 1 << 20
_INTEGERS = frozenset({"|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8"})


class NvcompOnly(CodecSpec):
    def zarr_codec(self, level: int | None, data_type: str | None) -> Any:
        from gpuds.codecs.zarr_nvcomp import NvcompCodec

        return NvcompCodec(algorithm=self.name, level=level, data_type=data_type)

    def recognize(self, codecs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        if len(codecs) != 1 or codecs[0].get("name") != ZARR_NAME:
            return None
        config = codecs[0].get("configuration") or {}
        if config.get("algorithm") != self.name:
            return None
        data_type = config.get("data_type")
        assert self.gpu is not None
        if self.gpu.data_types:
            data_type = DEFAULT_DATA_TYPE if data_type is None else data_type
            if data_type not in self.gpu.data_types:
                return None
        elif data_type is not None:
            return None
        level = config.get("level")
        if level is not None and (not isinstance(level, int) or self.level_error(level)):
            return None
        return {"level": level, "data_type": data_type}


def _spec(name: str, summary: str, gpu: GpuImpl, levels: tuple[int, int | None] | None) -> Any:
    recorded = "`algorithm`, `level`" + (", `data_type`" if gpu.data_types else "")
    return NvcompOnly(
        name=name,
        summary=summary,
        zarr_name=ZARR_NAME,
        portability="gpuds-gpu",
        levels=levels,
        level_word="levels",
        cpu=None,
        gpu=gpu,
        chain_note=f"configuration: {recorded}",
    )


CODECS = (
    _spec(
        "gdeflate",
        "nvCOMP's GPU-friendly Deflate variant (GPU only)",
        GpuImpl(
            "GDeflate",
            256 * _MIB,
            (1 << 32) + 288,
            level_option="algorithm_type",
            note="GDeflate (level = algorithm_type 0-5)",
        ),
        (0, 5),
    ),
    _spec(
        "bitcomp",
        "nvCOMP's Bitcomp, for numbers (GPU only)",
        GpuImpl(
            "Bitcomp",
            16 * _MIB,
            1 << 25,
            data_types=_INTEGERS | {"<f2", "<f4", "<f8"},
            note="Bitcomp, lossless, data_type recorded",
        ),
        None,
    ),
    _spec(
        "ans",
        "nvCOMP's ANS entropy coder (GPU only)",
        GpuImpl(
            "ANS",
            16 * _MIB,
            1 << 25,
            data_types=frozenset({"|u1", "|i1", "<f2", "<f4"}),
            note="ANS, data_type recorded",
        ),
        None,
    ),
    _spec(
        "cascaded",
        "nvCOMP's Cascaded (RLE, delta, bit-packing), for integers (GPU only)",
        GpuImpl(
            "Cascaded",
            16 * _MIB,
            (1 << 24) + 8,
            data_types=_INTEGERS,
            level_option="compression_level",
            note="Cascaded (level = compression_level), data_type recorded",
        ),
        (0, None),
    ),
)
