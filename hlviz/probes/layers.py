"""Probe every layer, with the controls that make a probing result mean something.

>>> import torch, hlviz
>>> y = torch.randint(0, 2, (300,))
>>> acts = {"noise": torch.randn(300, 8), "signal": torch.randn(300, 8) + 2 * y[:, None]}
>>> report = hlviz.probes.probe_layers(acts, y, seeds=2)
>>> report.best_layer()
'signal'

For each layer and seed, the rows are split into train and test (grouped by ``groups``
so that rows of one input never straddle the split, stratified by label otherwise), a
:class:`LinearProbe` is fit on train and scored on test, next to controls:

* ``majority``: always answering the most frequent training label;
* ``shuffled``: a probe fit on permuted training labels (what the probe gets from
  capacity alone);
* ``control_task`` (Hewitt & Liang 2019): every input *type* (``types=``, e.g. the word)
  gets a random but consistent label; ``selectivity = score - control_task``;
* ``baseline``: the same probe on a random-init model's activations for the same inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._checks import fraction, positive_int
from ..errors import HlvizWarning, OptionError, OptionTypeError, ShapeMismatchError
from ._batched import Fit, batched_scores
from ._checks import as_rows, as_targets, device_of
from ._estimators import probe_template
from .linear import LinearProbe
from .mlp import MLPProbe

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["CONTROLS", "LinearProbe", "MLPProbe", "ProbeReport", "probe_layers", "split_indices"]

CONTROLS = ("majority", "shuffled", "control_task")
_BASE = "baseline"  # tags baseline layers inside a batched solve


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (
            (value.float() if value.dtype in (torch.float16, torch.bfloat16) else value)
            .cpu()
            .numpy()
        )
    return np.asarray(value)


def split_indices(
    y: Any, *, groups: Any = None, test_size: float = 0.25, seed: int = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices: grouped when ``groups`` is given, else stratified by ``y``.

    >>> train, test = split_indices([0, 1] * 10, groups=[i // 2 for i in range(20)], seed=0)
    >>> len(train) + len(test), len(set(train) & set(test))
    (20, 0)

    With ``groups`` no group has rows on both sides (scikit-learn's ``GroupShuffleSplit``).
    """
    from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit, StratifiedShuffleSplit

    y = _numpy(y)
    rows = np.arange(len(y))
    if groups is not None:
        groups = _numpy(groups)
        if len(groups) != len(y):
            raise ShapeMismatchError(
                f"groups has {len(groups)} entries but y has {len(y)}; give one group id per row."
            )
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        return next(splitter.split(rows, y, groups))
    if stratify:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() >= 2:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
            return next(splitter.split(rows, y))
    return next(ShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(rows))


def _control_labels(types: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Hewitt & Liang's control task: each type gets a label drawn from y's distribution."""
    rng = np.random.default_rng(seed + 10_007)
    kinds, inverse = np.unique(types, return_inverse=True)
    values, counts = np.unique(y, return_counts=True)
    per_type = rng.choice(values, size=len(kinds), p=counts / counts.sum())
    return per_type[inverse]


def _layers(acts: Any, what: str, n: int) -> dict[str, np.ndarray]:
    if not isinstance(acts, Mapping):
        raise OptionTypeError(
            f"{what} must be a non-empty mapping layer name -> activations (a dict or a "
            f"Recording), got {type(acts).__name__}."
        )
    if not len(acts):
        raise OptionError(
            f"{what} must be a non-empty mapping layer name -> activations (a dict or a "
            "Recording), got an empty one; record at least one layer."
        )
    out = {}
    for name, value in acts.items():
        if (
            isinstance(value, list)
            and len(value)
            and isinstance(value[0], (torch.Tensor, np.ndarray))
        ):
            raise OptionError(
                f"layer {name!r} in {what} holds {len(value)} calls (the module ran several "
                "times); pick one, e.g. {name: rec.calls(name)[-1]}."
            )
        out[str(name)] = _numpy(as_rows(value, f"layer {name!r} in {what}", n=n, vector_ok=True))
    return out


@dataclass(frozen=True)
class ProbeReport:
    """The result of :func:`probe_layers`: one row per layer in ``table`` (a DataFrame).

    Columns: ``layer``, ``score`` and ``score_sd`` (over seeds; accuracy or R^2), one
    column per control, ``selectivity`` (score minus the control task) and ``baseline``
    when given, plus ``n_train``, ``n_test`` and ``features``.
    """

    table: pd.DataFrame
    task: str
    seeds: int

    def best_layer(self) -> str:
        """The layer with the highest mean score."""
        return str(self.table.loc[self.table["score"].idxmax(), "layer"])

    def to_frame(self) -> pd.DataFrame:
        """The table, one row per layer (a copy)."""
        return self.table.copy()

    def summary(self, digits: int = 3) -> pd.DataFrame:
        """The table rounded for reading."""
        return self.table.round(digits)

    def plot(self, *, ax: Axes | None = None, title: str | None = None) -> Axes:
        """Score by layer with a +-sd band and the controls as dashed lines; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(self.table) + 2), 3.2))
        x = np.arange(len(self.table))
        score, sd = self.table["score"].to_numpy(), self.table["score_sd"].to_numpy()
        ax.plot(x, score, marker="o", label="probe", color="C0")
        ax.fill_between(x, score - sd, score + sd, color="C0", alpha=0.2)
        for i, column in enumerate(("majority", "shuffled", "control_task", "baseline")):
            if column in self.table and self.table[column].notna().any():
                ax.plot(x, self.table[column], ls="--", marker=".", color=f"C{i + 1}", label=column)
        ax.set_xticks(x, self.table["layer"], rotation=30, ha="right")
        ax.set_ylabel("test accuracy" if self.task == "classification" else "test R$^2$")
        ax.set_title(title or f"linear probes by layer ({self.seeds} seeds)")
        ax.legend(fontsize="small", frameon=False)
        return ax


