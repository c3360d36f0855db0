"""Sanity checks for saliency maps (Adebayo et al. 2018): cascading parameter randomisation.

>>> import torch, torch.nn as nn, hlviz
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
>>> report = hlviz.sanity_check(model, torch.randn(4, 6), target=0, methods=["saliency"])
>>> list(report.table.columns[:3]), list(report.summary().columns[-2:])
(['method', 'step', 'randomised'], ['top10_overlap', 'flagged'])

Layers are re-initialised one by one from the output towards the input; after each
step every method's maps are recomputed and compared with the maps of the trained
model (Spearman rank correlation of signed and of absolute values, and the overlap of
the top 10% features). A method whose maps still look like the originals once every
layer is random explains the input, not the model: it is flagged. The model's
parameters and buffers are restored afterwards, also when a method raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ConvergenceWarning, OptionError
from ..hooks.layers import LayerSpec, check_module, resolve_modules, unwrap
from ._rng import seeded

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["SanityReport", "sanity_check"]


@dataclass(frozen=True)
class SanityReport:
    """One row per (method, cascade step): ``step`` (0 = trained model), ``randomised``
    (the layer re-initialised at that step; the ones before it are random too),
    ``spearman``, ``spearman_abs`` and ``top10_overlap`` with the trained model's maps
    (means over examples). ``flagged``: methods whose fully randomised maps keep a mean
    ``spearman_abs`` at or above ``threshold``."""

    table: pd.DataFrame
    flagged: tuple[str, ...]
    threshold: float

    def to_frame(self) -> pd.DataFrame:
        """The whole table: one row per (method, cascade step)."""
        return self.table.copy()

    def summary(self) -> pd.DataFrame:
        """One row per method with every layer random: ``method``, ``spearman``,
        ``spearman_abs``, ``top10_overlap`` and ``flagged``."""
        last = self.table[self.table.step == self.table.step.max()]
        cols = ["method", "spearman", "spearman_abs", "top10_overlap"]
        out = last[cols].reset_index(drop=True)
        out["flagged"] = out["method"].isin(self.flagged)
        return out

    def describe(self) -> str:
        """One line per method: its rank correlation once every layer is random."""
        return "\n".join(
            f"{r.method}: spearman_abs {r.spearman_abs:.3f} with all layers random"
            + (" -> FLAGGED (maps do not depend on the weights)" if r.flagged else "")
            for r in self.summary().itertuples()
        )

    def plot(self, *, ax: Axes | None = None) -> Axes:
        """``spearman_abs`` against the cascade (layers randomised so far), one line per
        method (seaborn, from the tidy table); returns the Axes."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3), layout="constrained")
        sns.lineplot(
            self.table, x="step", y="spearman_abs", hue="method", marker="o", ax=ax, sort=False
        )
        steps = self.table.drop_duplicates("step").sort_values("step")
        ax.set_xticks(steps.step)
        ax.set_xticklabels(["trained", *steps.randomised.iloc[1:]], rotation=45, ha="right")
        ax.axhline(self.threshold, color="grey", ls="--", lw=0.8)
        ax.set_ylabel("Spearman |map| vs trained")
        ax.set_xlabel("cascading randomisation (output -> input)")
        ax.legend(fontsize=8)
        return ax


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a, b, strict=True):
        if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant map has no ranking
            out.append(1.0 if np.array_equal(x, y) else 0.0)
        else:
            out.append(float(spearmanr(x, y).statistic))
    return float(np.mean(out))


def _top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    k = max(1, round(fraction * a.shape[1]))
    top_a = np.argsort(-np.abs(a), axis=1)[:, :k]
    top_b = np.argsort(-np.abs(b), axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b, strict=True)]))


def _randomise(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` (its ``reset_parameters``, else ``N(0, 0.02)``) under ``seed``;
    torch's generators are restored afterwards."""
    with seeded(seed), torch.no_grad():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for p in module.parameters(recurse=False):
            p.normal_(0.0, 0.02)


def _cascade(model: nn.Module, layers: LayerSpec | None) -> list[tuple[str, nn.Module]]:
    if layers is None:
        found = [
            (n, m)
            for n, m in model.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))
        ]
    else:
        found = list(resolve_modules(model, layers).items())
    if not found:
        raise OptionError(
            "no layer with parameters to randomise: the model has no parameters, or layers= "
            "selects none. Give layers= modules that have weights."
        )
    return found[::-1]  # output side first


def _methods(methods: Sequence[str] | Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(methods, Mapping):
        return {str(k): dict(v or {}) for k, v in methods.items()}
    if isinstance(methods, str) or not methods:
        raise OptionError(
            f"methods must be a non-empty list of method names or a dict name -> options, got "
            f"{methods!r}."
        )
    return {m: {} for m in methods}


def sanity_check(
    model: nn.Module,
    inputs: Any,
    *,
    target: Any,
    methods: Sequence[str] | Mapping[str, Mapping[str, Any]] = (
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
    ),
    layers: LayerSpec | None = None,
    threshold: float = 0.5,
    seed: int = 0,
) -> SanityReport:
    """Cascading randomisation: how much each method's maps change as layers go random.

    ``methods``: names for :func:`hlviz.attribute`, or a dict ``name -> options`` (e.g.
    ``{"grad_cam": {"layer": "features.4"}}``). ``layers``: the layers to randomise (any
    layer spec; default every module with parameters of its own), re-initialised from the
    last to the first with ``reset_parameters()`` (else ``N(0, 0.02)``) under ``seed``;
    the global random state is left as it was. Maps are flattened per example, ``(N, -1)``.
    """
    import pandas as pd

    from .core import attribute

    check_module(model)
    model = unwrap(model)
    chosen = _methods(methods)
    if not 0 <= threshold <= 1:
        raise OptionError(f"threshold must lie in [0, 1] (a rank correlation), got {threshold!r}.")
    cascade = _cascade(model, layers)
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}

    def maps(quiet: bool = False) -> dict[str, np.ndarray]:
        out = {}
        for name, opts in chosen.items():
            method = opts.get("method", name)
            kwargs = {k: v for k, v in opts.items() if k != "method"}
            with warnings.catch_warnings():
                if quiet:  # a random model's path integrals are not what is being checked
                    warnings.simplefilter("ignore", ConvergenceWarning)
                a = attribute(model, inputs, target=target, method=method, **kwargs)
            out[name] = a.values.reshape(len(a.values), -1).double().numpy()
        return out

    rows = []
    live = model.state_dict(keep_vars=True)
    try:
        with seeded(seed):  # the caller's generators are restored afterwards
            reference = maps()
            for name in reference:
                rows.append((name, 0, "", 1.0, 1.0, 1.0))
            for step, (layer, module) in enumerate(cascade, start=1):
                _randomise(module, seed + step)
                for name, new in maps(quiet=True).items():
                    ref = reference[name]
                    rows.append(
                        (
                            name,
                            step,
                            layer,
                            _spearman_rows(ref, new),
                            _spearman_rows(np.abs(ref), np.abs(new)),
                            _top_overlap(ref, new),
                        )
                    )
    finally:
        with torch.no_grad():
            for key, value in saved.items():
                live[key].copy_(value)
    table = pd.DataFrame(
        rows, columns=["method", "step", "randomised", "spearman", "spearman_abs", "top10_overlap"]
    )
    last = table[table.step == len(cascade)]
    flagged = tuple(last.loc[last.spearman_abs >= threshold, "method"])
    return SanityReport(table, flagged, threshold)
