"""Checks of numeric parameters, shared by the public functions.

Each helper returns the value in its plain Python type (``float`` or ``int``)
or raises with a message that names the parameter, its unit and the valid
range, so that bad input fails before any work starts::

    mpp = positive_float(mpp, "mpp", "µm per pixel")
    tile_size = positive_int(tile_size, "tile_size", "px at mpp")

Numbers of the wrong kind (a string, ``None``, ``True``, or ``2.5`` where a
whole number is needed) raise :class:`wsimito.errors.ParameterTypeError`,
which is both a ``TypeError`` and a ``ValueError``; values out of range raise
``ValueError``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection
from typing import TypeVar

from .errors import ParameterTypeError

T = TypeVar("T")

__all__ = [
    "choice",
    "finite_float",
    "in_range",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


def _as_float(value: object, name: str, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterTypeError(f"{name} must be a number of {unit}, got {value!r}")
    return float(value)


def finite_float(value: object, name: str, unit: str) -> float:
    """``value`` as a float; refuses NaN and ±inf.

    Parameters
    ----------
    value : object
        A real number (Python or numpy); ``bool`` is refused.
    name : str
        The parameter's name, for the message.
    unit : str
        Its unit, e.g. ``"µm per pixel"``, for the message.

    Returns
    -------
    float
        The value.

    Raises
    ------
    ParameterTypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is NaN or infinite.
    """
    number = _as_float(value, name, unit)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number of {unit}, got {number!r}")
    return number


def positive_float(value: object, name: str, unit: str) -> float:
    """``value`` as a float in ``(0, inf)``; refuses 0, negatives, NaN and ±inf.

    Parameters
    ----------
    value : object
        A real number (Python or numpy); ``bool`` is refused.
    name : str
        The parameter's name, for the message.
    unit : str
        Its unit, e.g. ``"µm per pixel"``, for the message.

    Returns
    -------
    float
        The value.

    Raises
    ------
    ParameterTypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is not in ``(0, inf)``.

    Examples
    --------
    >>> positive_float(0.25, "mpp", "µm per pixel")
    0.25
    >>> positive_float(0, "mpp", "µm per pixel")
    Traceback (most recent call last):
    ...
    ValueError: mpp must be a positive, finite number of µm per pixel (0 < mpp < inf), got 0.0
    """
    number = _as_float(value, name, unit)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(
            f"{name} must be a positive, finite number of {unit} (0 < {name} < inf), got {number!r}"
        )
    return number


def non_negative_float(value: object, name: str, unit: str) -> float:
    """``value`` as a float in ``[0, inf)``; refuses negatives, NaN and ±inf.

    Parameters
    ----------
    value : object
        A real number (Python or numpy); ``bool`` is refused.
    name : str
        The parameter's name, for the message.
    unit : str
        Its unit, for the message.

    Returns
    -------
    float
        The value.

    Raises
    ------
    ParameterTypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is not in ``[0, inf)``.
    """
    number = _as_float(value, name, unit)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(
            f"{name} must be a finite number of {unit} >= 0 (0 <= {name} < inf), got {number!r}"
        )
    return number


def in_range(
    value: object,
    name: str,
    unit: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high``; refuses NaN.

    Parameters
    ----------
    value : object
        A real number (Python or numpy); ``bool`` is refused.
    name : str
        The parameter's name, for the message.
    unit : str
        Its unit or scale, e.g. ``"fraction of the tile's area"``, for the message.
    low, high : float
        The ends of the interval, in the unit of ``value``.
    low_open, high_open : bool
        Exclude ``low`` (``high``) itself; both ends are included by default.

    Returns
    -------
    float
        The value.

    Raises
    ------
    ParameterTypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is NaN or outside the interval.

    Examples
    --------
    >>> in_range(0.5, "threshold", "score", 0.0, 1.0)
    0.5
    """
    number = _as_float(value, name, unit)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a {unit} in {interval}, got {number!r}")
    return number


def _as_int(value: object, name: str, unit: str) -> int:
    if isinstance(value, bool):
        raise ParameterTypeError(f"{name} must be a whole number of {unit}, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ParameterTypeError(
            f"{name} must be a whole number of {unit}, got {value!r}"
            + (f"; use {round(value)} or another integer" if isinstance(value, float) else "")
        ) from None


def positive_int(value: object, name: str, unit: str, *, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum`` (1 by default); refuses 2.5 and ``True``.

    Parameters
    ----------
    value : object
        A Python or numpy integer; floats (even 3.0) and ``bool`` are refused.
    name : str
        The parameter's name, for the message.
    unit : str
        Its unit, e.g. ``"px at mpp"`` or ``"tiles"``, for the message.
    minimum : int
        The smallest valid value.

    Returns
    -------
    int
        The value.

    Raises
    ------
    ParameterTypeError
        ``value`` is not an integer.
    ValueError
        ``value`` is below ``minimum``.

    Examples
    --------
    >>> positive_int(512, "tile_size", "px at mpp")
    512
    """
    number = _as_int(value, name, unit)
    if number < minimum:
        raise ValueError(f"{name} must be a whole number of {unit} >= {minimum}, got {number}")
    return number


def non_negative_int(value: object, name: str, unit: str) -> int:
    """``value`` as an int >= 0; refuses 2.5 and ``True``.

    Parameters
    ----------
    value : object
        A Python or numpy integer.
    name : str
        The parameter's name, for the message.
    unit : str
        Its unit, for the message.

    Returns
    -------
    int
        The value.

    Raises
    ------
    ParameterTypeError
        ``value`` is not an integer.
    ValueError
        ``value`` is negative.
    """
    return positive_int(value, name, unit, minimum=0)


def choice(value: T, name: str, options: Collection[T]) -> T:
    """``value`` if it is one of ``options``, e.g. a ``Literal`` string option.

    Parameters
    ----------
    value : object
        The value given.
    name : str
        The parameter's name, for the message.
    options : collection
        The valid values.

    Returns
    -------
    object
        ``value``.

    Raises
    ------
    ValueError
        ``value`` is not one of ``options``.

    Examples
    --------
    >>> choice("skip", "on_error", ("raise", "skip"))
    'skip'
    """
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name}={value!r} is not an option; choose one of {listed}")
    return value
