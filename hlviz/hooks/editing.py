"""Change what hidden layers output, inside a ``with`` block: ablate, patch, steer.

>>> import torch, torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with hlviz.edit(model, {"0": hlviz.ablate(units=[0, 1])}), hlviz.record(model, "0") as rec:
...     _ = model(torch.randn(3, 4))
>>> rec["0"][:, :2].abs().sum().item()
0.0

An edit function receives the layer's output tensor (and, if it takes two
arguments, the layer name) and returns the new tensor, or ``None`` to keep it.
Edit hooks run before every other forward hook, so a :func:`~hlviz.record` of the
same layer sees the edited value whichever context was entered first.
"""

from __future__ import annotations

import inspect
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import (
    LayerSpecError,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
    UnitIndexError,
)
from .context import HookContext, mark
from .layers import resolve, unwrap
from .outputs import Layout, LayoutHint, Select, explain, layout, layout_hints, pick, put_back

__all__ = ["EditFn", "Editing", "ablate", "edit", "patch", "steer"]


class EditFn:
    """Base of the edit helpers: ``apply(tensor, layer, hint)`` returns the new tensor.

    ``hint`` (a :class:`~hlviz.hooks.outputs.LayoutHint` or a module) tells where units and
    positions lie; called directly, a helper assumes ``(N, C, ...)`` or ``(N, T, D)``.
    """

    def apply(
        self, tensor: torch.Tensor, layer: str, hint: LayoutHint | nn.Module | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, tensor: torch.Tensor, layer: str = "", hint: LayoutHint | None = None):
        return self.apply(tensor, layer, hint)


def _index(lay: Layout, ndim: int, units: Sequence[int] | None, positions: Any) -> tuple:
    """An indexing tuple selecting ``units`` on the unit axis and ``positions`` on the position axis."""
    index: list[Any] = [slice(None)] * ndim
    if units is not None:
        index[lay.units] = torch.as_tensor(list(units), dtype=torch.long)
    if positions is not None:
        if len(lay.positions) != 1:
            raise OptionError(
                f"positions= needs an activation with one position axis (a sequence), but this "
                f"one has {len(lay.positions)} ({lay.kind}); select spatial locations with a callable edit."
            )
        pos = (
            positions
            if isinstance(positions, slice)
            else torch.as_tensor(positions, dtype=torch.long)
        )
        index[lay.positions[0]] = pos
    tensors = [i for i in index if isinstance(i, torch.Tensor)]
    if len(tensors) == 2:  # two advanced indices would pair up element-wise; take the cross product
        a, b = lay.units, lay.positions[0]
        index[a] = index[a].view(-1, 1) if a < b else index[a].view(1, -1)
        index[b] = index[b].view(1, -1) if a < b else index[b].view(-1, 1)
    return tuple(index)


def _as_units(units: Any) -> list[int] | None:
    """``None``, one index or a sequence of indices (ints, numpy or tensor integers) -> list."""
    if units is None:
        return None
    if isinstance(units, torch.Tensor):
        units = units.flatten().tolist()
    elif isinstance(units, numbers.Integral):
        units = [units]
    try:
        return [operator.index(u) for u in units]
    except TypeError:
        raise OptionTypeError(
            f"units must be an int or a sequence of ints (channel/feature indices), got {units!r}."
        ) from None


def _check_units(units: Any, size: int, layer: str, lay: Layout | None = None) -> None:
    if units is None:
        return
    bad = [u for u in units if not -size <= int(u) < size]
    if bad:
        raise UnitIndexError(
            f"units {bad} are out of range for layer {layer!r}, which has {size} units "
            f"(valid {-size}..{size - 1})" + (f"; {explain(lay, layer)}." if lay else ".")
        )


class _Ablate(EditFn):
    def __init__(self, units, value, positions):
        self.units, self.value, self.positions = units, value, positions

    def apply(self, tensor, layer, hint):
        lay = layout(hint, tensor)
        _check_units(self.units, tensor.shape[lay.units], layer, lay)
        index = _index(lay, tensor.dim(), self.units, self.positions)
        out = tensor.clone()
        if self.value == "mean":
            dims = [d for d in range(tensor.dim()) if d != lay.units]
            mean = tensor.mean(dim=dims, keepdim=True).expand_as(tensor)
            out[index] = mean[index]
        else:
            out[index] = self.value
        return out

    def __repr__(self):
        return f"ablate(units={self.units}, value={self.value!r}, positions={self.positions})"


