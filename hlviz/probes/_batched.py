"""Score many linear classification probes at once: every layer, seed and label set.

A sweep fits, for each layer, the task labels, the shuffled labels and the control-task
labels on the training rows of each seed. Those fits share the layer's rows, so here
one pass over a layer's rows serves all of them (:mod:`hlviz.probes._lbfgs`), and layers of the
same width are stacked into one batched product. Each fit is still its own problem,
with the training-rows-only standardisation of :class:`~hlviz.probes.LinearProbe`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._lbfgs import Problems, fit_softmax
from ._scaling import scale_of

__all__ = ["Fit", "batched_scores"]

_MAX_BATCH_BYTES = 1 << 30  # rows of stacked layers held at once (float32)


@dataclass(frozen=True)
class Fit:
    """One probe of a sweep: ``labels`` ``(n,)`` fit on rows ``train``, scored on ``test``."""

    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray


def _chunks(names: list[str], rows: int, width: int) -> list[list[str]]:
    per_layer = max(1, rows * width * 4)
    size = max(1, _MAX_BATCH_BYTES // per_layer)
    return [names[i : i + size] for i in range(0, len(names), size)]


def batched_scores(
    layers: Mapping[str, np.ndarray],
    fits: Sequence[Fit],
    *,
    C: float = 1.0,
    max_iter: int = 200,
    tol: float = 1e-4,
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Test accuracy of every fit on every layer: ``{layer: (len(fits),)}``.

    ``layers`` maps names to ``(n, d)`` arrays with the same rows; the same objective
    and stopping rule as :class:`~hlviz.probes.LinearProbe` (``C``, ``max_iter``, ``tol``).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    labels = np.stack([f.labels for f in fits])
    classes, codes = np.unique(labels, return_inverse=True)
    codes = torch.as_tensor(codes.reshape(labels.shape), device=device)
    n = labels.shape[1]
    train = torch.zeros(len(fits), n, dtype=torch.bool, device=device)
    test = torch.zeros_like(train)
    for p, f in enumerate(fits):
        train[p, torch.as_tensor(f.train, device=device)] = True
        test[p, torch.as_tensor(f.test, device=device)] = True
    n_train = train.sum(1).to(torch.float32)
    weights = train.to(torch.float32) / n_train[:, None]
    absent = torch.ones(len(fits), len(classes), dtype=torch.bool, device=device)
    for p in range(len(fits)):
        absent[p, codes[p][train[p]].unique()] = False
    lam = 1.0 / (C * n_train)

    by_width: dict[int, list[str]] = {}
    for name, X in layers.items():
        by_width.setdefault(X.shape[1], []).append(name)
    scores = {}
    for width, names in by_width.items():
        for chunk in _chunks(names, n, width):
            X = torch.empty(len(chunk), n, width, device=device)
            mean = torch.empty(len(chunk), len(fits), width, device=device)
            scale = torch.empty_like(mean)
            # fits that share training rows (a seed's task and controls) share statistics
            w64, which = torch.unique(weights.double(), dim=0, return_inverse=True)
            for i, name in enumerate(chunk):
                # a global rescale (float64 statistics) keeps float32 exact enough; each fit
                # then standardises on its own training rows, as LinearProbe does
                X64 = torch.as_tensor(layers[name], device=device).double()
                std, mu = torch.std_mean(X64, 0, correction=0)
                std = std.clamp_min(1e-8)
                X64 = (X64 - mu) / std
                m = w64 @ X64  # each fit's training mean and spread, in global units
                spread = (w64 @ X64.square() - m.square()).clamp_min(0.0).sqrt()
                # LinearProbe's constant-column rule, on the raw units of the rows
                scale_raw = scale_of(mu + std * m, std * spread)
                X[i], mean[i] = X64, m[which]
                scale[i] = (scale_raw / std)[which]
            problems = Problems(X, codes, weights, absent, mean, scale, lam)
            fit = fit_softmax(problems, max_iter=max_iter, tol=tol)
            x = torch.cat([fit.coef.flatten(-2), fit.intercept], -1)
            pred = problems.predict(x)  # (L, n, P)
            correct = (pred == codes.T[None]) & test.T[None]
            acc = correct.sum(1) / test.sum(1)
            for i, name in enumerate(chunk):
                scores[name] = acc[i].cpu().numpy()
    return {name: scores[name] for name in layers}
