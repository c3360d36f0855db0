"""The checks every hooking verb shares: a model in training mode, a layer that ran twice.

>>> import torch
>>> from torch import nn
>>> warn_if_training(nn.Sequential(nn.Linear(2, 2)).eval(), "the activations")  # silent
>>> once("fc", [torch.ones(1), torch.ones(1)], "collect keeps one activation per row")
Traceback (most recent call last):
...
hlviz.errors.LayerRepeatedError: layer 'fc' ran 2 times in one forward pass, and collect keeps one activation per row; choose a module that runs once, or use hlviz.record and rec.calls('fc') to read each call.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..errors import HlvizWarning, LayerRepeatedError, OptionError
from .layers import unwrap

__all__ = ["noisy_modules", "once", "refuse_meta", "warn_if_training", "warn_repeated"]


def noisy_modules(model: nn.Module) -> list[str]:
    """Names of the modules that make a forward pass random or batch-dependent in training
    mode: dropout with ``p > 0`` and batch norm, while ``training`` is True."""
    return [
        name
        for name, m in unwrap(model).named_modules()
        if m.training
        and (
            (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
            or isinstance(m, nn.modules.batchnorm._BatchNorm)
        )
    ]


def warn_if_training(model: nn.Module, what: str, *, stacklevel: int = 3) -> None:
    """Warn (:class:`~hlviz.errors.HlvizWarning`) when dropout or batch norm in training mode
    would make ``what`` random and unlike evaluation; silent for a model without them."""
    noisy = noisy_modules(model)
    if not noisy:
        return
    more = f" and {len(noisy) - 1} more" if len(noisy) > 1 else ""
    warnings.warn(
        f"{type(unwrap(model)).__name__} is in training mode ({noisy[0]!r}{more}: dropout or "
        f"batch norm): {what} are random and differ from evaluation. Call model.eval() first.",
        HlvizWarning,
        stacklevel=stacklevel,
    )


def warn_repeated(layer: str, *, stacklevel: int = 3) -> None:
    """The warning :func:`hlviz.record` gives when a layer runs a second time in one pass."""
    warnings.warn(
        f"layer {layer!r} ran more than once in one forward pass (a shared module?); "
        f"rec[{layer!r}] is a list with one entry per call.",
        HlvizWarning,
        stacklevel=stacklevel,
    )


def once(layer: str, value: Any, needs: str) -> Any:
    """``value`` (a recording's entry for ``layer``) if the layer ran once, else a
    :class:`~hlviz.errors.LayerRepeatedError`; ``needs`` says why the caller needs one call."""
    if isinstance(value, list):
        raise LayerRepeatedError(
            f"layer {layer!r} ran {len(value)} times in one forward pass, and {needs}; choose "
            f"a module that runs once, or use hlviz.record and rec.calls({layer!r}) to read "
            "each call."
        )
    return value


def refuse_meta(model: nn.Module, verb: str) -> None:
    """Raise :class:`~hlviz.errors.OptionError` when ``model`` has weights on the meta device
    (shapes but no values), which ``verb`` cannot run.

    >>> refuse_meta(nn.Linear(2, 2, device="meta"), "logit_lens")
    Traceback (most recent call last):
    ...
    hlviz.errors.OptionError: logit_lens needs a model with weights, but Linear is on the meta device (it has shapes but no values); load its weights first (model.to_empty(device='cpu'), then model.load_state_dict(...)).
    """
    for tensor in (*unwrap(model).parameters(), *unwrap(model).buffers()):
        if tensor.is_meta:
            raise OptionError(
                f"{verb} needs a model with weights, but {type(unwrap(model)).__name__} is on the "
                "meta device (it has shapes but no values); load its weights first "
                "(model.to_empty(device='cpu'), then model.load_state_dict(...))."
            )
        return
