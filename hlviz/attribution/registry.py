"""The attribution method registry: one record per method, saying what it needs and how it runs.

>>> from hlviz.attribution.registry import METHODS
>>> occlusion = METHODS["occlusion"]
>>> occlusion.captum, occlusion.gradients, occlusion.token_ids, occlusion.layer
('Occlusion', False, True, False)

:func:`hlviz.attribute` reads everything it checks from the record: the options the method
takes, whether it needs ``layer=`` (and may default to the input embedding), whether it
takes a baseline and ``n_steps`` (a path integral), whether it needs gradients with respect
to the input (then integer token ids are refused) and whether Captum batches it internally
(``internal_batch_size``). A new method is one :class:`Method` passed to :func:`register`
(the records of the built-in methods are in :mod:`hlviz.attribution.methods`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import OptionError, TokenInputError
from ..hooks.layers import resolve_modules

__all__ = ["METHODS", "Call", "Method", "lookup", "register"]


@dataclass(frozen=True)
class Call:
    """What a method's ``run`` gets: the prepared inputs (:class:`~hlviz.attribution.forward.
    Prepared`), the layer (name and module, or ``None``), what the probe pass saw, the checked
    target, the baseline, ``n_steps``, Captum's internal batch size and the method options."""

    prep: Any
    module: nn.Module | None
    name: str | None
    probed: Any
    target: Any
    baseline: Any
    n_steps: int
    internal_batch_size: int | None
    options: dict[str, Any]


@dataclass(frozen=True)
class Method:
    """One attribution method.

    ``name``: what ``method=`` says; ``captum``: the Captum class behind it; ``run(call)``
    returns ``(values, delta or None)``; ``options``: its own keyword arguments (every method
    also takes ``input_key``). ``layer``: needs ``layer=``; ``embedding_layer``: ``layer``
    defaults to ``model.get_input_embeddings()``; ``probe_layer``: the probe pass records
    the layer's output shape. ``baseline``: takes a baseline; ``path``: a path integral that
    takes ``n_steps``; ``delta``: Captum returns a convergence delta. ``gradients``: needs
    gradients with respect to the input; ``token_ids``: accepts integer token ids.
    ``batched``: ``internal_batch_size`` applies; ``rows_per_example``: the fewest rows one
    internal batch holds per example; ``steps_option``: the option that replaces ``n_steps``
    as the number of expanded rows per example (smoothgrad's ``nt_samples``).
    """

    name: str
    captum: str
    run: Callable[[Call], tuple[torch.Tensor, torch.Tensor | None]]
    options: tuple[str, ...] = ()
    layer: bool = False
    embedding_layer: bool = False
    probe_layer: bool = False
    baseline: bool = False
    path: bool = False
    delta: bool = False
    gradients: bool = True
    token_ids: bool = False
    batched: bool = False
    rows_per_example: int = 1
    steps_option: tuple[str, int] | None = None

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse options the method does not take, naming the ones it does."""
        unknown = sorted(set(options) - set(self.options) - {"input_key"})
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise OptionError(
                f"method {self.name!r} does not take {', '.join(unknown)}; its options are: "
                f"{allowed} (and input_key=)."
            )

    def resolve_layer(self, model: nn.Module, layer: Any) -> tuple[str | None, nn.Module | None]:
        """``(name, module)`` of the one layer the method attributes to (``(None, None)``
        for input methods, which refuse ``layer=``)."""
        if not self.layer:
            if layer is not None:
                raise OptionError(
                    f"method {self.name!r} attributes to the input and takes no layer (got "
                    f"layer={layer!r}); use layer_conductance or grad_cam for a layer."
                )
            return None, None
        if layer is None and self.embedding_layer:
            embed = getattr(model, "get_input_embeddings", lambda: None)()
            if isinstance(embed, nn.Module):
                layer = embed
        if layer is None:
            raise OptionError(
                f"method {self.name!r} needs layer= (a name such as 'features.3', a glob, a type "
                "or a module of the model). See hlviz.list_layers(model)."
            )
        found = resolve_modules(model, layer)
        if len(found) != 1:
            raise OptionError(
                f"layer={layer!r} selects {len(found)} layers ({', '.join(list(found)[:5])}); "
                f"{self.name} attributes to one layer at a time: name one."
            )
        return next(iter(found.items()))

    def check_input(self, model: nn.Module, main: torch.Tensor) -> None:
        """Refuse integer token ids when the method needs gradients with respect to them."""
        if main.is_floating_point() or self.token_ids:
            return
        embeds = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
        if callable(getattr(model, "get_input_embeddings", None)):
            where = "(its default layer is the model's input embedding)"
        elif embeds:
            where = f"and layer= the embedding that reads the ids (one of {', '.join(embeds[:4])})"
        else:
            where = "and layer=<the embedding layer>"
        free = ", ".join(repr(m.name) for m in METHODS.values() if not m.gradients)
        raise TokenInputError(
            f"method {self.name!r} takes gradients with respect to its input, but the input holds "
            f"integer token ids ({main.dtype}), which have no gradient. Attribute tokens with "
            f"method='layer_integrated_gradients' {where} (the PAD baseline keeps special "
            f"tokens), or with a method that needs no gradients ({free})."
        )


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name already taken is refused)."""
    if method.name in METHODS:
        raise OptionError(
            f"an attribution method named {method.name!r} is already registered; give the new "
            "one another name."
        )
    METHODS[method.name] = method
    return method


def lookup(name: Any, options: dict[str, Any]) -> Method:
    """The record of ``name``, with ``options`` checked against it."""
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise OptionError(
            f"method={name!r} is not an attribution method{hint} Choose one of "
            f"{', '.join(METHODS)} (TCAV concepts: hlviz.tcav; sanity checks: hlviz.sanity_check)."
        )
    method = METHODS[name]
    method.check_options(options)
    return method
