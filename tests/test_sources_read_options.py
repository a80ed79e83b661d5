"""Read options from the command line's text, and the values each choice takes."""

from __future__ import annotations

import pytest

from gpuds.errors import ConfigError
from gpuds.sources.base import ReadOptions
from gpuds.sources.images import FRAMES


def test_text_options_become_read_options():
    options = ReadOptions.from_text(
        fields="x, y,", resize="32x48", fit="pad", delimiter="tab", skip_rows=2
    )
    assert options == ReadOptions(
        fields=("x", "y"), resize=(32, 48), fit="pad", delimiter="\t", skip_rows=2
    )
    assert ReadOptions.from_text() == ReadOptions()


def test_bad_text_is_a_config_error():
    with pytest.raises(ConfigError, match="HxW"):
        ReadOptions.from_text(resize="32")
    with pytest.raises(ConfigError, match="--skip-rows"):
        ReadOptions.from_text(skip_rows=-1)


def test_choices_are_the_declared_values():
    assert ReadOptions.choices("fit") == ("stretch", "crop", "pad")
    assert ReadOptions.choices("resample") == ("nearest", "bilinear", "bicubic", "lanczos")
    assert ReadOptions.choices("frames") == FRAMES
