"""Reproducibility and device helpers.

>>> import hlviz
>>> hlviz.seed_everything(0)
>>> hlviz.default_device().type in ("cpu", "cuda")
True
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .errors import OptionError
from .hooks import model_device

__all__ = ["default_device", "model_device", "progress_enabled", "seed_everything"]


def seed_everything(seed: int = 0, *, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic kernels
    (``torch.use_deterministic_algorithms(True, warn_only=True)``).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise OptionError(f"seed must be a non-negative int, got {seed!r}.")
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