def probe_layers(
    acts: Mapping[str, Any],
    y: Any,
    *,
    groups: Any = None,
    task: str = "auto",
    seeds: int = 3,
    controls: Sequence[str] | None = None,
    baseline: Mapping[str, Any] | None = None,
    types: Any = None,
    test_size: float = 0.25,
    probe: Any = None,
) -> ProbeReport:
    """Fit a linear probe on every layer (several seeds), with controls; see the module doc.

    Args:
        acts: layer name -> ``(n, ...)`` activations (a dict or a :class:`~hlviz.Recording`).
        y: ``(n,)`` labels (integers, bools, strings or any hashable values) or float
            targets for regression.
        groups: ``(n,)`` input ids: rows of one input stay on one side of every split.
        controls: any of ``"majority"``, ``"shuffled"``, ``"control_task"`` (needs ``types``);
            the default is all three when ``types`` is given, else the first two.
        baseline: layer name -> activations of a random-init model on the same inputs.
        types: ``(n,)`` input types for the control task (e.g. the word of each token).
        test_size: the fraction of rows (or groups) tested on, in (0, 1).
        probe: an unfitted estimator to clone for every fit: a :class:`LinearProbe` with
            other parameters, an :class:`MLPProbe` (opt-in; read its selectivity), or any
            scikit-learn classifier; or the name ``"linear"`` (the default) or ``"mlp"``. Linear classification probes of all layers, seeds
            and controls are fit together in one batched solve.

    Warns (:class:`~hlviz.HlvizWarning`) when identical rows exist but no ``groups`` were
    given (the same input on both sides of a split inflates scores), and when a layer has
    more features than training rows (a linear probe can then fit any labels).
    """
    from sklearn.base import clone

    y_np = _numpy(as_targets(y))
    if y_np.ndim != 1:
        raise ShapeMismatchError(f"y must be 1-D (one label per row), got shape {y_np.shape}.")
    if not len(y_np):
        raise ShapeMismatchError(
            "y is empty (no rows): probing needs labelled examples; record activations on "
            "some inputs and pass one label per row."
        )
    test_size = fraction(
        "test_size", test_size, hint="Give the fraction of rows to test on, e.g. test_size=0.25."
    )
    layers = _layers(acts, "acts", len(y_np))
    base = _layers(baseline, "baseline", len(y_np)) if baseline is not None else {}
    if controls is None:
        controls = CONTROLS if types is not None else ("majority", "shuffled")
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise OptionError(f"unknown controls {unknown}; choose from {CONTROLS}.")
    positive_int("seeds", seeds)
    template = probe_template(probe, task)
    if isinstance(template, LinearProbe):
        device_of(template.device)
    resolved = LinearProbe(task=getattr(template, "task", task))._resolve_task(y_np)
    types_np = None
    if "control_task" in controls and (types is None or resolved != "classification"):
        raise OptionError(
            "the control task gives each input type a random label, so it needs types= (one "
            "type per row, e.g. the word of each token or the id of each image) and class "
            f"labels; got types={'None' if types is None else 'given'} and a {resolved} target. "
            "Pass types=, or leave 'control_task' out of controls."
        )
    if "control_task" in controls:
        types_np = _numpy(types)
        if len(types_np) != len(y_np):
            raise ShapeMismatchError(f"types has {len(types_np)} entries but y has {len(y_np)}.")
    if groups is None:
        first = next(iter(layers.values()))
        if len(np.unique(first, axis=0)) < len(first):
            warnings.warn(
                "some rows of the activations are identical but no groups= were given: the same "
                "input may land in train and test and inflate scores. Pass groups= (e.g. a "
                "sentence or image id per row).",
                HlvizWarning,
                stacklevel=2,
            )

    splits = [
        split_indices(
            y_np,
            groups=groups,
            test_size=test_size,
            seed=seed,
            stratify=resolved == "classification",
        )
        for seed in range(seeds)
    ]
    for name, X in layers.items():
        if X.shape[1] > len(splits[0][0]):
            warnings.warn(
                f"layer {name!r} has {X.shape[1]} features but only {len(splits[0][0])} training "
                "rows: a linear probe can fit any labels here; compare with the controls or reduce "
                "the dimension (e.g. PCA) first.",
                HlvizWarning,
                stacklevel=2,
            )
    fits: dict[str, list[Fit]] = {"score": [], "shuffled": [], "control_task": []}
    for seed, (train, test) in enumerate(splits):
        fits["score"].append(Fit(y_np, train, test))
        if "shuffled" in controls:
            shuffled = y_np.copy()
            shuffled[train] = np.random.default_rng(seed).permutation(y_np[train])
            fits["shuffled"].append(Fit(shuffled, train, test))
        if types_np is not None:
            fits["control_task"].append(Fit(_control_labels(types_np, y_np, seed), train, test))
    if type(template) is LinearProbe and resolved == "classification" and template.standardize:
        # baseline layers ride in the same solve with the same fits, so that identical
        # inputs (e.g. the pixels of both models) give identical scores to the last bit
        both = _batched({**layers, **{(_BASE, k): v for k, v in base.items()}}, fits, template)
        scores = {k: v for k, v in both.items() if not isinstance(k, tuple)}
        base_scores = {k[1]: v for k, v in both.items() if isinstance(k, tuple)}
    else:
        if "task" in template.get_params():
            template = clone(template).set_params(task=resolved)
        scores = _one_by_one(layers, fits, template)
        base_scores = _one_by_one(base, {"score": fits["score"]}, clone(template))

    rows = []
    for name, X in layers.items():
        row = {"layer": name, "score": np.mean(scores[name]["score"])}
        row["score_sd"] = np.std(scores[name]["score"])
        if "majority" in controls:
            row["majority"] = np.mean([_majority(y_np[a], y_np[b], resolved) for a, b in splits])
        for column in ("shuffled", "control_task"):
            if column in controls:
                row[column] = np.mean(scores[name][column])
        row["baseline"] = np.mean(base_scores[name]["score"]) if name in base_scores else np.nan
        row["selectivity"] = row["score"] - row.get("control_task", np.nan)
        row.update(n_train=len(splits[-1][0]), n_test=len(splits[-1][1]), features=X.shape[1])
        rows.append(row)
    import pandas as pd

    table = pd.DataFrame(rows)
    return ProbeReport(table=table, task=resolved, seeds=seeds)


