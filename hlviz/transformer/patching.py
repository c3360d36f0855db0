"""Activation patching: which layers and positions carry a behaviour?

>>> from hlviz.models.gpt import CharGPT
>>> _ = torch.manual_seed(0)
>>> model = CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=2).eval()
>>> clean, corrupted = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[5, 2, 3, 4]])
>>> metric = lambda logits: logits[:, -1, 4] - logits[:, -1, 7]   # one number per example
>>> result = hlviz.activation_patching(model, clean, corrupted, ["resid", "blocks.*"], metric=metric)
>>> result.effect.shape                  # (layers, positions)
(3, 4)
>>> float(result.effect[-1, -1])         # the last block at the last position is the output
1.0

:func:`activation_patching` runs the corrupted input with one layer's activation at one
position replaced by the clean run's and scores the output: ``effect = (patched -
corrupted) / (clean - corrupted)`` is 1 where the patch restores the clean behaviour, 0
where it changes nothing. Patched runs are batched: many copies of the corrupted input go
through one forward pass, each copy patched at its own layer and position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._checks import callable_, choice, positive_int
from ..errors import OptionError, OptionTypeError, ShapeMismatchError
from ..hooks.checks import once, refuse_meta, warn_if_training
from ..hooks.editing import EditFn, edit
from ..hooks.layers import LayerSpec, check_module, resolve, unwrap
from ..hooks.outputs import layout, layout_hints
from ..hooks.recording import record
from ..runtime import run_model
from .lens import model_logits

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PatchingResult", "activation_patching"]


def _copies_per_pass(n: int, length: int) -> int:
    """Copies of an ``(n, length)`` batch per forward pass: about 2048 tokens and 2**18
    attention entries per head in all (what ran fastest on CPU: larger passes leave the cache)."""
    return max(1, min(2048 // (n * length), 2**18 // (n * length * length)))


# ------------------------------------------------------------------ shared helpers
def _batch_of(inputs: Any) -> int:
    tensors = _tensors(inputs)
    if not tensors:
        raise OptionTypeError(
            f"inputs must be a tensor, a tuple of tensors or a dict of tensors, got {type(inputs).__name__}."
        )
    n = next(iter(tensors.values())).shape[0]
    if n == 0:
        raise ShapeMismatchError(
            "inputs hold 0 examples (a batch axis of size 0); give at least one example."
        )
    return n


def _tensors(inputs: Any) -> dict[Any, torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return {None: inputs}
    if not isinstance(inputs, (Mapping, tuple, list)):
        return {}
    items = inputs.items() if isinstance(inputs, Mapping) else enumerate(inputs)
    return {k: v for k, v in items if isinstance(v, torch.Tensor)}


def _repeat(inputs: Any, copies: int, n: int) -> Any:
    """``copies`` copies of the batch one after the other (tensors with ``n`` rows)."""

    def rep(v):
        if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n:
            return v.repeat(copies, *([1] * (v.dim() - 1)))
        return v

    if isinstance(inputs, torch.Tensor):
        return rep(inputs)
    if isinstance(inputs, Mapping):
        return {k: rep(v) for k, v in inputs.items()}
    return type(inputs)(rep(v) for v in inputs)


def _scores(metric: Callable, output: Any, copies: int, n: int) -> np.ndarray:
    """The metric of each copy's block of ``n`` rows, averaged over examples: ``(copies,)``."""
    logits = model_logits(output)
    out = []
    for c in range(copies):
        value = metric(logits[c * n : (c + 1) * n])
        if not isinstance(value, torch.Tensor) or value.dim() > 1 or value.numel() not in (1, n):
            got = (
                f"shape {tuple(value.shape)}"
                if isinstance(value, torch.Tensor)
                else type(value).__name__
            )
            raise OptionError(
                f"metric must return a scalar tensor or one value per example (shape ({n},)), got "
                f"{got}; e.g. metric=lambda logits: logits[:, -1, good] - logits[:, -1, bad]."
            )
        out.append(float(value.detach().double().mean()))
    return np.asarray(out)


