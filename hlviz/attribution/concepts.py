"""Concept attributions (TCAV, Kim et al. 2018) through Captum's concept API, with the
random-concept significance test.

>>> import torch, torch.nn as nn, hlviz
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
>>> randoms = [torch.randn(20, 5) for _ in range(3)]
>>> report = hlviz.tcav(model, torch.randn(8, 5), target=1, layers="1",
...                     concepts={"shifted": torch.randn(20, 5) + 2}, random_concepts=randoms)
>>> list(report.table.columns[:4])
['concept', 'layer', 'tcav_score', 'tcav_std']

For each concept and layer, Captum learns a concept activation vector (CAV) separating
the concept's activations from those of each random set, and scores the fraction of
inputs whose ``target`` score grows along it. A score means something only when it
differs from what random sets give: the concept's scores (concept vs random set ``i``,
``i >= 1``) are compared with a t-test against random-vs-random scores (random set 0 vs
random set ``i``), as in the Captum TCAV tutorial.
"""

from __future__ import annotations

import random
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._batches import batches
from ..errors import OptionError, OptionTypeError
from ..hooks.layers import LayerSpec, check_module, resolve, unwrap
from . import forward as af
from ._rng import seeded

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["TCAVReport", "tcav"]


@dataclass(frozen=True)
class TCAVReport:
    """One row per (concept, layer): ``tcav_score`` (mean sign-count score over the random
    sets) and ``tcav_std``, ``random_score`` (mean random-vs-random score), ``p_value`` of the
    t-test between the two, and ``significant`` (``p_value < alpha``). ``scores`` holds
    Captum's raw output ``{experimental set: {layer: {"sign_count", "magnitude"}}}``."""

    table: pd.DataFrame
    alpha: float
    scores: dict

    def to_frame(self) -> pd.DataFrame:
        """The table: one row per (concept, layer)."""
        return self.table.copy()

    def summary(self) -> pd.DataFrame:
        """The table with scores rounded to 3 decimals (p-values kept as they are)."""
        rounded = ["tcav_score", "tcav_std", "random_score"]
        return self.table.assign(**{c: self.table[c].round(3) for c in rounded})

    def describe(self) -> str:
        """One line per concept and layer."""
        return "\n".join(
            f"{r.concept} @ {r.layer}: TCAV {r.tcav_score:.2f} +/- {r.tcav_std:.2f} vs random "
            f"{r.random_score:.2f} (p={r.p_value:.3g}"
            + (", significant)" if r.significant else ", not significant)")
            for r in self.table.itertuples()
        )

    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Bars of TCAV scores per layer and concept; random scores as ticks; '*' = significant.
        Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 1.2 * len(self.table)), 3))
        labels = [f"{r.concept}\n{r.layer}" for r in self.table.itertuples()]
        x = np.arange(len(labels))
        ax.bar(x, self.table.tcav_score, yerr=self.table.tcav_std, color="tab:blue", alpha=0.8)
        ax.scatter(x, self.table.random_score, marker="_", s=400, color="k", label="random")
        for i, r in enumerate(self.table.itertuples()):
            if r.significant:
                ax.text(i, min(1.0, r.tcav_score + r.tcav_std) + 0.02, "*", ha="center")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("TCAV score")
        ax.legend(fontsize=8)
        return ax


def _batches(value: Any, name: str) -> list[torch.Tensor]:
    """The examples of concept ``name`` as batches (hlviz's one batching rule), at least 2."""
    if isinstance(value, torch.Tensor) and len(value) < 2:
        raise OptionError(f"concept {name!r} has {len(value)} example(s); give at least 2.")
    try:
        return list(batches(value, 64))
    except OptionTypeError as error:
        raise OptionTypeError(f"concept {name!r}: {error}") from None


def _p_value(got: list[float], null: list[float]) -> float:
    """Two-sided t-test p-value; two constant samples give 1 when equal, else 0."""
    from scipy.stats import ttest_ind

    if np.ptp(got) == 0 and np.ptp(null) == 0:
        return 1.0 if got[0] == null[0] else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal samples: precision note
        return float(ttest_ind(got, null).pvalue)


