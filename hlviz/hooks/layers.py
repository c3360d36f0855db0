"""Find and name the layers of any ``nn.Module``.

>>> import torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> hlviz.resolve(model, ["0", "re:[12]"])
['0', '1', '2']

A *layer spec* is one of

* a dotted name from ``model.named_modules()`` (``"features.3"``); the prefixes
  ``module.`` (DataParallel) and ``_orig_mod.`` (``torch.compile``) are accepted too;
* a glob: ``*`` and ``?`` stay within one dotted segment, ``**`` crosses segments
  (``"layers.*"`` are the direct children of ``layers``; ``"**.conv"`` every module
  called ``conv`` at any depth);
* a regular expression prefixed with ``re:``, matched against the whole name;
* a module class (``nn.Conv2d``) or a tuple of classes: every module of that type;
* a module object of the model;
* an integer index into :func:`layer_names` (negative counts from the end);
* a list or tuple of any of these (their union, in the order given).

The model itself (the root) is not a layer: record its output from the forward call.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from ..errors import EmptySelectionError, LayerNotFoundError, LayerSpecError, NotAModuleError

__all__ = ["LayerSpec", "layer_names", "list_layers", "resolve", "resolve_modules", "unwrap"]

LayerSpec = str | int | type | nn.Module | Sequence[Any]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_GLOB_CHARS = set("*?[")


def unwrap(model: nn.Module) -> nn.Module:
    """Return the user's model inside ``DataParallel``/DDP and ``torch.compile`` wrappers.

    >>> m = nn.Linear(2, 2); unwrap(nn.DataParallel(m)) is m
    True

    Hooks registered on the unwrapped model are seen by the wrapper, so recording a
    wrapped model works; layer names never carry the wrapper's prefix.
    """
    check_module(model)
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod  # torch.compile's OptimizedModule
    return model


def check_module(model: Any, argument: str = "model") -> None:
    """Raise :class:`NotAModuleError` unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        hint = ""
        if callable(model):
            hint = " (a plain function has no layers to hook: wrap it in an nn.Module)"
        raise NotAModuleError(
            f"{argument} must be a torch.nn.Module, got {type(model).__name__}{hint}. "
            "Pass the model object itself, e.g. hlviz.record(model, ...) rather than "
            "hlviz.record(model(x), ...)."
        )


def _named_modules(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], dict[str, nn.Module]]:
    """Canonical (deduplicated) layers in definition order, and every alias name -> module."""
    canonical, aliases, seen = [], {}, set()
    for name, module in model.named_modules(remove_duplicate=False):
        if not name:
            seen.add(id(module))
            continue
        aliases[name] = module
        if id(module) not in seen:  # the first name of a module shared under several names
            seen.add(id(module))
            canonical.append((name, module))
    return canonical, aliases


def layer_names(model: nn.Module) -> list[str]:
    """Names of every submodule (the model's layers) in definition order, root excluded.

    >>> layer_names(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    ['0', '1']
    """
    return [n for n, _ in _named_modules(unwrap(model))[0]]


