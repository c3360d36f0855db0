"""Record hidden activations (and their gradients) from any ``nn.Module``, leak-free.

>>> import torch, torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
>>> with hlviz.record(model, ["0", "2"]) as rec:
...     _ = model(torch.randn(3, 4))
>>> rec["0"].shape, (rec["0"] < 0).any().item()   # cloned before the in-place ReLU ran
(torch.Size([3, 8]), True)

Hooks are registered when the ``with`` block is entered and removed in ``finally``
when it is left, whatever happens inside; only the handles hlviz made are removed.
A :class:`Recording` holds the values of the most recent forward pass of the model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_packed_sequence
from torch.utils.hooks import RemovableHandle

from .._checks import choice, instance
from ..errors import (
    LayerNotFoundError,
    NotRecordedError,
    OptionError,
    OptionTypeError,
    RecordingStateError,
)
from ..runtime import run_model
from .checks import warn_repeated
from .context import HookContext, _StopForward, mark
from .layers import LayerSpec, resolve, unwrap
from .outputs import (
    PACKED_LAYOUT,
    REDUCE_HINT,
    REDUCERS,
    LayoutHint,
    Picked,
    Select,
    layout,
    layout_hints,
    pick,
    reduce_positions,
)

__all__ = ["Recording", "activations", "record"]


class Recording(HookContext, Mapping):
    """Activations of chosen layers from the latest forward pass: a read-only mapping.

    Create with :func:`record`. ``rec[name]`` is a detached copy (a list of copies when
    the module ran several times in the pass); names may also be written with the
    ``module.``/``_orig_mod.`` prefixes of wrapped models. ``rec.inputs`` and
    ``rec.grads`` hold module inputs and output gradients when asked for.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec,
        *,
        to: str | torch.device | None = "cpu",
        dtype: torch.dtype | None = None,
        reduce: str | Any = None,
        select: Select = None,
        inputs: bool = False,
        grads: bool = False,
        stop: bool = False,
    ):
        super().__init__(model, layers)
        if reduce is not None and not callable(reduce):
            choice("reduce", reduce, REDUCERS, hint=REDUCE_HINT)
        if dtype is not None:
            instance("dtype", dtype, torch.dtype, "a torch.dtype such as torch.float16 (or None)")
        if to is not None:
            try:
                to = torch.device(to)
            except (RuntimeError, TypeError) as exc:
                raise OptionError(
                    f"to={to!r} is not a device ({exc}); use 'cpu', 'cuda', a torch.device, "
                    "or None to keep activations where the model computes them."
                ) from None
            if to.type == "cuda" and not torch.cuda.is_available():
                raise OptionError(
                    f"to={str(to)!r} asks for a GPU copy but CUDA is not available here; use "
                    "to='cpu' (the default) or to=None to keep the model's device."
                )
        if grads and stop:
            raise OptionError(
                "grads=True needs the whole forward pass and a backward pass, but stop=True "
                "ends the forward after the last recorded layer; use one or the other."
            )
        self._to, self._dtype, self._reduce, self._select = to, dtype, reduce, select
        self._want_inputs, self._want_grads, self._stop = inputs, grads, stop
        self._model_name = type(unwrap(model)).__name__
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._inputs: dict[str, list[torch.Tensor]] = {}
        self._grads: dict[str, list[torch.Tensor | None]] = {}
        self._ran = False
        self._stopped = False
        self._tensor_handles: list[RemovableHandle] = []
        self._thread = threading.get_ident()
        self._depth = 0
        self._root_pass = False
        # the (N, T) attention mask of the inputs being run: string reducers pool only the
        # real tokens of sequence layers whose (batch, tokens) it matches
        self.padding: torch.Tensor | None = None

    # ---------------------------------------------------------------- hooks
    def _process(
        self,
        tensor: torch.Tensor,
        hint: LayoutHint,
        layer: str,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = tensor.detach()
        fresh = False
        if self._reduce is not None:
            if callable(self._reduce):
                out = self._reduce(out)
                if not isinstance(out, torch.Tensor):
                    raise OptionTypeError(
                        f"the reduce callable returned {type(out).__name__} for layer {layer!r}; "
                        "it must return a tensor."
                    )
            else:
                lay = PACKED_LAYOUT if lengths is not None else layout(hint, out)
                out = reduce_positions(out, self._reduce, lay, layer, lengths, self.padding)
            fresh = out.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
        target_dtype = self._dtype or out.dtype
        target_device = self._to or out.device
        if fresh:
            return out.to(device=target_device, dtype=target_dtype)
        return out.to(device=target_device, dtype=target_dtype, copy=True)

    def _reset(self, from_root: bool) -> None:
        """Start a new pass: at each forward of the model, or at the first hooked layer that
        runs outside one (the user called a submodule directly)."""
        self._root_pass = from_root
        while self._tensor_handles:  # gradient hooks of the previous pass
            self._tensor_handles.pop().remove()
        self._outputs = {n: [] for n in self._names}
        self._inputs = {n: [] for n in self._names}
        self._grads = {n: [] for n in self._names}
        self._ran = True
        self._stopped = False

    def _mine(self) -> bool:
        """Hooks act only for the thread that entered the block (not for other threads' passes)."""
        return threading.get_ident() == self._thread

    def _attach(self, model: nn.Module, modules: dict[str, nn.Module]) -> None:
        self._thread = threading.get_ident()
        self._depth = 0

        def root_pre(module, args):
            if self._mine():
                if self._depth == 0:
                    self._reset(from_root=True)
                self._depth += 1

        def root_post(module, args, output):
            if self._mine():
                self._depth -= 1

        self._add(model.register_forward_pre_hook(mark(root_pre)))
        self._add(model.register_forward_hook(mark(root_post), always_call=True))
        # the layout (where units and positions lie) matters only to string reducers
        hints = layout_hints(model, list(modules)) if isinstance(self._reduce, str) else {}
        for name, module in modules.items():
            hint = hints.get(name, LayoutHint())
            if self._want_inputs:  # before the module runs: in-place ops cannot change it yet
                self._add(
                    module.register_forward_pre_hook(
                        self._make_input_hook(name, hint), with_kwargs=True
                    )
                )
            self._add(module.register_forward_hook(self._make_hook(name, hint)))

    def _maybe_new_direct_pass(self) -> None:
        """A hooked layer runs outside a forward of the model (a submodule called directly):
        the first such call after a model pass (or before any) starts a new pass."""
        if self._depth == 0 and (self._root_pass or not self._ran):
            self._reset(from_root=False)

    def _make_input_hook(self, name: str, hint: LayoutHint):
        def input_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self._mine():
                return
            self._maybe_new_direct_pass()
            if args or kwargs:
                found = pick((*args, *kwargs.values()), None, name)  # the first tensor given
                self._inputs[name].append(self._process(found.tensor, hint, name, found.lengths))

        return mark(input_hook)

    def _make_hook(self, name: str, hint: LayoutHint):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self._mine():
                return
            if not self._want_inputs:  # else the input hook of this call already did it
                self._maybe_new_direct_pass()
            found = pick(output, self._select, name)
            calls = self._outputs[name]
            if self._want_grads:
                self._watch_grad(found, hint, name, len(calls))
            calls.append(self._process(found.tensor, hint, name, found.lengths))
            if len(calls) == 2:
                warn_repeated(name, stacklevel=2)
            if self._stop and all(self._outputs[n] for n in self._names):
                self._stopped = True
                raise _StopForward(self)

        return mark(hook)

    def _watch_grad(self, found: Picked, hint: LayoutHint, name: str, call: int) -> None:
        slots = self._grads[name]
        while len(slots) <= call:
            slots.append(None)
        live = found.packed.data if found.packed is not None else found.tensor  # in the graph
        if not live.requires_grad:
            return
        packed = found.packed

        def grad_hook(grad: torch.Tensor) -> None:
            if packed is not None:  # the gradient of the packed data, padded like the output
                grad = pad_packed_sequence(packed._replace(data=grad), batch_first=True)[0]
            slots[call] = self._process(grad, hint, name, found.lengths)

        self._tensor_handles.append(live.register_hook(mark(grad_hook)))

    # ---------------------------------------------------------------- reading
    def _canonical(self, key: Any) -> str:
        if isinstance(key, str) and key in self._names:
            return key
        try:
            model = self._model_ref()
            names = resolve(model, key) if model is not None else []
        except (LookupError, ValueError, TypeError):
            names = []
        if len(names) == 1 and names[0] in self._names:
            return names[0]
        if len(names) > 1:
            raise LayerNotFoundError(
                f"rec[...] reads one layer, but {key!r} selects {len(names)}: {names}. Index by "
                "one name, or loop: {name: rec[name] for name in rec}."
            )
        raise LayerNotFoundError(
            f"{key!r} is not among the recorded layers {self._names}. Add it to the layers "
            "given to hlviz.record(...)."
        )

    def _read(self, store: dict[str, list], key: Any, what: str) -> Any:
        name = self._canonical(key)
        if not self._ran:
            raise NotRecordedError(
                f"nothing has been recorded yet, so there is no {what} for {name!r}: run the model "
                "inside the block `with hlviz.record(model, layers) as rec: model(x)` (hooks "
                "exist only inside it), then read rec[...]."
            )
        values = store.get(name) or []
        if what == "gradient" and all(v is None for v in values):
            raise NotRecordedError(
                f"no gradient was recorded for {name!r}: call .backward() inside the with-block, "
                "and make sure the forward ran with gradients enabled (not under torch.no_grad()) "
                "on inputs or parameters that require grad."
            )
        if not values:
            if self._stopped:
                why = "this recording's stop=True ended the forward pass before it"
            else:
                why = (
                    "the model's forward did not call it with this input (check "
                    "hlviz.list_layers(model, example) for '(not run)'), or another context's "
                    "stop=True ended the pass before it"
                )
            raise NotRecordedError(
                f"layer {name!r} did not run during the last forward pass: {why}."
            )
        # a call that ran without gradients has None in its place among the gradients
        return values[0] if len(values) == 1 else list(values)

    def __getitem__(self, key: Any) -> Any:
        return self._read(self._outputs, key, "activation")

    def calls(self, key: Any) -> list[torch.Tensor]:
        """Every call's activation for ``key`` as a list (one entry when it ran once)."""
        value = self[key]
        return value if isinstance(value, list) else [value]

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self._names if self._outputs.get(n)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        try:
            name = self._canonical(key)
        except LookupError:
            return False
        return bool(self._outputs.get(name))

    __hash__ = object.__hash__  # a Recording is an object with an identity, not a value

    def __eq__(self, other: object) -> bool:
        return self is other

    @property
    def inputs(self) -> _View:
        """Module inputs (the first tensor among its arguments), when recorded with ``inputs=True``."""
        if not self._want_inputs:
            raise RecordingStateError("inputs were not recorded: pass inputs=True to hlviz.record.")
        return _View(self, self._inputs, "input")

    @property
    def grads(self) -> _View:
        """Gradients of the loss w.r.t. each output, when recorded with ``grads=True``."""
        if not self._want_grads:
            raise RecordingStateError(
                "gradients were not recorded: pass grads=True to hlviz.record and call "
                ".backward() inside the with-block."
            )
        return _View(self, self._grads, "gradient")

    def summary(self):
        """A ``pandas.DataFrame``: layer, calls, shape, dtype, device and size of each entry."""
        import pandas as pd

        rows = []
        for name in self._names:
            for i, value in enumerate(self._outputs.get(name) or []):
                rows.append(
                    {
                        "layer": name,
                        "call": i,
                        "shape": tuple(value.shape),
                        "dtype": str(value.dtype).replace("torch.", ""),
                        "device": str(value.device),
                        "MB": round(value.numel() * value.element_size() / 2**20, 3),
                    }
                )
        return pd.DataFrame(rows, columns=["layer", "call", "shape", "dtype", "device", "MB"])

    def __repr__(self) -> str:
        if not self._ran:
            state = "nothing recorded yet"
        else:
            parts = []
            for name in self._names:
                values = self._outputs.get(name) or []
                shape = (
                    "not run"
                    if not values
                    else (
                        str(tuple(values[0].shape))
                        + (f" x{len(values)} calls" if len(values) > 1 else "")
                    )
                )
                parts.append(f"{name}: {shape}")
            state = ", ".join(parts)
        return f"Recording({self._model_name}; {state})"


class _View(Mapping):
    """Read-only mapping over a Recording's inputs or gradients."""

    def __init__(self, rec: Recording, store: dict, what: str):
        self._rec, self._store, self._what = rec, store, what

    def __getitem__(self, key: Any) -> Any:
        return self._rec._read(self._store, key, self._what)

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self._rec._names if self._store.get(n)])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def record(
    model: nn.Module,
    layers: LayerSpec,
    *,
    to: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    reduce: str | Any = None,
    select: Select = None,
    inputs: bool = False,
    grads: bool = False,
    stop: bool = False,
) -> Recording:
    """Record the outputs of ``layers`` during forward passes inside a ``with`` block.

    Example::

        with hlviz.record(model, "features.*", reduce="mean") as rec:
            logits = model(x)
        rec["features.0"].shape
        # torch.Size([N, C])

    Args:
        layers: any layer spec (see :mod:`hlviz.hooks.layers`).
        to: device for the stored copies (``"cpu"``); ``None`` keeps the model's device.
        dtype: cast the stored copies (e.g. ``torch.float16`` to halve memory).
        reduce: ``"mean"``, ``"max"``, ``"sum"``, ``"first"``, ``"last"`` over positions
            (space, time, tokens; see :func:`hlviz.hooks.outputs.layout`), ``"flatten"``, or a
            callable; applied inside the hook so the full tensor is never copied.
        select: which part of a non-tensor output to keep (see :func:`hlviz.hooks.outputs.pick`).
        inputs: also record each module's input, the first tensor among its positional
            then keyword arguments (``rec.inputs``).
        grads: also record the gradient w.r.t. each output (``rec.grads``) through
            tensor hooks; call ``.backward()`` inside the block.
        stop: end the forward pass as soon as every layer has run (saves the rest of
            the model's compute). The rest of the ``with`` block is then skipped, so
            put only the forward call inside it.

    Stored values are detached copies, so later in-place operations (``ReLU(inplace=True)``)
    cannot change them. The Recording keeps the latest forward pass; a module called
    several times in one pass gives a list, with an :class:`~hlviz.errors.HlvizWarning`.
    """
    return Recording(
        model,
        layers,
        to=to,
        dtype=dtype,
        reduce=reduce,
        select=select,
        inputs=inputs,
        grads=grads,
        stop=stop,
    )


