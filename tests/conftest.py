"""Shared fixtures. Unit tests draw with Agg (set here, not in the environment, so the
notebooks that nbval runs in kernels keep their inline backend)."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


from .zoo import Blocks


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return Blocks().eval()


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(2, 1, 8, 8)