def _segment_regex(segment: str) -> str:
    out, i, n = [], 0, len(segment)
    while i < n:
        c = segment[i]
        if segment.startswith("**", i):  # inside a segment, '**' may still cross dots
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^.]*")
            i += 1
        elif c == "?":
            out.append("[^.]")
            i += 1
        elif c == "[":
            start = i + 2 if segment[i + 1 : i + 2] in ("!", "]") else i + 1
            j = segment.find("]", start)
            if j == -1:  # no closing bracket: a literal '['
                out.append(re.escape(c))
                i += 1
                continue
            body = segment[i + 1 : j]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a dotted-name glob into a regex matched against ``"." + name``.

    Every segment of the name is preceded by a dot, so a whole-segment ``**`` is
    ``(?:\\.[^.]+)*``: zero or more segments, wherever it stands.
    """
    parts = []
    for segment in pattern.split("."):
        parts.append(r"(?:\.[^.]+)*" if segment == "**" else r"\." + _segment_regex(segment))
    return re.compile("".join(parts))


def _glob_hits(pattern: str, names: Iterable[str]) -> list[str]:
    rx = _glob_regex(pattern)
    return [n for n in names if rx.fullmatch("." + n)]


def _strip_wrapper_prefix(name: str, aliases: dict[str, nn.Module]) -> str:
    while name not in aliases and name.startswith(_WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def _suggest(name: str, names: Iterable[str]) -> str:
    names = list(names)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:  # a right last segment in the wrong place is a common slip
        last = name.rsplit(".", 1)[-1]
        close = [n for n in names if n.rsplit(".", 1)[-1] == last][:3]
    if not close:
        return ""
    quoted = " or ".join(repr(c) for c in close)
    return f"; did you mean {quoted}?"


def _model_label(model: nn.Module) -> str:
    return type(model).__name__


def _resolve_one(
    model: nn.Module,
    spec: Any,
    canonical: list[tuple[str, nn.Module]],
    aliases: dict[str, nn.Module],
) -> list[str]:
    names = [n for n, _ in canonical]
    name_of = {id(m): n for n, m in canonical}
    label = _model_label(model)
    see = "See hlviz.list_layers(model) for every name."

    if isinstance(spec, bool) or spec is None:
        raise LayerSpecError(
            f"a layer spec cannot be {spec!r}. Give a name ('features.3'), a glob "
            f"('features.*'), 're:<regex>', a module type, an integer index or a list of these."
        )
    if isinstance(spec, int):
        if not names:
            raise LayerNotFoundError(f"{label} has no submodules, so index {spec} names no layer.")
        if not -len(names) <= spec < len(names):
            raise LayerNotFoundError(
                f"layer index {spec} is out of range: {label} has {len(names)} layers "
                f"(valid indices {-len(names)}..{len(names) - 1}). {see}"
            )
        return [names[spec]]
    if isinstance(spec, str):
        if spec.startswith("re:"):
            try:
                rx = re.compile(spec[3:])
            except re.error as exc:
                raise LayerSpecError(
                    f"invalid regular expression in layer spec {spec!r}: {exc}. "
                    "Escape literal dots as '\\.'."
                ) from None
            hits = [n for n in names if rx.fullmatch(n)]
            if not hits:
                raise EmptySelectionError(
                    f"regex {spec!r} matched no layer of {label} (it must match the whole "
                    f"name; add '.*' to match a prefix){_suggest(spec[3:], names) or '.'} {see}"
                )
            return hits
        if _GLOB_CHARS & set(spec):
            hits = _glob_hits(spec, names)
            if not hits:
                for prefix in _WRAPPER_PREFIXES:
                    if spec.startswith(prefix):
                        return _resolve_one(model, spec[len(prefix) :], canonical, aliases)
                raise EmptySelectionError(
                    f"glob {spec!r} matched no layer of {label} ('*' stays within one dotted "
                    f"segment; use '**' to cross segments){_suggest(spec, names) or '.'} {see}"
                )
            return hits
        name = _strip_wrapper_prefix(spec, aliases)
        if name in aliases:
            return [name_of[id(aliases[name])]]
        raise LayerNotFoundError(
            f"no layer {spec!r} in {label}{_suggest(spec, names) or '.'} {see}"
        )
    if (isinstance(spec, type) and issubclass(spec, nn.Module)) or (
        isinstance(spec, tuple) and spec and all(isinstance(t, type) for t in spec)
    ):
        hits = [n for n, m in canonical if isinstance(m, spec)]
        if not hits:
            types = sorted({type(m).__name__ for _, m in canonical})
            want = spec.__name__ if isinstance(spec, type) else ", ".join(t.__name__ for t in spec)
            raise EmptySelectionError(
                f"{label} has no module of type {want}; its module types are: "
                f"{', '.join(types) or 'none'}."
            )
        return hits
    if isinstance(spec, nn.Module):
        if id(spec) in name_of:
            return [name_of[id(spec)]]
        if spec is model:
            raise LayerSpecError(
                f"the model itself ({label}) is not one of its layers: its output is what "
                "the forward call returns. Select a submodule instead."
            )
        raise LayerNotFoundError(
            f"the {type(spec).__name__} module given is not a submodule of {label} "
            "(a copy, or a module of another model?). Pass its name instead. " + see
        )
    if isinstance(spec, (list, tuple, set, frozenset)):
        raise LayerSpecError("nested lists of layer specs are not supported; flatten the list.")
    raise LayerSpecError(
        f"a layer spec cannot be a {type(spec).__name__} ({spec!r}). Give a name ('features.3'), "
        "a glob ('features.*'), 're:<regex>', a module type, an integer index or a list of these."
    )


def resolve(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Resolve a layer spec (or a list of specs) to canonical layer names.

    >>> resolve(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.ReLU)
    ['1']

    Names come back without duplicates, in the order the specs were given (a glob or a
    type expands in definition order). Raises :class:`LayerNotFoundError` for an unknown
    name or index, :class:`EmptySelectionError` when a pattern or an empty list selects
    nothing, :class:`LayerSpecError` for a spec of the wrong type.
    """
    model = unwrap(model)
    canonical, aliases = _named_modules(model)
    specs = list(layers) if isinstance(layers, (list, set, frozenset)) else [layers]
    if isinstance(layers, tuple) and not all(isinstance(t, type) for t in layers):
        specs = list(layers)
    if not specs:
        raise EmptySelectionError(
            "the list of layers is empty: name at least one layer, e.g. layers=['features.0'] "
            "or layers=nn.Conv2d. See hlviz.list_layers(model)."
        )
    out: dict[str, None] = {}
    for spec in specs:
        for name in _resolve_one(model, spec, canonical, aliases):
            out.setdefault(name, None)
    return list(out)


