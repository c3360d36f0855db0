"""The hook context every hlviz API builds on: it owns its handles and removes them all.

>>> import torch.nn as nn, hlviz
>>> model = nn.Sequential(nn.Linear(2, 2))
>>> with hlviz.record(model, "0"):
...     len(model[0]._forward_hooks)
1
>>> len(model[0]._forward_hooks)
0

Hooks are registered when the ``with`` block is entered and removed in ``finally``
when it is left, whatever happens inside; only the handles hlviz made are removed.

``torch.compile`` d models (``torch.compile(model)`` or ``model.compile()``, also compiled
submodules) run their original, uncompiled code inside a block, because code compiled
before the hooks existed never calls them; the compiled code is kept and runs again once
the last block on that model is left (other threads calling the model meanwhile get the
same, eager, results).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import LayerNotFoundError, OptionError, RecordingStateError
from .layers import LayerSpec, check_module, resolve, unwrap

__all__ = ["HookContext"]


def mark(fn):
    """Tag a hook as hlviz's own (``hlviz.testing`` tells them from the user's), and keep
    ``torch.compile`` from tracing it: hooks have Python side effects and run eagerly."""
    wrapped = torch.compiler.disable(fn)
    wrapped.__hlviz__ = True
    return wrapped


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early (``stop=True``); never escapes."""

    def __init__(self, owner: object):
        super().__init__("forward pass stopped by hlviz after the last recorded layer")
        self.owner = owner


def _uses_mha_fastpath(modules: Iterable[nn.Module]) -> bool:
    kinds = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.MultiheadAttention)
    return any(isinstance(m, kinds) for m in modules)


_FASTPATH_LOCK = threading.Lock()
_FASTPATH = {"users": 0, "saved": True}


def _disable_mha_fastpath() -> None:
    """Switch PyTorch's fused transformer fast path off while any hlviz context needs it."""
    with _FASTPATH_LOCK:
        if _FASTPATH["users"] == 0:
            _FASTPATH["saved"] = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _FASTPATH["users"] += 1


def _restore_mha_fastpath() -> None:
    with _FASTPATH_LOCK:
        _FASTPATH["users"] -= 1
        if _FASTPATH["users"] == 0:
            torch.backends.mha.set_fastpath_enabled(_FASTPATH["saved"])


_EAGER_LOCK = threading.Lock()
_EAGER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> [users, saved]


def _compiled(model: nn.Module) -> list[nn.Module]:
    """The ``torch.compile`` d modules in ``model``: ``OptimizedModule`` wrappers and modules
    compiled in place with ``module.compile()``."""
    return [
        m
        for m in model.modules()
        if (type(m).__name__ == "OptimizedModule" and "forward" in m.__dict__)
        or m.__dict__.get("_compiled_call_impl") is not None
    ]


def _run_eagerly(modules: list[nn.Module]) -> None:
    """Make compiled modules run their original code (so hooks fire) until restored.

    After its first call a compiled module runs code that never calls module hooks added
    later (dynamo does not guard on them). While any hlviz context is active on it, its
    original module runs instead; the compiled code is kept and used again on leaving.
    Counted per module under a lock, so nested and concurrent contexts restore it once.
    """
    with _EAGER_LOCK:
        for m in modules:
            entry = _EAGER.get(m)
            if entry is None:
                if type(m).__name__ == "OptimizedModule":
                    saved = m.__dict__["forward"]
                    m.__dict__["forward"] = m._orig_mod.__call__
                else:
                    saved = m.__dict__["_compiled_call_impl"]
                    m.__dict__["_compiled_call_impl"] = None
                _EAGER[m] = entry = [0, saved]
            entry[0] += 1


def _restore_compiled(modules: list[nn.Module]) -> None:
    with _EAGER_LOCK:
        for m in modules:
            entry = _EAGER.get(m)
            if entry is None:
                continue
            entry[0] -= 1
            if entry[0] == 0:
                key = "forward" if type(m).__name__ == "OptimizedModule" else "_compiled_call_impl"
                m.__dict__[key] = entry[1]
                del _EAGER[m]


class HookContext:
    """Base of every hlviz context that hooks a model: owns its handles, removes them all.

    Subclasses implement ``_attach(modules)`` that registers hooks through
    :meth:`_add` and may rely on ``_detach`` running in ``finally``.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec):
        check_module(model)
        if isinstance(model, nn.DataParallel) and len(model.device_ids or []) > 1:
            raise OptionError(
                f"DataParallel over {len(model.device_ids)} devices runs replicas of the model in "
                "worker threads, which hooks cannot follow reliably. Hook and call the module "
                "inside instead: hlviz.record(model.module, ...) and model.module(x)."
            )
        inner = unwrap(model)
        self._names: list[str] = resolve(inner, layers)
        self._model_ref = weakref.ref(inner)  # a recording does not keep the model alive
        self._wrapper_ref = weakref.ref(model)  # a torch.compile / DataParallel wrapper
        self._eager: list[nn.Module] = []
        self._handles: list[RemovableHandle] = []
        self._active = False
        self._fastpath_off = False
        self._live: nn.Module | None = None

    @property
    def layers(self) -> list[str]:
        """The canonical names of the hooked layers, in selection order."""
        return list(self._names)

    def _model(self) -> nn.Module:
        model = self._model_ref()
        if model is None:
            raise RecordingStateError(
                "the model of this hook context has been deleted; create a new one with the live model."
            )
        return model

    def _add(self, handle: RemovableHandle) -> None:
        self._handles.append(handle)

    def _attach(self, model: nn.Module, modules: dict[str, nn.Module]) -> None:
        raise NotImplementedError

    def __enter__(self):
        if self._active:
            raise RecordingStateError(
                f"this {type(self).__name__} is already active; a hook context can be entered "
                "once at a time. Create a second one for a nested block."
            )
        model = self._model()
        lookup = dict(model.named_modules())
        missing = [n for n in self._names if n not in lookup]
        if missing:
            raise LayerNotFoundError(
                f"layers {missing} are no longer in {type(model).__name__} (the model changed "
                "since this context was created); create it again."
            )
        self._active = True
        self._live = model  # held only while active
        try:
            if _uses_mha_fastpath(lookup.values()):  # fused kernels skip submodules and their hooks
                _disable_mha_fastpath()
                self._fastpath_off = True
            wrapper = self._wrapper_ref()  # not `or`: a compiled wrapper's len() may raise
            compiled = _compiled(model if wrapper is None else wrapper)
            if compiled:  # compiled code skips hooks added after its first call
                _run_eagerly(compiled)
                self._eager = compiled
            self._attach(model, {n: lookup[n] for n in self._names})
        except BaseException:
            self._detach()
            raise
        return self

    def _detach(self) -> None:
        try:
            while self._handles:
                self._handles.pop().remove()
        finally:
            if self._fastpath_off:
                self._fastpath_off = False
                _restore_mha_fastpath()
            if self._eager:
                _restore_compiled(self._eager)
                self._eager = []
            self._active = False
            self._live = None

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._detach()
        return isinstance(exc, _StopForward) and exc.owner is self
