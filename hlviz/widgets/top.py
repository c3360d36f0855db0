"""The top-examples tab: the inputs of a data set on which one unit of a layer peaks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import LayerShapeError, OptionError, OptionTypeError
from ..hooks.outputs import layout_hints
from ..hooks.recording import record
from ..runtime import run_model
from .data import LayerChoice, _batch_first, _batch_size, _main_tensor, take, tokens_of
from .views import TopExamples

__all__ = ["top_examples", "unit_scores"]


def top_examples(
    model: nn.Module,
    data: Any,
    choice: LayerChoice,
    unit: int,
    *,
    k: int = 8,
    batch_size: int = 64,
    decode: Any = None,
    cache: dict | None = None,
    like: Any = None,
) -> TopExamples:
    """The ``k`` examples of ``data`` on which ``unit`` of ``choice``'s layer peaks.

    ``data``: anything :func:`hlviz._batches.batches` takes (a tensor ``(M, ...)``, an
    ``(X, y)`` pair or ImageSplit, an iterable of batches: a DataLoader, dicts of a
    tokenizer's output, ``(images, tables)`` tuples), or an :class:`~hlviz.ActivationStore`
    holding the layer. Each batch is fitted to ``like`` (the inspector's inputs: a tensor
    takes a tuple batch's first item, labels dropped; a tuple of k arguments the first k
    items; a mapping the keys it has) and run with :func:`hlviz.runtime.run_model`. A
    unit's score on an example is its maximum over positions (:func:`unit_scores`, the same
    for a store and for a scan of the data). Scores of every unit are computed once per
    layer (``cache``).
    """
    from ..collection.store import ActivationStore

    if isinstance(data, ActivationStore):
        if choice.name not in data:
            raise OptionError(
                f"the ActivationStore holds layers {data.layers[:6]}, not {choice.name!r}; "
                "collect it, or pick one of those layers."
            )
        values, order = _rank(_store_scores(model, data, choice), unit, k, choice)
        return TopExamples(choice.label, unit, values, order)
    key = (choice.label, id(data))
    if cache is None or key not in cache:
        scores, rows = _scan(model, data, choice, batch_size, like)
        if cache is not None:
            cache[key] = (scores, rows)
    else:
        scores, rows = cache[key]
    values, order = _rank(scores, unit, k, choice)
    picked = [rows[int(i)] for i in order]
    mains = [_main_tensor(r) for r in picked]
    if len({tuple(m.shape) for m in mains}) > 1:  # rows of batches padded to other lengths
        return TopExamples(choice.label, unit, values, order)
    examples = torch.cat(mains)
    if examples.is_floating_point() or examples.dim() != 2:
        return TopExamples(choice.label, unit, values, order, examples)
    with torch.no_grad(), record(model, choice.name, select=choice.select) as rec:
        run_model(model, _stack(picked))
    hint = layout_hints(model, [choice.name])[choice.name]
    acts = _batch_first(rec[choice.name], hint, len(order))
    traces = acts[..., unit] if acts is not None and acts.dim() == 3 else None
    positions = traces.argmax(-1) if traces is not None else None
    tokens = tuple(tuple(tokens_of(row, decode)) for row in examples)
    return TopExamples(choice.label, unit, values, order, examples, positions, traces, tokens)


def unit_scores(acts: torch.Tensor, kind: str) -> torch.Tensor:
    """Each unit's score on each example: its maximum over positions, ``(n, units)`` float.

    ``acts`` is batch first, laid out as the view ``kind`` expects: ``(n, T, D)`` for
    ``"sequence"`` (units last), ``(n, C, ...)`` for feature maps and attention heads (units
    on axis 1), ``(n, D)`` as it is (also a sequence layer stored with ``reduce=``).

    >>> acts = torch.tensor([[[1.0, 5.0], [3.0, 2.0], [0.0, 4.0]]])  # (1, T=3, D=2)
    >>> unit_scores(acts, "sequence")
    tensor([[3., 5.]])
    >>> unit_scores(acts, "feature_maps")  # read as (1, C=3, 2)
    tensor([[5., 3., 4.]])
    """
    if acts.dim() <= 2:
        return acts.float()
    if kind == "sequence":
        return acts.amax(1).float()
    return acts.reshape(len(acts), acts.shape[1], -1).amax(-1).float()


def _store_scores(model: nn.Module, store: Any, choice: LayerChoice) -> torch.Tensor:
    """:func:`unit_scores` of every row of an ActivationStore's layer (held as the module
    gave it, batch first: a ``(N, C, L)`` convolution output is turned to ``(N, L, C)`` as
    the inspector's own recording is)."""
    from ..hooks.outputs import layout

    acts = torch.as_tensor(store[choice.name].numpy())
    if acts.dim() == 3:
        hint = layout_hints(model, [choice.name])[choice.name]
        if layout(hint, acts).kind == "channels_first":
            acts = acts.transpose(1, 2)
    scores = unit_scores(acts, choice.kind)
    axis = -1 if choice.kind in ("sequence", "bars") else 1
    units = choice.acts.shape[axis]
    if scores.dim() != 2 or scores.shape[1] != units:
        raise LayerShapeError(
            f"the ActivationStore holds {choice.name!r} as {tuple(acts.shape)}, which gives "
            f"{scores.shape[-1]} units per example where the inspector's {choice.label!r} has "
            f"{units}; collect the same output of the layer (one row per input), or pass the "
            "raw data instead of the store."
        )
    return scores


