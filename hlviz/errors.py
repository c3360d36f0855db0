"""Errors and warnings raised by hlviz.

Every error is an :class:`HlvizError` *and* the built-in exception a caller would
naturally catch (``KeyError`` for an unknown layer, ``ValueError`` for a bad
value, ``TypeError`` for a wrong type), so ``except KeyError`` keeps working.

Messages follow one rule: say what was wrong, what was given, and how to fix it.

Which class a bad argument raises follows one rule too (``hlviz._checks`` implements it):

- the argument has the wrong **type** (a float where an int is needed, ``"yes"`` for a flag,
  a list where a dict is needed, something not callable): :class:`OptionTypeError`;
- it has the right type but a **value** that is not allowed (``0`` where an int >= 1 is
  needed, a misspelt choice, a probability outside (0, 1), two options that exclude each
  other): :class:`OptionError`;
- an array or tensor has the wrong **shape** or number of dimensions, or two that must agree
  do not: :class:`ShapeMismatchError`.
"""

from __future__ import annotations

__all__ = [
    "BaselineError",
    "ConvergenceWarning",
    "DataFileError",
    "EmptySelectionError",
    "HlvizError",
    "HlvizWarning",
    "LayerNotFoundError",
    "LayerRepeatedError",
    "LayerShapeError",
    "LayerSpecError",
    "MemoryBudgetError",
    "MissingDependencyError",
    "NotAModuleError",
    "NotFittedError",
    "NotRecordedError",
    "OptionError",
    "OptionTypeError",
    "OutputSelectError",
    "RecordingStateError",
    "ShapeMismatchError",
    "StoreCorruptError",
    "StoreMismatchError",
    "TargetError",
    "TokenInputError",
    "UnitIndexError",
]


class HlvizError(Exception):
    """Base class of every error hlviz raises on purpose."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class HlvizWarning(UserWarning):
    """Base class of hlviz's warnings (filter them with ``warnings.filterwarnings``)."""


class LayerNotFoundError(HlvizError, KeyError):
    """A layer name, index or pattern does not name a module of the model."""


class EmptySelectionError(HlvizError, ValueError):
    """A layer selection (glob, regex, type, empty list) matched no module."""


class LayerSpecError(HlvizError, TypeError):
    """A layer specification has a type hlviz does not understand."""


class NotAModuleError(HlvizError, TypeError):
    """Something that is not a ``torch.nn.Module`` was given as the model."""


class OutputSelectError(HlvizError, TypeError):
    """A module output is not a tensor and ``select=`` does not pick one out of it."""


class NotRecordedError(HlvizError, KeyError):
    """A Recording was read before the forward pass, or the layer never ran.

    A ``KeyError``, so ``rec.get(name)`` and ``name in rec.grads`` behave like a dict's."""


class NotFittedError(HlvizError, ValueError, AttributeError):
    """An estimator (a probe) was used before ``fit`` (also what scikit-learn's is: both types)."""


class OptionError(HlvizError, ValueError):
    """An option has a value hlviz cannot use (``reduce=``, ``to=``, ``value=``, ...)."""


class OptionTypeError(HlvizError, TypeError):
    """An option or argument has the wrong type (``dtype=``, an edit that is not callable, ...)."""


class UnitIndexError(HlvizError, IndexError):
    """A unit (channel, feature) index is out of range for the layer."""


class RecordingStateError(HlvizError, RuntimeError):
    """A hook context was used in a state that does not allow it (e.g. entered twice)."""


class ShapeMismatchError(HlvizError, ValueError):
    """Two tensors that must agree in shape (patch source and target, steering vector) do not."""


class TargetError(HlvizError, ValueError):
    """An attribution ``target`` does not pick one score per example from the model's output."""


class TokenInputError(HlvizError, TypeError):
    """Integer token ids were given to a method that needs gradients with respect to its input."""


class BaselineError(HlvizError, ValueError):
    """An attribution baseline is unusable (equal to the input, wrong shape, unknown PAD id)."""


class LayerShapeError(HlvizError, ValueError):
    """A layer's output has a shape the method cannot use (Grad-CAM on a layer without space)."""


class LayerRepeatedError(OptionError, ShapeMismatchError):
    """A layer ran more than once in one forward pass (a shared module) where one activation
    per input is needed; an :class:`OptionError` and a :class:`ShapeMismatchError`, the two
    classes this mistake raised before it had its own."""


class ConvergenceWarning(HlvizWarning):
    """An attribution's convergence delta is large: its scores do not add up to the change
    in the model's output (raise ``n_steps``)."""


class StoreMismatchError(HlvizError, ValueError):
    """An activation store was started by another model, layers, options or data: resuming
    into it would mix runs (``hlviz.collect(..., out=...)``)."""


class StoreCorruptError(HlvizError, OSError):
    """Files of an activation store are missing or do not match their sha256 in the manifest."""


class MemoryBudgetError(HlvizError, MemoryError):
    """Collecting in memory would exceed ``max_bytes``: stream to disk with ``out=`` instead."""


class DataFileError(HlvizError, OSError):
    """A shipped data file or checkpoint (``data/``) or a full data set folder is missing or
    damaged (its sha256 differs from ``data/SHA256SUMS``); the message names the rebuild command."""


class MissingDependencyError(HlvizError, ImportError):
    """An optional package that a feature needs is not installed; the message says what to install."""