def resolve_modules(model: nn.Module, layers: LayerSpec) -> dict[str, nn.Module]:
    """Like :func:`resolve` but returns ``{name: module}``."""
    model = unwrap(model)
    lookup = dict(model.named_modules())
    return {name: lookup[name] for name in resolve(model, layers)}


def _shape_text(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return f"packed{tuple(value.data.shape)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shape_text(v) for v in value) + ")"
    return type(value).__name__


def list_layers(model: nn.Module, example: Any = None, *, leaves_only: bool = False):
    """A table of the model's layers: name, type, depth, parameter count, and output shape.

    >>> list_layers(nn.Sequential(nn.Linear(4, 8), nn.ReLU())).name.tolist()
    ['0', '1']

    ``example`` (a tensor, a tuple of positional arguments, or a dict of keyword
    arguments) is run once through the model under ``torch.no_grad()`` to fill the
    ``output_shape`` column; the hooks used for it are removed before returning.
    ``params`` counts the parameters of the module and its children.
    Returns a ``pandas.DataFrame`` (one row per layer, in definition order).
    """
    import pandas as pd

    from ..runtime import run_model

    model = unwrap(model)
    canonical, _ = _named_modules(model)
    rows = []
    for name, module in canonical:
        children = any(True for _ in module.children())
        if leaves_only and children:
            continue
        rows.append(
            {
                "name": name,
                "type": type(module).__name__,
                "depth": name.count(".") + 1,
                "params": sum(p.numel() for p in module.parameters()),
                "leaf": not children,
            }
        )
    table = pd.DataFrame(rows, columns=["name", "type", "depth", "params", "leaf"])
    if example is not None:
        shapes: dict[str, list[str]] = {}
        lookup = dict(canonical)
        handles = []

        def make_hook(layer: str):
            def hook(module, args, output):
                shapes.setdefault(layer, []).append(_shape_text(output))

            hook.__hlviz__ = True  # type: ignore[attr-defined]
            return hook

        try:
            for name in table["name"]:
                handles.append(lookup[name].register_forward_hook(make_hook(name)))
            with torch.no_grad():
                run_model(model, example)
        finally:
            for h in handles:
                h.remove()
        table["output_shape"] = [
            "(not run)"
            if n not in shapes
            else shapes[n][0] + (f" ({len(shapes[n])} calls)" if len(shapes[n]) > 1 else "")
            for n in table["name"]
        ]
    return table