def ablate(
    units: Sequence[int] | None = None,
    *,
    value: float | str = 0.0,
    positions: Sequence[int] | slice | None = None,
) -> EditFn:
    """Set ``units`` (channels/features; all when ``None``) to ``value``.

    Example::

        hlviz.edit(model, {"features.3": hlviz.ablate(units=[7, 12])})

    ``value="mean"`` replaces each unit by its mean over the batch and positions
    (mean-ablation). ``positions`` restricts the edit to some tokens/time steps.
    """
    if not (isinstance(value, (int, float)) or value == "mean"):
        raise OptionError(f"ablate value must be a number or 'mean', got {value!r}.")
    units = _as_units(units)
    return _Ablate(units, value, positions)


class _Patch(EditFn):
    def __init__(self, source, units, positions):
        self.source, self.units, self.positions = source, units, positions

    def _value(self, layer: str) -> torch.Tensor:
        src = self.source
        if isinstance(src, torch.Tensor):
            return src
        value = src[layer]
        if isinstance(value, list):
            raise OptionError(
                f"layer {layer!r} ran {len(value)} times in the source recording; patch with one "
                "of the calls explicitly: hlviz.patch(rec.calls(layer)[i])."
            )
        return value

    def apply(self, tensor, layer, hint):
        value = self._value(layer).to(device=tensor.device, dtype=tensor.dtype)
        if value.shape != tensor.shape:
            if (
                value.dim() == tensor.dim()
                and value.shape[0] == 1
                and value.shape[1:] == tensor.shape[1:]
            ):
                value = value.expand_as(tensor)
            else:
                raise ShapeMismatchError(
                    f"cannot patch layer {layer!r}: the source activation has shape "
                    f"{tuple(value.shape)} but the layer outputs {tuple(tensor.shape)}. Record the "
                    "source with the same input length and no reduce= (a batch of 1 broadcasts)."
                )
        if self.units is None and self.positions is None:
            return value.clone()
        lay = layout(hint, tensor)
        _check_units(self.units, tensor.shape[lay.units], layer, lay)
        index = _index(lay, tensor.dim(), self.units, self.positions)
        out = tensor.clone()
        out[index] = value[index]
        return out

    def __repr__(self):
        return f"patch(units={self.units}, positions={self.positions})"


def patch(
    source: Mapping[str, torch.Tensor] | torch.Tensor,
    *,
    units: Sequence[int] | None = None,
    positions: Sequence[int] | slice | None = None,
) -> EditFn:
    """Replace a layer's output with a stored one: activation patching.

    Example::

        clean = hlviz.activations(model, x_clean, "blocks.*")
        with hlviz.edit(model, {"blocks.2": hlviz.patch(clean)}):
            patched = model(x_corrupt)

    ``source`` is a :class:`~hlviz.Recording` (looked up by layer name), a mapping, or
    one tensor. Its shape must match the output (a batch of 1 broadcasts). ``units``
    and ``positions`` patch only some units or tokens.
    """
    if not isinstance(source, (Mapping, torch.Tensor)):
        raise OptionTypeError(
            f"patch source must be a Recording, a dict of tensors or a tensor, got {type(source).__name__}."
        )
    units = _as_units(units)
    return _Patch(source, units, positions)


class _Steer(EditFn):
    def __init__(self, direction, scale, positions):
        self.direction, self.scale, self.positions = direction, scale, positions

    def apply(self, tensor, layer, hint):
        lay = layout(hint, tensor)
        size = tensor.shape[lay.units]
        if self.direction.numel() != size:
            raise ShapeMismatchError(
                f"the steering direction has {self.direction.numel()} entries but layer {layer!r} "
                f"has {size} units (output {tuple(tensor.shape)}). Give a vector of length {size}; "
                f"{explain(lay, layer)}."
            )
        shape = [1] * tensor.dim()
        shape[lay.units] = size
        delta = (self.scale * self.direction.to(tensor.device, tensor.dtype)).view(shape)
        if self.positions is None:
            return tensor + delta
        index = _index(lay, tensor.dim(), None, self.positions)
        out = tensor.clone()
        out[index] = out[index] + delta.expand_as(tensor)[index]
        return out

    def __repr__(self):
        return f"steer(scale={self.scale}, positions={self.positions})"


