"""Checks that notebooks and tests call: is a model free of hooks?

>>> import torch.nn as nn, hlviz
>>> hlviz.testing.assert_no_hooks(nn.Linear(2, 2))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from torch.nn.modules import module as _module
from torch.utils.hooks import RemovableHandle

from .hooks.layers import check_module, unwrap

__all__ = ["assert_no_hooks", "list_hooks"]

_KINDS = {
    "forward": "_forward_hooks",
    "forward_pre": "_forward_pre_hooks",
    "backward": "_backward_hooks",
    "backward_pre": "_backward_pre_hooks",
    "state_dict": "_state_dict_hooks",
    "state_dict_pre": "_state_dict_pre_hooks",
    "load_state_dict_pre": "_load_state_dict_pre_hooks",
    "load_state_dict_post": "_load_state_dict_post_hooks",
}
_GLOBAL = {
    "global forward": "_global_forward_hooks",
    "global forward_pre": "_global_forward_pre_hooks",
    "global backward": "_global_backward_hooks",
    "global backward_pre": "_global_backward_pre_hooks",
}


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    owner = "hlviz" if getattr(fn, "__hlviz__", False) else getattr(fn, "__module__", "?")
    return f"{owner}:{name}"


def list_hooks(model: nn.Module) -> list[dict[str, Any]]:
    """Every hook on ``model`` and its submodules, plus PyTorch's global module hooks.

    Each entry is ``{"layer", "kind", "id", "hook", "hlviz"}``; ``layer`` is ``""`` for the
    root and ``"*"`` for global hooks, ``hlviz`` tells whether hlviz registered it.
    """
    check_module(model)
    found = []
    for name, module in unwrap(model).named_modules():
        for kind, attr in _KINDS.items():
            for hook_id, fn in getattr(module, attr, {}).items():
                found.append(
                    {
                        "layer": name,
                        "kind": kind,
                        "id": hook_id,
                        "hook": _describe(fn),
                        "hlviz": bool(getattr(fn, "__hlviz__", False)),
                    }
                )
    for kind, attr in _GLOBAL.items():
        for hook_id, fn in getattr(_module, attr, {}).items():
            found.append(
                {
                    "layer": "*",
                    "kind": kind,
                    "id": hook_id,
                    "hook": _describe(fn),
                    "hlviz": bool(getattr(fn, "__hlviz__", False)),
                }
            )
    return found


def assert_no_hooks(
    model: nn.Module,
    *,
    ignore: Iterable[RemovableHandle | dict] = (),
    hlviz_only: bool = False,
) -> None:
    """Raise ``AssertionError`` listing every hook left on ``model``.

    ``ignore`` takes hooks that are meant to stay: the handles of a user's own hooks, or
    entries of an earlier :func:`list_hooks` (a library's own hooks, as transformers
    installs on its layers); ``hlviz_only=True`` checks only for hooks hlviz registered.
    """
    skip = {h["id"] if isinstance(h, dict) else h.id for h in ignore}
    left = [h for h in list_hooks(model) if h["id"] not in skip and (h["hlviz"] or not hlviz_only)]
    if left:
        lines = "\n".join(f"  {h['layer'] or '<root>'}: {h['kind']} hook {h['hook']}" for h in left)
        raise AssertionError(f"{len(left)} hook(s) left on {type(model).__name__}:\n{lines}")
