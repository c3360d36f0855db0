"""The forward side of attribution: one wrapper from any model to scores Captum can use.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(3, 4))
>>> call = prepare(model, torch.randn(2, 3), output=None)
>>> tuple(call.forward(call.main).shape), check_target(call.forward(call.main), 1, 2, model)
((2, 4), 1)

:func:`prepare` splits the user's inputs (a tensor, a tuple of positional arguments, or
a mapping such as a tokenizer's output) into the tensor attributed (``main``) and the
tensors passed along (``extra``, expanded by Captum with the batch), and wraps the model
in :class:`ModelForward`, which picks the scored tensor out of a tuple, dict or
``ModelOutput``. :func:`check_target` makes sure ``target`` leaves one score per example.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import BaselineError, OptionError, OptionTypeError, ShapeMismatchError, TargetError
from ..hooks.outputs import pick
from ..runtime import _to_device, model_device

__all__ = [
    "ModelForward",
    "Prepared",
    "Probe",
    "auto_rows",
    "check_target",
    "first_row",
    "parse_budget",
    "prepare",
    "probe",
    "rnn_safe",
    "scores",
    "token_baseline",
]


def select_output(out: Any, output: Any) -> torch.Tensor:
    """The tensor that is scored: ``output`` picks it (index, key, path, callable); by default
    a tensor is itself, a dict or ``ModelOutput`` gives ``logits``, a tuple its first tensor."""
    if output is None:
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping) and "logits" in out:
            return out["logits"]
        if isinstance(out, Mapping):
            raise TargetError(
                f"the model returned {type(out).__name__} with keys {list(out.keys())} and no "
                "'logits': say which tensor to attribute, e.g. output='pooler_output' or "
                "output=lambda out: out.last_hidden_state[:, 0]."
            )
    return pick(out, output, "<model output>").tensor


class ModelForward(nn.Module):
    """``model`` called as ``forward(main, *extra)`` and reduced to the scored tensor.

    ``main`` goes to keyword ``key`` (or first positional argument when ``key`` is None),
    ``extra`` to ``extra_keys`` (or the next positional arguments); ``static`` holds
    non-tensor keyword arguments. The model is a submodule, so Captum layer names are
    ``"model." + name``.
    """

    def __init__(
        self,
        model: nn.Module,
        output: Any = None,
        key: str | None = None,
        extra_keys: Sequence[str] = (),
        static: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.output = output
        self.key = key
        self.extra_keys = tuple(extra_keys)
        self.static = dict(static or {})

    def forward(self, main: torch.Tensor, *extra: Any) -> torch.Tensor:
        """Run the model on ``main`` (and ``extra``); return the tensor targets index."""
        if self.key is None:
            out = self.model(main, *extra, **self.static)
        else:
            kwargs = {self.key: main, **dict(zip(self.extra_keys, extra, strict=True))}
            out = self.model(**kwargs, **self.static)
        return select_output(out, self.output)


@dataclass(frozen=True)
class Prepared:
    """The attributed tensor, the tensors passed along, and the wrapped model."""

    main: torch.Tensor
    extra: tuple
    forward: ModelForward

    @property
    def extra_args(self) -> tuple | None:
        """``extra`` as Captum's ``additional_forward_args`` (``None`` when empty)."""
        return self.extra or None


def prepare(
    model: nn.Module, inputs: Any, *, output: Any, input_key: str | None = None
) -> Prepared:
    """Split ``inputs`` into the attributed tensor and the rest, moved to the model's device."""
    inputs = _to_device(inputs, model_device(model))
    if isinstance(inputs, torch.Tensor):
        return Prepared(inputs, (), ModelForward(model, output))
    if isinstance(inputs, Mapping):
        key = input_key or next((k for k in ("input_ids", "inputs_embeds") if k in inputs), None)
        if key is None or key not in inputs:
            raise OptionError(
                f"inputs is a mapping with keys {list(inputs)}; name the tensor to attribute "
                f"with input_key= (got {input_key!r}), e.g. input_key='input_ids'."
            )
        tensors = {k: v for k, v in inputs.items() if k != key and isinstance(v, torch.Tensor)}
        static = {k: v for k, v in inputs.items() if k != key and not isinstance(v, torch.Tensor)}
        forward = ModelForward(model, output, key, list(tensors), static)
        return Prepared(_tensor(inputs[key], key), tuple(tensors.values()), forward)
    if isinstance(inputs, tuple) and inputs:
        return Prepared(
            _tensor(inputs[0], "inputs[0]"), tuple(inputs[1:]), ModelForward(model, output)
        )
    raise OptionTypeError(
        f"inputs must be a tensor, a non-empty tuple (attributed tensor first, then the other "
        f"arguments) or a mapping of keyword arguments, got {type(inputs).__name__}."
    )


