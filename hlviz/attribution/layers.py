"""Which layer a layer method attributes to, when the obvious one never runs.

>>> import torch, torch.nn as nn
>>> from hlviz.attribution import forward as af
>>> class Tied(nn.Module):          # like T5: `shared` is the input embedding, never called
...     def __init__(self):
...         super().__init__()
...         self.shared = nn.Embedding(10, 4)
...         self.embed = nn.Embedding(10, 4)
...         self.embed.weight = self.shared.weight
...         self.head = nn.Linear(4, 2)
...     def get_input_embeddings(self):
...         return self.shared
...     def forward(self, ids):
...         return self.head(self.embed(ids).mean(1))
>>> model = Tied()
>>> prep = af.prepare(model, torch.tensor([[1, 2, 3]]), output=None)
>>> running_embedding(model, prep, "shared", model.shared)[0]
'embed'

``model.get_input_embeddings()`` is the default layer of ``layer_integrated_gradients``;
on T5 (and other models whose encoder keeps its own ``nn.Embedding`` sharing the weight) it
is never called as a module, so Captum's hook sees nothing. :func:`running_embedding` runs
one example once under :func:`hlviz.record` and takes, among the embeddings tied to the
same weight, the one that reads the attributed token ids. :func:`did_not_run` is the error
for a layer that did not run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from . import forward as af

__all__ = ["did_not_run", "running_embedding", "tied_embeddings"]


def _same_weight(a: Any, b: Any) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    if a is b:
        return True
    if a.device.type == "meta" or b.device.type == "meta" or a.shape != b.shape:
        return False
    return a.device == b.device and a.data_ptr() == b.data_ptr()


def tied_embeddings(model: nn.Module, module: nn.Module) -> list[str]:
    """Names of the ``nn.Embedding`` modules of ``model`` that share ``module``'s weight
    (``module`` itself excluded), in the model's order.

    >>> a = nn.Embedding(5, 2); b = nn.Embedding(5, 2); b.weight = a.weight
    >>> tied_embeddings(nn.ModuleDict({"a": a, "b": b, "c": nn.Embedding(5, 2)}), a)
    ['b']
    """
    weight = getattr(module, "weight", None)
    return [
        n
        for n, m in model.named_modules()
        if m is not module
        and isinstance(m, nn.Embedding)
        and _same_weight(getattr(m, "weight", None), weight)
    ]


def _reads(seen: Any, ids: torch.Tensor) -> bool:
    """Whether a recorded module input is the attributed ids (any shape, same values)."""
    calls = seen if isinstance(seen, list) else [seen]
    return any(
        isinstance(t, torch.Tensor)
        and t.numel() == ids.numel()
        and torch.equal(t.reshape(-1).to(ids.device), ids.reshape(-1))
        for t in calls
    )


def running_embedding(
    model: nn.Module, prep: af.Prepared, name: str, module: nn.Module
) -> tuple[str, nn.Module]:
    """``(name, module)`` of the embedding to attribute to, given the default ``name``.

    The default is kept when it reads the attributed input (the usual case); else the one
    embedding tied to its weight that does. With none, or several, an :class:`OptionError`
    lists the candidates and says to pass ``layer=``. One forward pass on the first example.
    """
    from ..hooks.recording import record

    candidates = [name, *tied_embeddings(model, module)]
    one, rest = af.first_row(prep.main, prep.extra)
    with torch.no_grad(), record(model, candidates, inputs=True, to=None) as rec:
        prep.forward(one, *rest)
    ran = [n for n in candidates if n in rec]
    reading = [n for n in ran if _reads(rec.inputs[n], one)]
    if name in reading or (not reading and name in ran):
        return name, module
    if len(reading) == 1:
        return reading[0], model.get_submodule(reading[0])
    raise did_not_run(model, name, module, reading or ran or candidates[1:], default=True)


def did_not_run(
    model: nn.Module,
    name: str | None,
    module: nn.Module | None,
    candidates: list[str] | None = None,
    *,
    default: bool = False,
) -> OptionError:
    """The error for a layer the forward pass never called (to raise)."""
    kind = type(module).__name__ if module is not None else "module"
    if candidates is None:
        candidates = tied_embeddings(model, module) if module is not None else []
    what = (
        f"the default layer, model.get_input_embeddings() = {name!r} ({kind}),"
        if default
        else f"layer {name!r} ({kind})"
    )
    tied = (
        f" Embeddings sharing its weight: {', '.join(map(repr, candidates))}; pass the one that "
        f"reads these inputs, e.g. layer={candidates[0]!r}."
        if candidates
        else " Pass layer= a module that runs."
    )
    return OptionError(
        f"{what} did not run when the model was called on these inputs, so there is nothing "
        f"to attribute to (a module whose weight is used by another module, or that is skipped "
        f"for these inputs, never runs itself; hlviz.list_layers(model, inputs) marks such "
        f"layers '(not run)').{tied}"
    )