def _check_aligned(clean: Any, corrupted: Any) -> None:
    a, b = _tensors(clean), _tensors(corrupted)
    shapes_a = {k: tuple(v.shape) for k, v in a.items()}
    shapes_b = {k: tuple(v.shape) for k, v in b.items()}
    if shapes_a != shapes_b:
        describe = lambda s: s.get(None, s)  # noqa: E731
        raise ShapeMismatchError(
            f"clean {describe(shapes_a)} and corrupted {describe(shapes_b)} inputs differ in "
            "shape; activation patching needs aligned inputs (same batch size and length, "
            "position t of one matching position t of the other)."
        )
    mask_a, mask_b = _attention_mask(clean), _attention_mask(corrupted)
    if mask_a is not None and mask_b is not None and not torch.equal(mask_a, mask_b):
        differ = (mask_a != mask_b).reshape(mask_a.shape[0], -1) if mask_a.dim() > 1 else None
        row = int(differ.any(1).nonzero()[0, 0]) if differ is not None else None
        where = f"row {row}: " if row is not None else ""
        a, b = (m.tolist() if row is None else m[row].tolist() for m in (mask_a, mask_b))
        raise ShapeMismatchError(
            f"clean and corrupted inputs have different attention masks (first in {where}"
            f"clean {a}, corrupted {b}), so their "
            "positions would not line up; pad both to the same length and on the same side "
            "(e.g. tokenize them together, or make the corrupted prompt the same number of "
            "tokens)."
        )


def _attention_mask(inputs: Any) -> torch.Tensor | None:
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return torch.as_tensor(mask).detach().cpu() if mask is not None else None


# ------------------------------------------------------------------ activation patching
@dataclass(frozen=True)
class PatchingResult:
    """Effects of patching each layer (rows) at each position (columns).

    ``effect`` is ``(patched - corrupted) / (clean - corrupted)`` (1: the patch restores the
    clean score, 0: no change); ``raw`` the patched metric itself; both ``(layers,
    positions)`` numpy arrays. ``positions`` labels the columns (``"all"`` for whole-sequence
    patching).
    """

    effect: np.ndarray
    raw: np.ndarray
    clean_score: float
    corrupted_score: float
    layers: tuple[str, ...]
    positions: tuple[Any, ...]

    def summary(self):
        """A long ``pandas.DataFrame``: layer, position, effect, raw metric."""
        import pandas as pd

        rows = [
            {"layer": layer, "position": pos, "effect": self.effect[i, j], "raw": self.raw[i, j]}
            for i, layer in enumerate(self.layers)
            for j, pos in enumerate(self.positions)
        ]
        return pd.DataFrame(rows)

    def plot(self, tokens: Sequence[str] | None = None, *, ax: Axes | None = None) -> Axes:
        """Heat map layer x position of the normalised effect (blue-red, centred at 0)."""
        from .plots import plot_grid

        return plot_grid(
            self.effect,
            rows=self.layers,
            columns=tokens if tokens is not None else self.positions,
            title="activation patching (clean -> corrupted)",
            colorbar="effect (1 = clean restored)",
            diverging=True,
            vmax=max(1.0, float(np.nanmax(np.abs(self.effect)))),
            ax=ax,
        )


class _PatchRows(EditFn):
    """Patch copy ``c`` of a batch of copies at ``where[c]`` (a position, ``"all"``, or
    ``None`` for no patch) with the clean activation."""

    def __init__(self, clean: torch.Tensor, where: list[Any], n: int):
        self.clean, self.where, self.n = clean, where, n

    def apply(self, tensor, layer, hint):
        lay = layout(hint, tensor)
        clean = self.clean.to(device=tensor.device, dtype=tensor.dtype)
        out = tensor.clone()
        for c, pos in enumerate(self.where):
            if pos is None:
                continue
            rows = [slice(None)] * tensor.dim()
            rows[lay.batch] = slice(c * self.n, (c + 1) * self.n)
            if pos != "all":
                rows[lay.positions[0]] = pos
            out[tuple(rows)] = clean[
                tuple(r if i != lay.batch else slice(None) for i, r in enumerate(rows))
            ]
        return out


def _run_positions(model, corrupted, n, jobs, clean, metric, batch_size):
    """Scores of every ``(layer, position)`` job, ``batch_size`` copies per forward pass."""
    scores = np.empty(len(jobs))
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        where: dict[str, list[Any]] = {}
        for c, (layer, pos) in enumerate(chunk):
            where.setdefault(layer, [None] * len(chunk))[c] = pos
        edits = {layer: _PatchRows(clean[layer], w, n) for layer, w in where.items()}
        with edit(model, edits):
            out = run_model(model, _repeat(corrupted, len(chunk), n))
        scores[start : start + len(chunk)] = _scores(metric, out, len(chunk), n)
    return scores