def _tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise OptionTypeError(f"{name} must be a tensor to attribute, got {type(value).__name__}.")
    return value


def _label_index(model: nn.Module, label: str) -> int:
    label2id = getattr(getattr(model, "config", None), "label2id", None) or {}
    if label not in label2id:
        raise TargetError(
            f"target={label!r} is not a label of this model (its config.label2id has "
            f"{sorted(label2id) or 'no labels'}). Give the class index as an int."
        )
    return int(label2id[label])


def check_target(y: torch.Tensor, target: Any, n: int, model: nn.Module) -> Any:
    """Validate ``target`` against the scored tensor ``y`` (``(N, ...)``); return it normalised.

    ``target`` is None (one score per example already), an int (or a label of
    ``model.config.label2id``) for ``(N, C)``, a tuple of ints for ``(N, d1, d2, ...)``,
    or a list/1-D tensor of ``N`` of these (one per example). Negative indices count from
    the end and come back non-negative, as Captum needs.
    """
    per_example = y.shape[1:]
    shape = f"(N, {', '.join(map(str, per_example))})" if per_example else "(N,)"
    if target is None:
        if per_example.numel() != 1:
            raise TargetError(
                f"target is required: the model's output has shape {shape} per batch, "
                f"{per_example.numel()} scores per example. Pass target=<class index> (an int, "
                "or a list with one per example)"
                + (", or a tuple of indices" if len(per_example) > 1 else "")
                + "."
            )
        return None
    if isinstance(target, torch.Tensor):
        if target.dim() == 0:
            target = int(target)
        elif target.dim() == 1:
            target = [int(t) for t in target]
        else:
            raise TargetError(
                f"a target tensor must be 0-D or 1-D (one index per example), got shape "
                f"{tuple(target.shape)}."
            )
    if isinstance(target, list):
        if len(target) != n:
            raise TargetError(
                f"target is a list of {len(target)} but the batch has {n} examples: give one "
                "target per example, or a single int for all."
            )
        return [_check_one(t, per_example, shape, model) for t in target]
    return _check_one(target, per_example, shape, model)


def _check_one(t: Any, per_example: torch.Size, shape: str, model: nn.Module) -> Any:
    if isinstance(t, str):
        t = _label_index(model, t)
    index = (t,) if isinstance(t, int) and not isinstance(t, bool) else t
    if not isinstance(index, tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in index
    ):
        raise TargetError(
            f"target {t!r} is not an index: give an int, a tuple of ints, or a list of these "
            "(one per example)."
        )
    if len(index) != len(per_example):
        if not per_example:
            hint = "the model gives one score per example already: use target=None"
        else:
            hint = f"give {len(per_example)} indices, e.g. target={tuple(0 for _ in per_example)}"
        raise TargetError(
            f"target {t!r} has {len(index)} indices but the output has shape {shape}: {hint} "
            "(or pick a part of the output with output=)."
        )
    fixed = []
    for i, size in zip(index, per_example, strict=True):
        if not -size <= i < size:
            raise TargetError(
                f"target {t!r} is out of range for the output of shape {shape} (valid "
                f"indices {-size}..{size - 1})."
            )
        fixed.append(i % size)
    return fixed[0] if isinstance(t, int) else tuple(fixed)


def scores(forward: ModelForward, main: torch.Tensor, extra: tuple, target: Any) -> torch.Tensor:
    """``F(main)``: one score per example, ``(N,)``, without gradients (Captum's selection)."""
    from captum._utils.common import _select_targets

    with torch.no_grad():
        y = forward(main, *extra)
    return _select_targets(y, target).reshape(len(main), -1).sum(1)


def token_baseline(
    input_ids: torch.Tensor, pad_id: int, special_ids: Sequence[int] = ()
) -> torch.Tensor:
    """A PAD baseline for token ids: every token becomes ``pad_id`` except special tokens.

    >>> token_baseline(torch.tensor([[101, 7, 8, 102]]), 0, special_ids=[101, 102])
    tensor([[101,   0,   0, 102]])

    ``input_ids`` is ``(N, T)`` (any shape works); special tokens ([CLS], [SEP], BOS/EOS)
    stay, so the path from baseline to input only changes the words.
    """
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise BaselineError(f"pad_id must be an int token id, got {pad_id!r}.")
    keep = torch.isin(
        input_ids,
        torch.as_tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device),
    )
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))