def tcav(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    target: Any,
    layers: LayerSpec,
    concepts: Mapping[str, Any],
    random_concepts: Sequence[Any],
    output: Any = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> TCAVReport:
    """TCAV scores of ``concepts`` for ``target`` at ``layers``, with a significance test.

    ``inputs`` ``(N, ...)``: the examples of the class whose sensitivity is measured.
    ``concepts``: ``name -> tensor of examples`` ``(K, ...)`` (or a list of batches) shaped
    like the inputs. ``random_concepts``: at least 3 sets of random examples (set 0 is the
    reference of the random-vs-random null scores). ``layers``: any layer spec. ``output``
    picks the scored tensor (as in :func:`hlviz.attribute`). Python's, NumPy's and torch's
    random states are seeded with ``seed`` for the call and restored afterwards. CAVs are
    written to a temporary directory that is removed on return.
    """
    import pandas as pd
    from captum.concept import TCAV, Concept

    check_module(model)
    model = unwrap(model)
    names = resolve(model, layers)
    if not isinstance(concepts, Mapping) or not concepts:
        raise OptionTypeError("concepts must be a non-empty dict name -> tensor of examples.")
    if isinstance(random_concepts, (torch.Tensor, str)) or len(random_concepts) < 3:
        raise OptionError(
            f"random_concepts must be a list of at least 3 tensors of random examples (one "
            f"reference set and two or more to compare with), got {type(random_concepts).__name__}"
            + (f" of {len(random_concepts)}" if isinstance(random_concepts, Sequence) else "")
            + "."
        )
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must lie in (0, 1), got {alpha!r}.")
    prep = af.prepare(model, inputs, output=output)
    probed = af.probe(prep.forward, prep.main, prep.extra)
    target = af.check_target(torch.empty(probed.output_shape), target, len(prep.main), model)
    device = prep.main.device
    made = [
        Concept(i, name, [b.to(device) for b in _batches(v, name)])
        for i, (name, v) in enumerate(concepts.items())
    ]
    rand = [
        Concept(len(made) + i, f"random_{i}", [b.to(device) for b in _batches(v, f"random_{i}")])
        for i, v in enumerate(random_concepts)
    ]
    sets = [[c, r] for c in made for r in rand[1:]] + [[rand[0], r] for r in rand[1:]]
    state = (random.getstate(), np.random.get_state())
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            seeded(seed),  # torch's generators (CPU and every GPU) restored on exit
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message="Using default classifier")
            warnings.filterwarnings("ignore", message="Creating a tensor from a list of numpy")
            random.seed(seed)
            np.random.seed(seed)
            explainer = TCAV(prep.forward, [f"model.{n}" for n in names], save_path=tmp)
            with af.rnn_safe(prep.forward):
                scores = explainer.interpret(
                    prep.main, sets, target=target, additional_forward_args=prep.extra_args
                )
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    rows = []
    null_keys = [f"{rand[0].id}-{r.id}" for r in rand[1:]]
    for c in made:
        keys = [f"{c.id}-{r.id}" for r in rand[1:]]
        for n in names:
            got = [float(scores[k][f"model.{n}"]["sign_count"][0]) for k in keys]
            null = [float(scores[k][f"model.{n}"]["sign_count"][0]) for k in null_keys]
            p = _p_value(got, null)
            rows.append(
                (
                    c.name,
                    n,
                    float(np.mean(got)),
                    float(np.std(got)),
                    float(np.mean(null)),
                    p,
                    p < alpha,
                )
            )
    table = pd.DataFrame(
        rows,
        columns=[
            "concept",
            "layer",
            "tcav_score",
            "tcav_std",
            "random_score",
            "p_value",
            "significant",
        ],
    )
    return TCAVReport(table, alpha, {k: dict(v) for k, v in scores.items()})