def _batched(
    layers: dict[Any, np.ndarray], fits: dict[str, list[Fit]], template: LinearProbe
) -> dict[Any, dict[str, list[float]]]:
    """Every fit of every layer in one batched solve (see :mod:`hlviz.probes._batched`)."""
    flat = [f for group in fits.values() for f in group]
    acc = batched_scores(
        layers, flat, C=template.C, max_iter=template.max_iter, tol=template.tol,
        device=template.device,
    )  # fmt: skip
    out = {}
    for name, values in acc.items():
        out[name], start = {}, 0
        for column, group in fits.items():
            out[name][column] = values[start : start + len(group)].tolist()
            start += len(group)
    return out


def _one_by_one(
    layers: dict[str, np.ndarray], fits: dict[str, list[Fit]], template: Any
) -> dict[str, dict[str, list[float]]]:
    """Each fit of each layer by ``clone(template).fit(...).score(...)``."""
    from sklearn.base import clone

    out = {}
    for name, X in layers.items():
        out[name] = {
            column: [
                clone(template)
                .fit(X[f.train], f.labels[f.train])
                .score(X[f.test], f.labels[f.test])
                for f in group
            ]
            for column, group in fits.items()
        }
    return out


def _majority(y_train: np.ndarray, y_test: np.ndarray, task: str) -> float:
    if task == "classification":
        values, counts = np.unique(y_train, return_counts=True)
        return float((y_test == values[counts.argmax()]).mean())
    total = ((y_test - y_test.mean()) ** 2).sum()
    return float(1 - ((y_test - y_train.mean()) ** 2).sum() / max(total, 1e-12))
