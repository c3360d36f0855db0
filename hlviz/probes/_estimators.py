"""The estimator a ``probe=`` argument names (shared by :func:`probe_layers` and
:func:`mdl_layers`)."""

from __future__ import annotations

from typing import Any

from .._checks import choice
from ..errors import OptionTypeError
from .linear import LinearProbe
from .mlp import MLPProbe

__all__ = ["PROBE_NAMES", "probe_template"]


PROBE_NAMES = ("linear", "mlp")


def probe_template(probe: Any, task: str = "auto") -> Any:
    """The estimator ``probe=`` names: None or ``"linear"`` (a :class:`LinearProbe`),
    ``"mlp"`` (an :class:`MLPProbe`), or an unfitted scikit-learn-style estimator.

    >>> probe_template("svm")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionError: probe='svm' is not one of 'linear', 'mlp'. Or pass an unfitted estimator with fit and get_params, e.g. LinearProbe(C=0.1) or sklearn.svm.SVC(probability=True).
    """
    hint = (
        "Or pass an unfitted estimator with fit and get_params, e.g. LinearProbe(C=0.1) or "
        "sklearn.svm.SVC(probability=True)."
    )
    if probe is None:
        return LinearProbe(task=task)
    if isinstance(probe, str):
        name = choice("probe", probe, PROBE_NAMES, hint=hint)
        return LinearProbe(task=task) if name == "linear" else MLPProbe()
    if isinstance(probe, type) or not (hasattr(probe, "fit") and hasattr(probe, "get_params")):
        got = f"the class {probe.__name__}" if isinstance(probe, type) else type(probe).__name__
        raise OptionTypeError(
            f"probe must be None, 'linear', 'mlp' or an unfitted estimator with fit and "
            f"get_params (scikit-learn style), got {got}. {hint}"
        )
    return probe