def activation_patching(
    model: nn.Module,
    clean: Any,
    corrupted: Any,
    layers: LayerSpec,
    *,
    metric: Callable[[torch.Tensor], torch.Tensor],
    positions: str = "each",
    batch_size: int | None = None,
) -> PatchingResult:
    """Patch each layer's clean activation into the corrupted run, at each position (or all at once).

    Example::

        result = hlviz.activation_patching(
            model, clean_ids, corrupted_ids, "blocks.*",
            metric=lambda logits: logits[:, -1, good] - logits[:, -1, bad])
        result.plot(tokens=list(clean_text))

    Args:
        clean, corrupted: inputs of the same shape (token ids ``(N, T)``, a tensor, a tuple
            of arguments or a dict such as a tokenizer's output).
        layers: layers whose output is a sequence ``(N, T, D)`` (for ``positions="each"``).
        metric: ``logits -> tensor``, a scalar or one value per example (``(N,)``); it
            receives the model's logits (the output, or ``output.logits``); per-example values
            are averaged.
        positions: ``"each"`` patches one position at a time, ``"all"`` the whole sequence.
        batch_size: patched copies of the corrupted batch per forward pass (default: as
            many as keep a pass near 2048 tokens, fewer for long sequences, which measured
            fastest on CPU; 1 runs one patch per forward pass).

    The clean activations are recorded once. Raises :class:`~hlviz.errors.ShapeMismatchError`
    for inputs of different shapes or with different ``attention_mask`` s, :class:`~hlviz.errors.OptionError` for a metric that does
    not return one value (per example), or that scores clean and corrupted the same.
    """
    check_module(model)
    refuse_meta(model, "activation_patching")
    choice("positions", positions, ("each", "all"))
    callable_("metric", metric, "a function logits -> tensor")
    positive_int("batch_size", batch_size, none=True)
    n = _batch_of(clean)
    _check_aligned(clean, corrupted)
    names = resolve(unwrap(model), layers)
    warn_if_training(model, "the runs (clean, corrupted and every patched one)")
    with torch.no_grad():
        with record(model, names, to=None) as rec:
            clean_out = run_model(model, clean)
        clean_score = float(_scores(metric, clean_out, 1, n)[0])
        corrupted_score = float(_scores(metric, run_model(model, corrupted), 1, n)[0])
        if abs(clean_score - corrupted_score) <= 1e-12 * max(1.0, abs(clean_score)):
            raise OptionError(
                f"the metric gives the clean and the corrupted input the same score "
                f"({clean_score:.6g}), so the normalised effect (patched - corrupted) / (clean - "
                "corrupted) would divide by zero; choose a metric (or inputs) that tells them apart."
            )
        acts = {}
        for name in names:
            acts[name] = once(name, rec[name], "patching replaces one activation per layer")
        length = None
        if positions == "each":
            lengths = set()
            hints = layout_hints(unwrap(model), names)
            for name, value in acts.items():
                lay = layout(hints[name], value)
                if len(lay.positions) != 1:
                    raise ShapeMismatchError(
                        f"positions='each' needs layers with one sequence axis, but {name!r} "
                        f"outputs {tuple(value.shape)}; use positions='all' for it."
                    )
                lengths.add(value.shape[lay.positions[0]])
            if len(lengths) != 1:
                raise ShapeMismatchError(
                    f"the layers have different sequence lengths {sorted(lengths)}; patch "
                    "layers of one sequence at a time."
                )
            length = lengths.pop()
            labels: tuple[Any, ...] = tuple(range(length))
            jobs = [(name, t) for name in names for t in range(length)]
        else:
            labels = ("all",)
            jobs = [(name, "all") for name in names]
        first = next(iter(_tensors(clean).values()))
        seq = length or (first.shape[1] if first.dim() > 1 else 1)
        per_forward = batch_size or _copies_per_pass(n, seq)
        raw = _run_positions(model, corrupted, n, jobs, acts, metric, per_forward)
    raw = raw.reshape(len(names), len(labels))
    effect = (raw - corrupted_score) / (clean_score - corrupted_score)
    return PatchingResult(effect, raw, clean_score, corrupted_score, tuple(names), labels)
