"""Seeds and devices."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.runtime import progress_enabled


def test_seed_everything_makes_all_generators_repeat():
    draws = []
    for _ in range(2):
        hlviz.seed_everything(3)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        hlviz.seed_everything(-1)


def test_default_device_and_override(monkeypatch):
    monkeypatch.delenv("HLVIZ_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert hlviz.default_device().type == expected
    monkeypatch.setenv("HLVIZ_DEVICE", "cpu")
    assert hlviz.default_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(
            RuntimeError, match="CUDA is not available here; use 'cpu' or unset HLVIZ_DEVICE"
        ):
            hlviz.default_device("cuda")


def test_model_device_and_run_model_moves_inputs():
    assert hlviz.model_device(nn.ReLU()).type == "cpu"
    model = nn.Linear(2, 1).to(torch.float64)
    assert hlviz.model_device(model).type == "cpu"
    out = hlviz.run_model(nn.Linear(2, 1), {"input": torch.zeros(1, 2)})
    assert out.shape == (1, 1)


def test_progress_is_off_under_test(monkeypatch):
    assert progress_enabled() is False
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setenv("HLVIZ_PROGRESS", "1")
    assert progress_enabled() is True
    monkeypatch.setenv("HLVIZ_PROGRESS", "0")
    assert progress_enabled() is False