def rnn_safe(model: nn.Module) -> contextlib.AbstractContextManager:
    """cuDNN off for the call when the model holds an RNN (its backward needs training mode
    under cuDNN); the model stays in eval mode and the flag comes back afterwards."""
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_budget(budget: int | float | str | None, device: torch.device) -> int:
    """A memory budget in bytes: an int, or text such as ``"512MB"``/``"2 GiB"``; ``None`` is
    half the free GPU memory on CUDA, else a quarter of the available RAM (at most 4 GiB)."""
    if budget is None:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0] * 0.5)
        return int(min(_available_ram() * 0.25, 4 * 2**30))
    if isinstance(budget, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", budget)
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise OptionError(
                f"memory_budget={budget!r} is not a size: give bytes (an int) or text such as "
                "'512MB' or '2GiB'."
            )
        budget = float(match.group(1)) * _UNITS[unit]
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise OptionError(f"memory_budget must be a positive size in bytes, got {budget!r}.")
    return int(budget)


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


@dataclass(frozen=True)
class Probe:
    """What one example's forward pass showed: the scored tensor's shape, the hooked layer's
    output (picked tensor) shape, and the bytes one example needs for forward + backward."""

    output_shape: torch.Size
    layer_shape: torch.Size | None
    bytes_per_row: int
    layer_is_tensor: bool = True


def first_row(main: torch.Tensor, extra: tuple) -> tuple[torch.Tensor, tuple]:
    """The first example: ``main[:1]`` and the tensors of ``extra`` that share its batch,
    cut the same way (others pass as they are)."""
    n = len(main)
    return main[:1], tuple(
        e[:1] if isinstance(e, torch.Tensor) and e.dim() and len(e) == n else e for e in extra
    )


def probe(
    forward: ModelForward,
    main: torch.Tensor,
    extra: tuple,
    *,
    measure: bool = False,
    layer: nn.Module | None = None,
) -> Probe:
    """Run the first example once. With ``measure``, count what autograd saves for its
    backward (saved-tensor hooks): a row then needs that twice (the gradients made during
    backward) plus four copies of the input (scaled input, its gradient, the sums)."""
    params = {p.untyped_storage().data_ptr() for p in forward.parameters()}
    seen: set[int] = set()
    total = 0
    shapes: list[torch.Size] = []
    plain: list[bool] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        shapes.append(pick(out, None, "layer").tensor.shape)
        plain.append(isinstance(out, torch.Tensor))

    hook.__hlviz__ = True  # type: ignore[attr-defined]
    one, rest = first_row(main, extra)
    if measure and one.is_floating_point():
        one = one.detach().requires_grad_(True)
    saving = (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        if measure
        else contextlib.nullcontext()
    )
    handle = layer.register_forward_hook(hook) if layer is not None else None
    try:
        with torch.set_grad_enabled(measure), saving:
            y = forward(one, *rest)
    except Exception as err:
        _explain_first_row(forward, main, extra, err)
        raise
    finally:
        if handle is not None:
            handle.remove()
    row = 2 * total + 4 * one.element_size() * one.numel()
    return Probe(y.shape, shapes[0] if shapes else None, row, all(plain))


def _explain_first_row(
    forward: ModelForward, main: torch.Tensor, extra: tuple, err: Exception
) -> None:
    """The model failed on ``main[:1]``: if it runs on the whole input, say why (no batch
    axis, or a model that needs several examples); else its own error stands."""
    try:
        with torch.no_grad():
            whole = forward(main, *extra)
    except Exception:
        return
    n, shape = len(main), tuple(main.shape)
    if whole.dim() == 0 or whole.shape[0] != n:
        raise ShapeMismatchError(
            f"the model runs on the whole input {shape} (giving {tuple(whole.shape)}, not "
            f"{n} rows) but fails on its first row {tuple(main[:1].shape)} ({type(err).__name__}: "
            f"{str(err)[:120]}): attribution takes axis 0 as the batch, and this input has "
            f"none. Pass one example as a batch of one, e.g. x.unsqueeze(0) (shape "
            f"{(1, *shape)})."
        ) from err
    raise OptionError(
        f"the model runs on the whole batch {shape} but fails on one example alone "
        f"({type(err).__name__}: {str(err)[:120]}); attribution first runs one example to "
        "measure the output. A model in training mode with BatchNorm fails so: call "
        "model.eval() first."
    ) from err


def auto_rows(per_row: int, budget: int, minimum: int) -> tuple[int, int]:
    """How many expanded rows (examples x steps) fit in ``budget`` bytes, at least ``minimum``;
    also returns how many fit before that floor (to warn when the floor exceeds it)."""
    fits = int(budget // max(1, per_row))
    return max(fits, minimum), fits
