"""Parameter checks: every number is refused up front with its name, unit and range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsimito.checks import (
    choice,
    in_range,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from wsimito.errors import ParameterTypeError


@pytest.mark.parametrize("value", [2.5, 3.0, True, "8", None])
def test_whole_numbers_refuse_floats_bools_and_strings_as_both_type_and_value_errors(value):
    with pytest.raises(ParameterTypeError, match="tile_size must be a whole number of px at mpp"):
        positive_int(value, "tile_size", "px at mpp")
    assert issubclass(ParameterTypeError, TypeError) and issubclass(ParameterTypeError, ValueError)


def test_whole_numbers_accept_numpy_integers_and_check_the_minimum():
    assert positive_int(np.int64(7), "batch_size", "tiles") == 7
    assert type(positive_int(np.int32(7), "batch_size", "tiles")) is int
    assert non_negative_int(0, "overlap", "px at mpp") == 0
    with pytest.raises(ValueError, match=r"batch_size must be a whole number of tiles >= 1, got 0"):
        positive_int(0, "batch_size", "tiles")
    with pytest.raises(ValueError, match=r"overlap .* >= 0, got -1"):
        non_negative_int(-1, "overlap", "px at mpp")


@pytest.mark.parametrize("value", [0, -0.25, math.nan, math.inf, -math.inf])
def test_positive_numbers_name_the_parameter_unit_and_range(value):
    with pytest.raises(ValueError, match=r"^mpp must be a positive, finite number of µm per pixel"):
        positive_float(value, "mpp", "µm per pixel")
    with pytest.raises(ValueError, match=r"\(0 < mpp < inf\)"):
        positive_float(value, "mpp", "µm per pixel")


def test_numbers_refuse_bools_and_strings_and_keep_numpy_floats():
    with pytest.raises(ParameterTypeError, match="mpp must be a number of µm per pixel"):
        positive_float(True, "mpp", "µm per pixel")
    with pytest.raises(ParameterTypeError):
        non_negative_float("1", "min_object_um2", "µm²")
    assert positive_float(np.float32(0.5), "mpp", "µm per pixel") == 0.5
    assert non_negative_float(0, "min_object_um2", "µm²") == 0.0
    with pytest.raises(ValueError, match="min_object_um2 must be a finite number of µm² >= 0"):
        non_negative_float(-1, "min_object_um2", "µm²")


def test_ranges_include_their_ends_unless_open_and_refuse_nan():
    assert in_range(1.0, "threshold", "score", 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"threshold must be a score in \[0, 1\], got nan"):
        in_range(math.nan, "threshold", "score", 0.0, 1.0)
    with pytest.raises(ValueError, match=r"in \(0, 1\], got -0.5"):
        in_range(-0.5, "threshold", "score", 0.0, 1.0, low_open=True)
    with pytest.raises(ValueError, match=r"in \[0, 1\), got 1.0"):
        in_range(1.0, "min_tissue", "fraction", 0.0, 1.0, high_open=True)


def test_choice_lists_the_options():
    assert choice("skip", "on_error", ("raise", "skip")) == "skip"
    with pytest.raises(ValueError, match=r"on_error='ignore' .* choose one of 'raise', 'skip'"):
        choice("ignore", "on_error", ("raise", "skip"))
