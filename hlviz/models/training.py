"""Train and evaluate a classifier in a few lines, reproducibly (a helper for the tutorials).

>>> import torch, torch.nn as nn
>>> from hlviz.models import train_classifier, accuracy
>>> X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> history = train_classifier(model, X, y, epochs=2, seed=0)
>>> history.columns.tolist()
['epoch', 'loss', 'train_accuracy']
>>> 0.0 <= accuracy(model, X, y) <= 1.0
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import OptionError, OptionTypeError
from ..hooks.layers import check_module
from ..runtime import model_device

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["accuracy", "predict", "train_classifier"]


def _check_xy(X: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise OptionTypeError(
            f"{what} must be tensors, got X: {type(X).__name__}, y: {type(y).__name__}; "
            "convert with torch.as_tensor(...)."
        )
    if y.dim() != 1 or X.shape[0] != y.shape[0]:
        raise OptionError(
            f"{what}: X has shape {tuple(X.shape)} and y {tuple(y.shape)}; y must be 1-D with one "
            "class index per row of X."
        )
    if y.dtype != torch.long:
        raise OptionTypeError(
            f"{what}: y must hold int64 class indices, got dtype {y.dtype}; use y.long()."
        )


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``X`` (in eval mode, without gradients), on the CPU: ``(N, classes)``.

    Example::

        predict(model, X).argmax(1)

    ``X`` is moved to the model's device in batches of ``batch_size``; the model's
    train/eval mode is restored afterwards.
    """
    check_module(model)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive int, got {batch_size!r}.")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        parts = [
            model(X[i : i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def accuracy(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024
) -> float:
    """Fraction of rows of ``X`` whose arg-max logit is the label in ``y``.

    Example::

        accuracy(model, test.X, test.y)  # 0.978 for the digits CNN of notebook 00
    """
    _check_xy(X, y, "accuracy(model, X, y)")
    return (predict(model, X, batch_size=batch_size).argmax(1) == y.cpu()).float().mean().item()


def train_classifier(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place with Adam, a cosine learning-rate decay and cross-entropy.

    Example::

        history = train_classifier(model, train.X, train.y, epochs=20, eval_data=(test.X, test.y))

    Returns the history per epoch. The learning rate starts at ``lr`` and decays to 0
    along a cosine over all steps, so the last epochs settle instead of jumping around.
    The model trains on its own device (move it first with ``model.to(device)``);
    minibatches are shuffled by a generator seeded with ``seed``, so the same model
    initialisation, data and seed give the same weights on the same hardware. The
    history is a ``pandas.DataFrame`` with ``epoch``, ``loss`` (mean training loss),
    ``train_accuracy`` and, with ``eval_data=(X_test, y_test)``, ``test_accuracy``.
    The model is left in eval mode.
    """
    import pandas as pd

    check_module(model)
    _check_xy(X, y, "train_classifier(model, X, y)")
    if eval_data is not None:
        if not isinstance(eval_data, (tuple, list)) or len(eval_data) != 2:
            raise OptionTypeError(
                f"eval_data must be a pair (X_test, y_test), got {type(eval_data).__name__}; "
                "an ImageSplit works too: eval_data=tuple(test)."
            )
        _check_xy(*eval_data, "eval_data")
    for label, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"{label} must be a positive int, got {value!r}.")
    if not lr > 0:
        raise OptionError(f"lr must be a positive learning rate, got {lr!r}; try lr=1e-2.")
    device = model_device(model)
    X, y = X.to(device), y.to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(X) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(X), generator=generator).to(device)
        total, correct = 0.0, 0
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            logits = model(X[idx])
            loss = loss_fn(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
        row = {"epoch": epoch, "loss": total / len(X), "train_accuracy": correct / len(X)}
        if eval_data is not None:
            row["test_accuracy"] = accuracy(model, *eval_data)
        rows.append(row)
    model.eval()
    return pd.DataFrame(rows)
