"""Seeded randomness that leaves the caller's random state alone.

>>> import torch
>>> before = torch.random.get_rng_state()
>>> with seeded(3):
...     a = torch.rand(2)
>>> with seeded(3):
...     b = torch.rand(2)
>>> torch.equal(a, b), torch.equal(before, torch.random.get_rng_state())
(True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside: torch's CPU and every CUDA generator seeded with ``seed`` (code that draws
    from the global generators, such as ``reset_parameters`` and Captum's noise, is then
    repeatable); on exit all of them are restored, so the caller's state is unchanged."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
