"""Reproducibility and device helpers.

>>> import hlviz
>>> hlviz.seed_everything(0)
>>> hlviz.default_device().type in ("cpu", "cuda")
True
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ._checks import non_negative_int

__all__ = [
    "default_device",
    "model_device",
    "progress_enabled",
    "run_model",
    "seed_everything",
]


def seed_everything(seed: int = 0, *, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic kernels
    (``torch.use_deterministic_algorithms(True, warn_only=True)``).
    """
    seed = non_negative_int("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def default_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``; ``HLVIZ_DEVICE`` or ``prefer`` override it."""
    choice = prefer or os.environ.get("HLVIZ_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {choice!r} was asked for (HLVIZ_DEVICE or prefer=) but CUDA is not "
                "available here; use 'cpu' or unset HLVIZ_DEVICE."
            )
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_enabled() -> bool:
    """Whether hlviz shows progress bars: off when ``HLVIZ_PROGRESS=0`` or under pytest."""
    if os.environ.get("HLVIZ_PROGRESS", "1") == "0":
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with none)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, (torch.Tensor, PackedSequence)):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(_to_device(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on ``inputs``: a tensor, a tuple of arguments, or a mapping of keyword
    arguments (e.g. a tokenizer's output). Tensors are moved to the model's device."""
    inputs = _to_device(inputs, model_device(model))
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple) and not isinstance(inputs, PackedSequence):
        return model(*inputs)
    return model(inputs)
