"""Multi-layer perceptrons with readable layer names, and fast full-batch training.

>>> import torch
>>> from hlviz.models import MLP
>>> model = MLP([8, 8], activation="relu", seed=0)
>>> [name for name, _ in model.named_modules()][1:6]
['layers', 'layers.0', 'layers.0.linear', 'layers.0.act', 'layers.1']
>>> model(torch.zeros(5, 2)).shape
torch.Size([5, 2])

Hidden layer ``k`` is ``layers.k``: its weighted sum (the pre-activation) is
``layers.k.linear`` and its non-linearity (the post-activation) ``layers.k.act``; the
read-out is ``head``. So ``hlviz.record(model, "layers.*.act")`` records every hidden
layer after its activation, and ``"layers.*.linear"`` every weighted sum.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, OptionTypeError
from ..hooks.layers import check_module
from ..runtime import model_device

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "OPTIMIZERS",
    "TrainResult",
    "count_parameters",
    "train_full_batch",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
}
OPTIMIZERS = ("adam", "lbfgs")


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an int >= {minimum}, got {value!r}.")


class MLP(nn.Module):
    """A fully connected network: ``in_features -> widths[0] -> ... -> out_features``.

    >>> MLP([4], in_features=3, out_features=1, seed=0)(torch.zeros(2, 3)).shape
    torch.Size([2, 1])

    Args:
        widths: the width of each hidden layer; ``[]`` gives a linear model.
        activation: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"leaky_relu"`` or ``"linear"``.
        in_features, out_features: input dimension (2 for points of the plane) and number
            of outputs (logits, one per class).
        seed: seeds the initial weights (PyTorch's default initialisation) without
            touching the global random state; ``None`` draws from the global generator.

    Input ``(n, in_features)``, output ``(n, out_features)``. Layers are named
    ``layers.k.linear``, ``layers.k.act`` and ``head`` (see the module docstring).
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        activation: str = "relu",
        in_features: int = 2,
        out_features: int = 2,
        seed: int | None = 0,
    ):
        super().__init__()
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
            raise OptionTypeError(
                f"widths must be a list of hidden-layer widths such as [8, 8], got {widths!r}; "
                "use [] for a linear model."
            )
        for i, width in enumerate(widths):
            _check_int(width, f"widths[{i}]", 1)
        _check_int(in_features, "in_features", 1)
        _check_int(out_features, "out_features", 1)
        if activation not in ACTIVATIONS:
            raise OptionError(
                f"activation={activation!r} is not known; use one of {', '.join(ACTIVATIONS)}."
            )
        self.widths, self.activation = tuple(widths), activation
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            sizes = [in_features, *widths]
            self.layers = nn.ModuleList(
                nn.Sequential(OrderedDict(linear=nn.Linear(a, b), act=ACTIVATIONS[activation]()))
                for a, b in pairwise(sizes)
            )
            self.head = nn.Linear(sizes[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def extra_repr(self) -> str:
        return f"widths={list(self.widths)}, activation={self.activation!r}"


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters (weights and biases) of ``model``.

    >>> count_parameters(MLP([8], seed=0))   # 2*8 + 8 + 8*2 + 2
    42
    """
    check_module(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train_full_batch`: the trained ``model`` (in eval mode), the loss
    at every step (``losses``, numpy ``(steps,)`` for Adam; one per loss evaluation for
    L-BFGS) and the final training ``accuracy``."""

    model: nn.Module
    losses: np.ndarray
    accuracy: float
    optimizer: str

    def summary(self) -> dict[str, Any]:
        """Steps, final loss and accuracy (rounded to 3 decimals), and the parameter count."""
        return {
            "optimizer": self.optimizer,
            "steps": len(self.losses),
            "final_loss": round(float(self.losses[-1]), 3),
            "accuracy": round(self.accuracy, 3),
            "parameters": count_parameters(self.model),
        }

    def plot(self, ax: Any = None):
        """The loss curve (log scale); returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3))
        ax.plot(np.arange(1, len(self.losses) + 1), self.losses)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"{self.optimizer}: accuracy {self.accuracy:.3f}")
        return ax


def train_full_batch(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 300,
    lr: float | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
) -> TrainResult:
    """Train ``model`` in place on all of ``X`` ``(n, d)`` and labels ``y`` ``(n,)`` at each step.

    >>> X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])
    >>> y = torch.tensor([0, 1, 0, 1])
    >>> train_full_batch(MLP([8], seed=0), X, y, steps=200, lr=0.05).accuracy
    1.0

    Full-batch training has no minibatch noise, so the same initial weights give the
    same result on the same hardware. ``optimizer="adam"`` (``lr``
    default 0.02, with a cosine decay to 0 over ``steps``) or ``"lbfgs"`` (L-BFGS with a
    strong-Wolfe line search, ``steps`` iterations, ``lr`` default 1). Cross-entropy
    loss; ``weight_decay`` adds ``weight_decay / 2 * |W|^2`` over all parameters.
    The model trains on its own device and is left in eval mode.

    Training runs on the process's torch thread count; nothing here changes a process-wide
    setting (call ``torch.set_num_threads`` yourself for another).
    """
    check_module(model)
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise OptionTypeError(
            f"X and y must be tensors, got {type(X).__name__} and {type(y).__name__}; "
            "convert with torch.as_tensor(...)."
        )
    if X.dim() != 2 or y.dim() != 1 or len(X) != len(y) or len(X) == 0:
        raise OptionError(
            f"X must be (n, d) and y (n,) with the same n > 0, got {tuple(X.shape)} and "
            f"{tuple(y.shape)}."
        )
    if y.dtype != torch.long:
        raise OptionTypeError(f"y must hold int64 class indices, got {y.dtype}; use y.long().")
    _check_int(steps, "steps", 1)
    if optimizer not in OPTIMIZERS:
        raise OptionError(f"optimizer={optimizer!r} is not known; use 'adam' or 'lbfgs'.")
    if lr is None:
        lr = 0.02 if optimizer == "adam" else 1.0
    if not lr > 0 or not weight_decay >= 0:
        raise OptionError(
            f"lr must be > 0 and weight_decay >= 0, got lr={lr!r}, weight_decay={weight_decay!r}."
        )
    device = model_device(model)
    return _train(
        model, X.to(device, torch.float32), y.to(device), steps, lr, optimizer, weight_decay
    )


def _train(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    optimizer: str,
    weight_decay: float,
) -> TrainResult:
    params = [p for p in model.parameters() if p.requires_grad]
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def loss_now() -> torch.Tensor:
        loss = loss_fn(model(X), y)
        if weight_decay:
            loss = loss + weight_decay / 2 * sum(p.square().sum() for p in params)
        return loss

    losses = []
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_now()
            loss.backward()
            opt.step()
            schedule.step()
            losses.append(loss.item())
    else:
        opt = torch.optim.LBFGS(
            params, lr=lr, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = loss_now()
            loss.backward()
            losses.append(loss.item())
            return loss

        opt.step(closure)
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).float().mean().item()
    return TrainResult(model=model, losses=np.asarray(losses), accuracy=acc, optimizer=optimizer)
