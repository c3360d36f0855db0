"""Root pytest configuration: names available to the doctests in hlviz/ (run with the suite)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import torch
    from torch import nn

    import hlviz

    doctest_namespace.update(hlviz=hlviz, torch=torch, nn=nn)
