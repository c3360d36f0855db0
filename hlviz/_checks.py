"""Argument checks shared by every hlviz module: one function per kind of argument.

>>> positive_int("batch_size", 32)
32
>>> choice("reduce", "mean", ("mean", "max", "last"))
'mean'
>>> choice("reduce", "maen", ("mean", "max", "last"))
Traceback (most recent call last):
...
hlviz.errors.OptionError: reduce='maen' is not one of 'mean', 'max', 'last'; did you mean 'mean'?

Which error each check raises follows the rule in :mod:`hlviz.errors`: a wrong *type* is an
:class:`~hlviz.errors.OptionTypeError`, a value of the right type that is not allowed is an
:class:`~hlviz.errors.OptionError`, and an array of the wrong shape is a
:class:`~hlviz.errors.ShapeMismatchError`. Every message names the argument, shows what was
given and says what to give instead; ``hint=`` adds a sentence for the caller's context.
Each check returns its (normalised) value, so ``n = positive_int("n", n)`` reads as one line.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from .errors import OptionError, OptionTypeError, ShapeMismatchError

__all__ = [
    "boolean",
    "callable_",
    "choice",
    "fraction",
    "instance",
    "ndim",
    "non_negative_int",
    "positive_int",
]


def _tail(hint: str) -> str:
    return f" {hint}" if hint else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int(name: str, value: Any, low: int, none: bool, hint: str) -> int | None:
    if value is None and none:
        return None
    wanted = ("a positive int" if low == 1 else "a non-negative int") + (" or None" if none else "")
    if not _is_int(value):
        raise OptionTypeError(
            f"{name} must be {wanted}, got {value!r} ({type(value).__name__}).{_tail(hint)}"
        )
    if value < low:
        raise OptionError(f"{name} must be {wanted}, got {value!r}.{_tail(hint)}")
    return int(value)


def positive_int(name: str, value: Any, *, none: bool = False, hint: str = "") -> Any:
    """``value`` as a positive int, >= 1 (or None when ``none=True``).

    >>> positive_int("k", 0)
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionError: k must be a positive int, got 0.
    >>> positive_int("k", 2.0)
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionTypeError: k must be a positive int, got 2.0 (float).
    """
    return _int(name, value, 1, none, hint)


def non_negative_int(name: str, value: Any, *, none: bool = False, hint: str = "") -> Any:
    """``value`` as a non-negative int, >= 0 (or None when ``none=True``).

    >>> non_negative_int("seed", 0)
    0
    """
    return _int(name, value, 0, none, hint)


def boolean(name: str, value: Any, *, hint: str = "") -> bool:
    """``value`` if it is True or False (not 0/1, not a string).

    >>> boolean("tokens", "yes")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionTypeError: tokens must be True or False, got 'yes' (str).
    """
    if not isinstance(value, bool):
        raise OptionTypeError(
            f"{name} must be True or False, got {value!r} ({type(value).__name__}).{_tail(hint)}"
        )
    return value


def choice(name: str, value: Any, choices: Iterable[Any], *, hint: str = "") -> Any:
    """``value`` if it is one of ``choices``; else an error that suggests the nearest one.

    A value of another type than every choice (``positions=3`` where the choices are
    strings) is an :class:`OptionTypeError`, a misspelt one an :class:`OptionError`.

    >>> choice("positions", 3, ("each", "all"))
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionTypeError: positions must be one of 'each', 'all', got 3 (int).
    """
    options = tuple(choices)
    listed = ", ".join(map(repr, options))
    try:
        if value in options:
            return value
    except TypeError:  # an unhashable or uncomparable value
        pass
    if not any(isinstance(value, type(o)) for o in options):
        raise OptionTypeError(
            f"{name} must be one of {listed}, got {value!r} ({type(value).__name__})." + _tail(hint)
        )
    near = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    guess = f"; did you mean {near[0]!r}?" if near else "."
    raise OptionError(f"{name}={value!r} is not one of {listed}{guess}{_tail(hint)}")


def fraction(name: str, value: Any, *, closed: bool = False, hint: str = "") -> float:
    """``value`` as a float strictly between 0 and 1 (``closed=True``: 0 and 1 allowed).

    >>> fraction("alpha", 0.05)
    0.05
    >>> fraction("alpha", 1.5)
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionError: alpha must lie in (0, 1), got 1.5.
    """
    span = "[0, 1]" if closed else "(0, 1)"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise OptionTypeError(
            f"{name} must be a number in {span}, got {value!r} ({type(value).__name__})."
            + _tail(hint)
        )
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if not ok:
        raise OptionError(f"{name} must lie in {span}, got {value!r}.{_tail(hint)}")
    return float(value)


def instance(
    name: str, value: Any, types: type | tuple[type, ...], what: str, *, hint: str = ""
) -> Any:
    """``value`` if it is an instance of ``types``; ``what`` says what to give in words.

    >>> instance("out", 3, str, "a directory path (str)")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionTypeError: out must be a directory path (str), got int.
    """
    if not isinstance(value, types):
        raise OptionTypeError(f"{name} must be {what}, got {type(value).__name__}.{_tail(hint)}")
    return value


def callable_(name: str, value: Any, what: str = "a function", *, hint: str = "") -> Callable:
    """``value`` if it can be called.

    >>> callable_("metric", 1, "a function logits -> tensor")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionTypeError: metric must be a function logits -> tensor, got 1 (int).
    """
    if not callable(value):
        raise OptionTypeError(
            f"{name} must be {what}, got {value!r} ({type(value).__name__}).{_tail(hint)}"
        )
    return value


def ndim(
    name: str, array: Any, dims: int | tuple[int, ...], axes: str = "", *, hint: str = ""
) -> Any:
    """``array`` if it has ``dims`` dimensions (one of them, for a tuple); ``axes`` names them.

    >>> import numpy as np
    >>> ndim("pattern", np.zeros(3), 2, "(queries, keys)")
    Traceback (most recent call last):
    ...
    hlviz.errors.ShapeMismatchError: pattern must be 2-D (queries, keys), got shape (3,).
    """
    allowed = (dims,) if isinstance(dims, int) else tuple(dims)
    shape = getattr(array, "shape", None)
    if shape is None:
        raise OptionTypeError(
            f"{name} must be an array or tensor, got {type(array).__name__}.{_tail(hint)}"
        )
    if len(shape) not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        axes = f" {axes}" if axes else ""
        raise ShapeMismatchError(
            f"{name} must be {want}{axes}, got shape {tuple(shape)}.{_tail(hint)}"
        )
    return array
