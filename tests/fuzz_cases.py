"""The fuzz harness of ``tests/test_fuzz.py``: tiny models, wrong inputs, and one oracle.

A fuzz example is three labels: a model variant (``eval``, ``train``, ``f16``, ``bf16``,
``meta``, ``frozen``, ``zero``), an input variant (``ok``, ``empty``, ``nan``, ``inf``,
``int``, ``f16``, ``bf16``, ``noncontig``, ``channels_last``, ``extra_dim``, ``drop_dim``,
``wide``, ``none``, ``str``, ``list``, ``numpy``, ``scalar``, ...) and an option variant
(a key of the verb's ``OPTIONS``: wrong types, zero, negative and huge sizes such as
``k=10**12``). :func:`check` runs the verb on the example and judges it:

- it must return (a documented result), or raise an :class:`hlviz.errors.HlvizError`, or
  raise the *same type* of error that the user's own model raises on that input when called
  directly (hlviz passes the model's own errors through unchanged; it must not add new ones);
- ``must_raise=True`` (NaN/inf given to an analysis, issue 16 item 5) accepts only an
  ``HlvizError``;
- it must end within :data:`LIMIT_S` seconds (``signal.setitimer``; the timeout is a
  ``BaseException`` so that no ``except Exception`` in the library swallows it);
- afterwards no hook is left on the model, its parameters (values, dtype, device), its
  ``training`` flags and ``requires_grad`` flags are unchanged, and so is process-wide state
  (torch threads, torch/NumPy/Python RNG, default dtype, rcParams, warnings filters: the
  snapshot of ``tests/test_global_state.py``).
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn

import hlviz
from hlviz.errors import HlvizError

from .test_global_state import _changed, _snapshot
from .zoo import Blocks

#: seconds one example may take before it counts as a hang
LIMIT_S = 20.0

MODEL_VARIANTS = ("eval", "train", "f16", "bf16", "meta", "frozen")
TENSOR_VARIANTS = (
    "ok",
    "empty",
    "nan",
    "inf",
    "int",
    "f16",
    "bf16",
    "noncontig",
    "channels_last",
    "extra_dim",
    "drop_dim",
    "wide",
    "none",
    "str",
    "list",
    "numpy",
    "scalar",
)
IDS_VARIANTS = (
    "ok",
    "empty",
    "float",
    "int32",
    "out_of_vocab",
    "negative",
    "noncontig",
    "extra_dim",
    "drop_dim",
    "none",
    "str",
    "list",
    "scalar",
)


class FuzzTimeout(BaseException):
    """An example ran past :data:`LIMIT_S` (a hang)."""


@contextmanager
def time_limit(seconds: float = LIMIT_S):
    def _raise(signum, frame):
        raise FuzzTimeout(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- models


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def cnn() -> nn.Module:
    return _seeded(Blocks)


def mlp() -> nn.Module:
    return _seeded(lambda: nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)))


def zero_mlp() -> nn.Module:
    """An MLP with a zero-width hidden layer (it still runs: its output is the last bias)."""
    return _seeded(lambda: nn.Sequential(nn.Linear(5, 0), nn.ReLU(), nn.Linear(0, 3)))


def gpt() -> nn.Module:
    from hlviz.models.gpt import CharGPT

    return _seeded(lambda: CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=2, context=16))


def lstm() -> nn.Module:
    return _seeded(lambda: nn.LSTM(3, 5, num_layers=2, batch_first=True))


def model_variant(build: Callable[[], nn.Module], name: str) -> nn.Module:
    if name == "zero":
        return zero_mlp().eval()
    model = build().eval()
    if name == "train":
        model.train()
    elif name == "f16":
        model.half()
    elif name == "bf16":
        model.to(torch.bfloat16)
    elif name == "meta":
        model.to("meta")
    elif name == "frozen":
        first = next(model.parameters())
        first.requires_grad_(False)
    return model


# --------------------------------------------------------------------------- inputs


def _noncontig(x: torch.Tensor) -> torch.Tensor:
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    out = wide[..., ::2]
    out.copy_(x)
    assert not out.is_contiguous() or x.shape[-1] <= 1
    return out


def tensor_variant(x: torch.Tensor, name: str) -> Any:
    """A float input ``x`` made wrong in the way ``name`` says."""
    if name == "ok":
        return x
    if name == "empty":
        return x[:0]
    if name in ("nan", "inf"):
        y = x.clone()
        y.view(-1)[0] = float(name)
        return y
    if name == "int":
        return (x * 3).to(torch.int64)
    if name == "f16":
        return x.half()
    if name == "bf16":
        return x.to(torch.bfloat16)
    if name == "noncontig":
        return _noncontig(x)
    if name == "channels_last":
        if x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x.mT.contiguous().mT
    if name == "extra_dim":
        return x.unsqueeze(0)
    if name == "drop_dim":
        return x[0]
    if name == "wide":
        return torch.cat([x, torch.zeros(*x.shape[:-1], 1)], dim=-1)
    if name == "none":
        return None
    if name == "str":
        return "not a tensor"
    if name == "list":
        return x.tolist()
    if name == "numpy":
        return x.numpy()
    if name == "scalar":
        return 3.0
    raise KeyError(name)


def ids_variant(ids: torch.Tensor, name: str) -> Any:
    """Token ids ``ids`` made wrong in the way ``name`` says."""
    table = {
        "ok": lambda: ids,
        "empty": lambda: ids[:0],
        "float": lambda: ids.float() + 0.5,
        "int32": lambda: ids.to(torch.int32),
        "out_of_vocab": lambda: ids + 10**6,
        "negative": lambda: ids - 100,
        "noncontig": lambda: _noncontig(ids),
        "extra_dim": lambda: ids.unsqueeze(0),
        "drop_dim": lambda: ids[0],
        "none": lambda: None,
        "str": lambda: "abc",
        "list": lambda: ids.tolist(),
        "scalar": lambda: 3,
    }
    return table[name]()


def cnn_x() -> torch.Tensor:
    return torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) + 0.1


def mlp_x() -> torch.Tensor:
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(2))


def lstm_x() -> torch.Tensor:
    return torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(3))


def gpt_ids() -> torch.Tensor:
    return torch.randint(0, 10, (2, 6), generator=torch.Generator().manual_seed(4))


# --------------------------------------------------------------------------- the oracle


def _model_state(model: nn.Module) -> dict[str, Any]:
    return {
        "params": {
            n: (p.detach().clone() if p.device.type != "meta" else None, p.dtype, p.device)
            for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
    }


def _model_changes(before: dict[str, Any], model: nn.Module) -> list[str]:
    after = _model_state(model)
    out = []
    if after["training"] != before["training"]:
        out.append("training flags")
    if after["requires_grad"] != before["requires_grad"]:
        out.append("requires_grad flags")
    for name, (value, dtype, device) in before["params"].items():
        new_value, new_dtype, new_device = after["params"][name]
        if (new_dtype, new_device) != (dtype, device):
            out.append(f"parameter {name} dtype/device")
        elif value is not None and not torch.equal(value, new_value):
            out.append(f"parameter {name} values")
    return out


def own_error(model: nn.Module | None, x: Any) -> type[BaseException] | None:
    """The type of error the model raises on ``x`` called directly, or None."""
    if model is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(x)
    except Exception as err:
        return type(err)
    return None


def check(
    call: Callable[[], Any],
    model: nn.Module | None = None,
    x: Any = None,
    *,
    must_raise: bool = False,
    label: str = "",
    limit: float = LIMIT_S,
) -> str:
    """Run one example; return ``"result"``, ``"hlviz"`` or ``"passthrough"``; raise
    ``AssertionError`` for a crash, a hang, a hook left or any state changed."""
    allowed = own_error(model, x)
    state = _model_state(model) if model is not None else None
    before = _snapshot()
    outcome, err = "result", None
    try:
        with time_limit(limit):
            call()
    except HlvizError:
        outcome = "hlviz"
    except FuzzTimeout as exc:
        err = exc
    except Exception as exc:
        if allowed is not None and isinstance(exc, allowed):
            outcome = "passthrough"
        else:
            err = exc
    finally:
        plt.close("all")
    problems = []
    if err is not None:
        problems.append(f"{type(err).__name__}: {str(err)[:300]}")
    elif must_raise and outcome != "hlviz":
        problems.append(f"ended in {outcome}, not an HlvizError")
    if model is not None:
        try:
            hlviz.testing.assert_no_hooks(model)
        except AssertionError as exc:
            problems.append(str(exc))
        problems += _model_changes(state, model)
    problems += [f"changed {key}" for key in _changed(before, _snapshot())]
    if problems:
        raise AssertionError(f"{label}: " + "; ".join(problems))
    return outcome
