"""hlviz._checks: one checker per kind of argument, one error class per kind of mistake."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hlviz import _checks as checks
from hlviz.errors import OptionError, OptionTypeError, ShapeMismatchError


@pytest.mark.parametrize("check,low", [(checks.positive_int, 1), (checks.non_negative_int, 0)])
def test_ints_accept_ints_and_numpy_ints(check, low):
    assert check("n", low) == low and check("n", np.int64(5)) == 5
    assert type(check("n", np.int64(5))) is int
    assert check("n", None, none=True) is None


@pytest.mark.parametrize(
    "value,error,message",
    [
        (0, OptionError, r"^batch_size must be a positive int, got 0\.$"),
        (-3, OptionError, r"^batch_size must be a positive int, got -3\.$"),
        (2.0, OptionTypeError, r"^batch_size must be a positive int, got 2\.0 \(float\)\.$"),
        (True, OptionTypeError, r"got True \(bool\)"),
        ("8", OptionTypeError, r"got '8' \(str\)"),
        (None, OptionTypeError, r"got None \(NoneType\)"),
    ],
)
def test_positive_int_errors_say_what_and_which_class(value, error, message):
    with pytest.raises(error, match=message):
        checks.positive_int("batch_size", value)


def test_int_messages_mention_none_and_hint():
    with pytest.raises(OptionError, match=r"^k must be a positive int or None, got 0\. Use 5\.$"):
        checks.positive_int("k", 0, none=True, hint="Use 5.")
    with pytest.raises(OptionError, match=r"seed must be a non-negative int, got -1"):
        checks.non_negative_int("seed", -1)


def test_type_errors_are_type_errors_and_value_errors_value_errors():
    # callers keep catching the built-in exceptions
    with pytest.raises(TypeError):
        checks.positive_int("n", "x")
    with pytest.raises(ValueError):
        checks.positive_int("n", 0)


def test_boolean():
    assert checks.boolean("tokens", False) is False
    with pytest.raises(OptionTypeError, match=r"^tokens must be True or False, got 1 \(int\)\.$"):
        checks.boolean("tokens", 1)


def test_choice_suggests_the_nearest_option():
    assert checks.choice("reduce", "max", ["mean", "max"]) == "max"
    with pytest.raises(
        OptionError, match=r"^reduce='mena' is not one of 'mean', 'max'; did you mean 'mean'\?$"
    ):
        checks.choice("reduce", "mena", ["mean", "max"])
    with pytest.raises(OptionError, match=r"^what='xyz' is not one of 'target', 'top'\.$"):
        checks.choice("what", "xyz", ("target", "top"))


def test_choice_of_the_wrong_type_is_a_type_error():
    with pytest.raises(OptionTypeError, match=r"positions must be one of 'each', 'all', got 3"):
        checks.choice("positions", 3, ("each", "all"))
    with pytest.raises(OptionTypeError, match=r"got \[1\] \(list\)"):
        checks.choice("positions", [1], ("each", "all"))
    assert checks.choice("what", None, ("target", "top", None)) is None


def test_fraction():
    assert checks.fraction("alpha", 0.5) == 0.5
    assert checks.fraction("q", 1, closed=True) == 1.0
    with pytest.raises(OptionError, match=r"^alpha must lie in \(0, 1\), got 0\.$"):
        checks.fraction("alpha", 0)
    with pytest.raises(OptionError, match=r"q must lie in \[0, 1\], got 1\.5"):
        checks.fraction("q", 1.5, closed=True)
    with pytest.raises(OptionTypeError, match=r"alpha must be a number in \(0, 1\), got '0\.1'"):
        checks.fraction("alpha", "0.1")


def test_instance_and_callable():
    assert checks.instance("out", "d", str, "a path") == "d"
    with pytest.raises(OptionTypeError, match=r"^out must be a path \(str\), got int\. Or None\.$"):
        checks.instance("out", 1, str, "a path (str)", hint="Or None.")
    assert checks.callable_("f", len) is len
    with pytest.raises(OptionTypeError, match=r"metric must be a function, got 'x' \(str\)"):
        checks.callable_("metric", "x")


def test_ndim():
    x = torch.zeros(2, 3)
    assert checks.ndim("x", x, 2) is x and checks.ndim("x", x, (2, 3)) is x
    with pytest.raises(
        ShapeMismatchError, match=r"^values must be 2-D \(rows x columns\), got shape \(4,\)\.$"
    ):
        checks.ndim("values", np.zeros(4), 2, "(rows x columns)")
    with pytest.raises(ShapeMismatchError, match=r"must be 3-D or 4-D, got shape \(2, 3\)"):
        checks.ndim("x", x, (3, 4))
    with pytest.raises(OptionTypeError, match=r"x must be an array or tensor, got list"):
        checks.ndim("x", [1, 2], 1)