def activations(model: nn.Module, inputs: Any, layers: LayerSpec, **options: Any) -> Recording:
    """Run ``model`` once on ``inputs`` without gradients and return the :class:`Recording`.

    Example::

        acts = hlviz.activations(model, x, ["features.0", "classifier"])

    ``inputs`` is a tensor, a tuple of arguments or a mapping of keyword arguments.
    Options are those of :func:`record` (``grads`` excepted); ``stop=True`` ends the
    forward pass after the last requested layer (faster on big models, but a module
    that would run several times is then recorded once).
    """
    if options.get("grads"):
        raise OptionError(
            "hlviz.activations runs without gradients; use `with hlviz.record(model, layers, "
            "grads=True) as rec:` and call .backward() inside the block."
        )
    rec = record(model, layers, **options)
    rec.padding = attention_mask(inputs)
    with torch.no_grad(), rec:
        run_model(model, inputs)
    return rec


def attention_mask(inputs: Any) -> torch.Tensor | None:
    """The ``(N, T)`` boolean mask of real tokens of a tokenizer-style dict batch, or None.

    >>> attention_mask({"input_ids": torch.ones(1, 3), "attention_mask": torch.tensor([[1, 1, 0]])})
    tensor([[ True,  True, False]])
    """
    if isinstance(inputs, Mapping):
        mask = inputs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask.bool()
    return None