def steer(
    direction: torch.Tensor | Sequence[float],
    *,
    scale: float = 1.0,
    positions: Sequence[int] | slice | None = None,
) -> EditFn:
    """Add ``scale * direction`` to every unit vector of the output (activation steering).

    Example::

        hlviz.edit(model, {"blocks.3": hlviz.steer(v, scale=4.0)})

    ``direction`` has one entry per unit (channels for images, features for tokens).
    """
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
    return _Steer(direction, float(scale), positions)


def _arity(fn: Callable) -> int:
    """2 when ``fn`` requires a second positional argument (the layer name), else 1."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return 2 if len(required) >= 2 else 1


class Editing(HookContext):
    """Context manager that applies edit functions to layer outputs; see :func:`edit`."""

    def __init__(self, model: nn.Module, edits: Mapping[Any, Callable], *, select: Select = None):
        if not isinstance(edits, Mapping) or not edits:
            raise OptionTypeError(
                "edits must be a non-empty dict {layer: function}, e.g. "
                f"{{'features.3': hlviz.ablate(units=[7])}}; got {edits!r}."
            )
        inner = unwrap(model) if isinstance(model, nn.Module) else model
        plan: dict[str, list[Callable]] = {}
        for spec, fn in edits.items():
            if not callable(fn):
                raise OptionTypeError(
                    f"the edit for {spec!r} is a {type(fn).__name__}, not a function; use "
                    "hlviz.ablate/patch/steer or a function tensor -> tensor."
                )
            if isinstance(spec, list):
                raise LayerSpecError(
                    "a dict key cannot be a list; use a tuple of layer specs instead."
                )
            for name in resolve(inner, spec):
                plan.setdefault(name, []).append(fn)
        super().__init__(model, list(plan))
        self._plan = plan
        self._select = select

    def _attach(self, model: nn.Module, modules: dict[str, nn.Module]) -> None:
        hints = layout_hints(model, list(modules))
        for name, module in modules.items():
            hook = self._make_hook(name, hints[name])
            handle = module.register_forward_hook(hook, prepend=True)
            self._add(handle)
            # edits run before every other hook, in the order their contexts were entered:
            # an inner edit applies on top of an outer one, as nested blocks read
            order = module._forward_hooks
            earlier = [
                k
                for k, fn in order.items()
                if getattr(fn, "__hlviz_edit__", False) and k != handle.id
            ]
            order.move_to_end(handle.id, last=False)
            for key in reversed(earlier):
                order.move_to_end(key, last=False)

    def _make_hook(self, name: str, hint: LayoutHint):
        fns = [(fn, _arity(fn)) for fn in self._plan[name]]

        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            found = pick(output, self._select, name)
            lay_hint = LayoutHint() if found.packed is not None else hint  # padded (N, T, D)
            new = found.tensor
            for fn, arity in fns:
                if isinstance(fn, EditFn):
                    result = fn.apply(new, name, lay_hint)
                else:
                    result = fn(new, name) if arity == 2 else fn(new)
                if result is None:
                    continue
                if not isinstance(result, torch.Tensor) or result.shape != new.shape:
                    got = (
                        tuple(result.shape)
                        if isinstance(result, torch.Tensor)
                        else type(result).__name__
                    )
                    raise ShapeMismatchError(
                        f"the edit function {fn!r} for layer {name!r} returned {got} for an output "
                        f"of shape {tuple(new.shape)}; return a tensor of the same shape (or None)."
                    )
                new = result
            return put_back(output, found.path, new, name)

        marked = mark(hook)
        marked.__hlviz_edit__ = True
        return marked


def edit(model: nn.Module, edits: Mapping[Any, Callable], *, select: Select = None) -> Editing:
    """Apply ``edits`` (``{layer spec: function}``) to layer outputs inside a ``with`` block.

    Example::

        with hlviz.edit(model, {"encoder.layer.3": hlviz.ablate(units=[7, 12])}):
            out = model(**batch)

    A spec that selects several layers applies its function to each; several edits of
    one layer run in the order given. Hooks are removed when the block is left.
    """
    return Editing(model, edits, select=select)