def _rank(scores: torch.Tensor, unit: int, k: int, choice: LayerChoice):
    if not 0 <= unit < scores.shape[1]:
        raise OptionError(
            f"unit {unit} is out of range for {choice.label!r}, whose data scores have "
            f"{scores.shape[1]} units."
        )
    column = scores[:, unit]
    values, order = torch.sort(column, descending=True, stable=True)
    return values[:k], order[:k]


def _fit(batch: Any, like: Any) -> Any:
    """A data batch as the model is called on it, fitted to the inspector's inputs ``like``
    (see :func:`top_examples`)."""
    from .._batches import _describe, as_batch

    batch = as_batch(batch)
    if isinstance(like, Mapping):
        if not isinstance(batch, Mapping):
            raise OptionTypeError(
                f"the inspector's inputs are a mapping with keys {list(like)}, but a batch of "
                f"data is {_describe(batch)}; give data as batches of the same keys (a list "
                "of a tokenizer's outputs, or a DataLoader yielding dicts)."
            )
        return {k: v for k, v in batch.items() if k in like} or batch
    if isinstance(like, (tuple, list)):
        if not isinstance(batch, tuple) or len(batch) < len(like):
            raise OptionTypeError(
                f"the inspector's inputs are {len(like)} arguments, but a batch of data is "
                f"{_describe(batch)}; give data as a tuple of {len(like)} tensors (one row "
                "per example in each, labels may follow) or batches of that form."
            )
        return batch[: len(like)]
    if isinstance(batch, tuple):  # (inputs, labels, ...): the model takes the inputs
        return batch[0]
    return batch


def _stack(rows: Sequence[Any]) -> Any:
    """One batch of single-example inputs (tensors, tuples or mappings of them)."""
    first = rows[0]

    def join(items: list[Any]) -> Any:
        if all(isinstance(v, torch.Tensor) and v.dim() and len(v) == 1 for v in items):
            return torch.cat(items)
        return items[0]

    if isinstance(first, torch.Tensor):
        return join(list(rows))
    if isinstance(first, Mapping):
        return {key: join([r[key] for r in rows]) for key in first}
    return tuple(join([r[i] for r in rows]) for i in range(len(first)))


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


def _scan(model: nn.Module, data: Any, choice: LayerChoice, batch_size: int, like: Any = None):
    from .._batches import batches

    hint = layout_hints(model, [choice.name])[choice.name]
    parts, rows = [], []
    for batch in batches(data, batch_size):
        x = _fit(batch, like)
        n = _batch_size(x)
        with torch.no_grad(), record(model, choice.name, select=choice.select) as rec:
            run_model(model, x)
        acts = _batch_first(rec[choice.name], hint, n)
        if acts is None:
            raise LayerShapeError(
                f"layer {choice.label!r} gives {tuple(rec[choice.name].shape)} on a data batch of "
                f"{n}; the data must be shaped like the inspector's inputs."
            )
        parts.append(unit_scores(acts, choice.kind))
        x = _detached(x)
        rows.extend(take(x, i) for i in range(n))
    if not parts:
        raise OptionError("data is empty: give at least one example to rank.")
    return torch.cat(parts), rows
