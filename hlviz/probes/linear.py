"""Linear probes with the scikit-learn contract, fitted in torch (CPU or GPU).

>>> import torch, hlviz
>>> X = torch.randn(200, 5); y = (X[:, 0] > 0).long()
>>> probe = hlviz.probes.LinearProbe().fit(X[:150], y[:150])
>>> probe.score(X[150:], y[150:]) > 0.9
True

A probe asks how much of a property a layer's activations hold *linearly*. It is a
multinomial logistic regression (classification) or a ridge regression (continuous
targets) on standardised features; the standardisation is fit on the training rows
only, so no statistic of the test rows leaks into the fit. Classification is solved by
a preconditioned L-BFGS (:mod:`hlviz.probes._lbfgs`) that also fits every probe of a layer
sweep in one batch (:func:`hlviz.probes.probe_layers`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .._checks import choice, positive_int
from ..errors import NotFittedError, OptionError, ShapeMismatchError
from ._checks import as_rows, as_targets, check_finite, device_of, encode_labels, is_numeric
from ._lbfgs import Problems, fit_softmax
from ._linalg import cholesky
from ._scaling import standardize_rows, standardizer

__all__ = ["LinearProbe"]

TASKS = ("auto", "classification", "regression")


def _as_2d(X: Any, device: torch.device | None, name: str = "X") -> torch.Tensor:
    """Rows of features as a float tensor ``(n, d)``; extra axes are flattened."""
    rows = as_rows(X, name)
    tensor = rows if isinstance(rows, torch.Tensor) else torch.as_tensor(rows)
    tensor = tensor.to(dtype=torch.float32)
    check_finite(tensor, f"{name} (in float32)")
    return tensor.to(device) if device is not None else tensor


class LinearProbe(BaseEstimator):
    """A linear read-out of a representation: ``fit(X, y)``, ``predict``, ``score``.

    Args:
        task: ``"classification"`` (class labels: softmax regression), ``"regression"``
            (float targets, ``(n,)`` or ``(n, k)``: ridge), or ``"auto"`` (integer, bool,
            string or other hashable labels -> classification, floats -> regression).
        C: inverse L2 strength for classification, as in scikit-learn's
            ``LogisticRegression`` (minimises ``C * sum(cross-entropy) + |W|^2 / 2``).
        alpha: L2 strength for regression, as in scikit-learn's ``Ridge``.
        max_iter: L-BFGS iterations for classification.
        tol: stop when no gradient entry of the (mean) objective exceeds this, as
            scikit-learn's ``LogisticRegression(tol=...)`` with the lbfgs solver.
        standardize: scale each feature to zero mean and unit variance (train rows only).
        device: where to fit (``None``: the device of ``X``); checked when fitting.

    Class labels may be any hashable values, as in scikit-learn (``["NOUN", "VERB", ...]``):
    ``classes_`` holds them (sorted) and ``predict`` returns them.
    Learned state ends in ``_``: ``classes_``, ``coef_`` ``(classes, d)`` or ``(k, d)``,
    ``intercept_``, ``mean_``, ``scale_``, ``n_iter_``. ``score`` is accuracy for
    classification and R^2 for regression.
    """

    def __init__(
        self,
        task: str = "auto",
        *,
        C: float = 1.0,
        alpha: float = 1.0,
        max_iter: int = 200,
        tol: float = 1e-4,
        standardize: bool = True,
        device: str | torch.device | None = None,
    ) -> None:
        self.task = task
        self.C = C
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.standardize = standardize
        self.device = device

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        choice("task", self.task, TASKS)
        if not self.C > 0 or not self.alpha >= 0:
            raise OptionError(
                f"C must be > 0 and alpha >= 0, got C={self.C!r}, alpha={self.alpha!r}."
            )
        positive_int("max_iter", self.max_iter)

    def _resolve_task(self, y: np.ndarray | torch.Tensor) -> str:
        """The task for targets ``y``: labels that are not numbers (strings, any hashable)
        and integer or bool labels are classified, floats regressed (with ``task="auto"``)."""
        if not is_numeric(y):
            if self.task == "regression":
                raise OptionError(
                    f"task='regression' needs numeric targets, got labels of dtype {y.dtype} "
                    f"(e.g. {y.reshape(-1)[0]!r}); use task='classification' (or 'auto')."
                )
            return "classification"
        if self.task != "auto":
            return self.task
        if isinstance(y, np.ndarray):
            y = torch.as_tensor(y)
        if y.dtype in (torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            return "classification"
        return "regression"

    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Fit on rows ``X`` ``(n, ...)`` and targets ``y`` ``(n,)`` (or ``(n, k)`` for regression)."""
        self._check_params()
        device = device_of(self.device)
        X = _as_2d(X, device)
        y = as_targets(y, X.device)
        if y.shape[0] != X.shape[0]:
            raise ShapeMismatchError(
                f"X has {X.shape[0]} rows but y has {y.shape[0]}; give one target per row."
            )
        self.task_ = self._resolve_task(y)
        self.mean_, self.scale_ = standardizer(X, self.standardize)
        Z = standardize_rows(X, self.mean_, self.scale_)
        if self.task_ == "classification":
            self._fit_logistic(Z, y)
        else:
            self._fit_ridge(Z, torch.as_tensor(y).to(torch.float32))
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_logistic(self, Z: torch.Tensor, y: np.ndarray | torch.Tensor) -> None:
        if y.ndim != 1:
            raise ShapeMismatchError(
                f"classification needs one label per row, y of shape (n,); got {tuple(y.shape)}."
            )
        classes, codes = encode_labels(y)
        codes = codes.to(Z.device)
        if len(classes) < 2:
            raise OptionError(
                f"y holds a single class ({classes.tolist()}); a probe needs at least two."
            )
        n = Z.shape[0]
        ones = torch.ones(1, 1, Z.shape[1], device=Z.device)
        problems = Problems(
            Z[None],
            codes[None],
            torch.full((1, n), 1.0 / n, device=Z.device),
            torch.zeros(1, len(classes), dtype=torch.bool, device=Z.device),
            0.0 * ones,
            ones,
            torch.full((1,), 1.0 / (self.C * n), device=Z.device),
        )
        fit = fit_softmax(problems, max_iter=self.max_iter, tol=self.tol)
        self.classes_ = classes
        self.coef_ = fit.coef[0, 0]
        self.intercept_ = fit.intercept[0, 0]
        self.n_iter_ = int(fit.n_iter[0, 0])

    def _fit_ridge(self, Z: torch.Tensor, y: torch.Tensor) -> None:
        target = y if y.dim() == 2 else y[:, None]
        y_mean = target.double().mean(0)
        Zd = Z.double()
        z_mean = Zd.mean(0)  # 0 when standardised; centring fits the intercept otherwise
        Zc = Zd - z_mean
        d = Z.shape[1]
        gram = Zc.T @ Zc + self.alpha * torch.eye(d, dtype=torch.float64, device=Z.device)
        factor = cholesky(
            gram,
            what=f"the ridge system Z^T Z + alpha I ({d} x {d}, alpha={self.alpha!r})",
            fix="With alpha=0 the features must be linearly independent on the training rows "
            "(no constant or collinear columns); pass alpha > 0, e.g. LinearProbe(alpha=1e-3).",
        )
        coef = torch.cholesky_solve(Zc.T @ (target.double() - y_mean), factor).T
        self.coef_ = coef.float()
        self.intercept_ = (y_mean - coef @ z_mean).float()
        self._single_target = y.dim() == 1
        self.n_iter_ = 1

    # ------------------------------------------------------------------ use
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                "this LinearProbe is not fitted yet: call probe.fit(X_train, y_train) first."
            )

    def _standardised(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        X = _as_2d(X, self.coef_.device)
        if X.shape[1] != self.n_features_in_:
            raise ShapeMismatchError(
                f"X has {X.shape[1]} features but the probe was fit on {self.n_features_in_}; "
                "give activations of the same layer."
            )
        return standardize_rows(X, self.mean_, self.scale_)

    def decision_function(self, X: Any) -> torch.Tensor:
        """Logits ``(n, classes)`` (classification) or predictions (regression)."""
        return self._standardised(X) @ self.coef_.T + self.intercept_

    def predict_proba(self, X: Any) -> torch.Tensor:
        """Class probabilities ``(n, classes)``, columns in the order of ``classes_``."""
        if getattr(self, "task_", None) == "regression":
            raise OptionError("predict_proba is for classification probes; this one regresses.")
        return self.decision_function(X).softmax(1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (classification) or values (regression), as a NumPy array."""
        out = self.decision_function(X)
        if self.task_ == "classification":
            return self.classes_[out.argmax(1).cpu().numpy()]
        out = out.cpu().numpy()
        return out[:, 0] if self._single_target else out

    def score(self, X: Any, y: Any) -> float:
        """Accuracy (classification) or the coefficient of determination R^2 (regression)."""
        pred = self.predict(X)
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if self.task_ == "classification":
            return float((pred == y).mean())
        y = y.reshape(pred.shape).astype(np.float64)
        resid = ((y - pred) ** 2).sum(0)
        total = ((y - y.mean(0)) ** 2).sum(0)
        return float(np.mean(1.0 - resid / np.maximum(total, 1e-12)))
