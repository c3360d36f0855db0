"""An opt-in non-linear probe: one hidden layer, the scikit-learn contract, fitted in torch.

>>> import torch, hlviz
>>> X = torch.randn(400, 2); y = ((X[:, 0] * X[:, 1]) > 0).long()   # XOR: not linear
>>> mlp = hlviz.probes.MLPProbe(hidden=32).fit(X[:300], y[:300])
>>> mlp.score(X[300:], y[300:]) > 0.85
True

A more expressive probe finds more, including structure the model never uses and labels
it could memorise (Hewitt & Liang 2019): report an MLP probe's score together with its
control task, e.g. ``probe_layers(acts, y, types=..., probe=MLPProbe())``, and read the
selectivity, not the accuracy alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._checks import choice, non_negative_int, positive_int
from ..errors import NotFittedError, OptionError, ShapeMismatchError
from ._checks import as_targets, check_memory, device_of, encode_labels, is_numeric
from ._scaling import standardize_rows, standardizer
from .linear import _as_2d

__all__ = ["MLPProbe"]


class MLPProbe(BaseEstimator):
    """Softmax classifier on one hidden ReLU layer, trained full-batch by L-BFGS.

    Args:
        hidden: width of the hidden layer.
        alpha: L2 penalty on the weights, added to the mean cross-entropy as
            ``alpha / 2 * |W|^2`` (as scikit-learn's ``MLPClassifier(alpha=...)``).
        max_iter: L-BFGS iterations.
        standardize: scale features to zero mean, unit variance (training rows only).
        seed: initialisation seed, >= 0 (fits are deterministic for a given seed).
        task: ``"auto"`` or ``"classification"`` (regression is not supported here).
        device: where to fit (``None``: the device of ``X``); checked when fitting.

    Labels may be integers, bools, strings or any hashable values (``classes_`` holds them).
    A hidden layer whose weights would not fit in free memory (or past ``2**31`` parameters)
    is refused with a :class:`~hlviz.errors.MemoryBudgetError` before anything is allocated.

    Learned state: ``classes_``, ``mean_``, ``scale_``, ``net_`` (the torch module), ``n_iter_``.
    """

    def __init__(
        self,
        hidden: int = 64,
        *,
        alpha: float = 1e-3,
        max_iter: int = 200,
        standardize: bool = True,
        seed: int = 0,
        task: str = "auto",
        device: str | torch.device | None = None,
    ) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.standardize = standardize
        self.seed = seed
        self.task = task
        self.device = device

    def _check_params(self) -> None:
        positive_int("hidden", self.hidden)
        positive_int("max_iter", self.max_iter)
        non_negative_int("seed", self.seed)
        if not self.alpha >= 0:
            raise OptionError(f"alpha must be >= 0, got alpha={self.alpha!r}.")
        choice("task", self.task, ("auto", "classification"))

    def fit(self, X: Any, y: Any) -> MLPProbe:
        """Fit on rows ``X`` ``(n, ...)`` and class labels ``y`` ``(n,)`` (integers, bools,
        strings or any hashable values)."""
        self._check_params()
        device = device_of(self.device)
        X = _as_2d(X, device)
        y = as_targets(y, X.device)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ShapeMismatchError(
                f"y must hold one label per row of X: X has {X.shape[0]} rows, y has shape "
                f"{tuple(y.shape)}."
            )
        if is_numeric(y) and (y.is_floating_point() or y.is_complex()):
            raise OptionError(
                f"MLPProbe classifies labels; got task={self.task!r} and labels of dtype "
                f"{y.dtype}. Use LinearProbe(task='regression') for continuous targets, or "
                "integer / string labels to classify."
            )
        classes, codes = encode_labels(y)
        codes = codes.to(X.device)
        if len(classes) < 2:
            raise OptionError(
                f"y holds a single class ({classes.tolist()}); a probe needs at least two."
            )
        params = (X.shape[1] + 1) * self.hidden + (self.hidden + 1) * len(classes)
        check_memory(
            params,
            copies=44,  # weights, gradient, L-BFGS directions and history (20 pairs)
            device=X.device,
            what=f"MLPProbe(hidden={self.hidden}) on {X.shape[1]} features",
            fix="use a smaller hidden=, e.g. MLPProbe(hidden=64).",
        )
        self.mean_, self.scale_ = standardizer(X, self.standardize)
        Z = standardize_rows(X, self.mean_, self.scale_)
        generator = torch.Generator().manual_seed(self.seed)
        # built on the meta device (no draw from the global generator), then initialised
        # from the probe's own generator
        net = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], self.hidden, device="meta"),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, len(classes), device="meta"),
        ).to_empty(device="cpu")
        with torch.no_grad():
            for layer in (net[0], net[2]):
                bound = layer.in_features**-0.5
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 - 1)
                layer.weight.mul_(bound)
                layer.bias.zero_()
        net = net.to(X.device)
        weights = [net[0].weight, net[2].weight]
        opt = torch.optim.LBFGS(
            net.parameters(),
            max_iter=self.max_iter,
            tolerance_grad=1e-5,
            tolerance_change=1e-9,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(Z), codes)
            loss = loss + 0.5 * self.alpha * sum((w * w).sum() for w in weights)
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        net.requires_grad_(False).eval()
        self.net_ = net
        self.classes_ = classes
        self.n_iter_ = opt.state[opt._params[0]].get("n_iter", 0)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> torch.Tensor:
        """Class probabilities ``(n, classes)``, columns in the order of ``classes_``."""
        if not hasattr(self, "net_"):
            raise NotFittedError(
                "this MLPProbe is not fitted yet: call probe.fit(X_train, y_train) first."
            )
        X = _as_2d(X, self.mean_.device)
        if X.shape[1] != self.n_features_in_:
            raise ShapeMismatchError(
                f"X has {X.shape[1]} features but the probe was fit on {self.n_features_in_}; "
                "give activations of the same layer."
            )
        return self.net_(standardize_rows(X, self.mean_, self.scale_)).softmax(1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, as a NumPy array."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(1).cpu().numpy()]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on ``(X, y)``."""
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        return float((self.predict(X) == y).mean())
