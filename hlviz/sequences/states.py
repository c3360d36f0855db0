"""Recurrent networks over time: gate saturation, units correlated with labels, and units
shown over text, from the per-step states :func:`~hlviz.sequences.replay.rnn_states` replays.

>>> lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
>>> states = rnn_states(lstm, torch.randn(4, 7, 3))
>>> gate_saturation(states).summary().shape      # one row per layer and sigmoid gate
(6, 5)

``rnn_states`` and ``gru_layer_steps`` live in :mod:`hlviz.sequences.replay` and are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OptionError, ShapeMismatchError
from ..models.rnn import RNNStates
from .replay import gru_layer_steps, rnn_states

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..plotting.html import HTML

__all__ = [
    "GateSaturation",
    "UnitCorrelation",
    "gate_saturation",
    "gru_layer_steps",
    "rnn_states",
    "state_features",
    "unit_heatmap_html",
    "unit_label_correlation",
]

_SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}


def state_features(states: RNNStates, names: Sequence[str] = ("h", "c")) -> dict[str, np.ndarray]:
    """``{"h.0": (N * T, H), "c.0": ..., "h.1": ...}`` float32 arrays for probes and correlations.

    >>> lstm = nn.LSTM(2, 3, num_layers=2, batch_first=True)
    >>> sorted(state_features(rnn_states(lstm, torch.randn(1, 4, 2))))
    ['c.0', 'c.1', 'h.0', 'h.1']
    """
    return {
        f"{name}.{layer}": states.flat(name, layer)
        for layer in range(states.num_layers)
        for name in names
    }


@dataclass(frozen=True)
class GateSaturation:
    """Per unit, the fraction of steps its gate is left- (``< low``) or right-saturated (``> high``).

    ``table``: a DataFrame with columns ``layer, gate, unit, left, right``; :meth:`summary`
    averages over units; :meth:`plot` draws one panel per gate, a point per unit (left on
    the x axis, right on the y axis, colour by layer), as in Karpathy, Johnson & Fei-Fei (2015).
    """

    table: pd.DataFrame
    low: float
    high: float

    def summary(self) -> pd.DataFrame:
        """Mean left/right fractions per layer and gate, and the share of units right-saturated
        more than half the time (``often_right``)."""
        t = self.table.assign(often_right=self.table["right"] > 0.5)
        return (
            t.groupby(["layer", "gate"], sort=False)[["left", "right", "often_right"]]
            .mean()
            .reset_index()
        )

    def to_frame(self) -> pd.DataFrame:
        """The per-unit table: ``layer, gate, unit, left, right``."""
        return self.table.copy()

    def plot(self, *, fig: Figure | None = None) -> Figure:
        """Scatter of left vs right saturation per unit, one panel per gate (seaborn, colour
        by layer), drawn into ``fig`` (an empty figure; default a new one): a multi-panel
        figure, so it returns the ``Figure``."""
        import seaborn as sns

        from ..plotting.figures import subplot_grid

        gates = list(dict.fromkeys(self.table["gate"]))
        fig, axes = subplot_grid(len(gates), len(gates), fig, (3.2, 3.2))
        for i, (ax, gate) in enumerate(zip(axes, gates, strict=True)):
            part = self.table[self.table["gate"] == gate].assign(
                layer=lambda t: "layer " + t["layer"].astype(str)
            )
            sns.scatterplot(
                part, x="left", y="right", hue="layer", s=10, alpha=0.6, ax=ax, legend=i == 0
            )
            ax.plot([0, 1], [1, 0], color="grey", lw=0.8)
            ax.set(xlim=(0, 1), ylim=(0, 1), title=f"gate {gate}")
            ax.set_xlabel(f"fraction < {self.low}")
            ax.set_ylabel(f"fraction > {self.high}" if i == 0 else "")
        if axes[0].get_legend() is not None:
            axes[0].legend(fontsize=8)
        fig.tight_layout()
        return fig


def gate_saturation(
    states: RNNStates, *, low: float = 0.1, high: float = 0.9, gates: Sequence[str] | None = None
) -> GateSaturation:
    """How often each unit's sigmoid gates sit near 0 or near 1: a :class:`GateSaturation`.

    >>> lstm = nn.LSTM(2, 3, batch_first=True)
    >>> table = gate_saturation(rnn_states(lstm, torch.randn(2, 5, 2))).table
    >>> list(table.columns), len(table)             # 1 layer x 3 gates x 3 units
    (['layer', 'gate', 'unit', 'left', 'right'], 9)

    ``gates``: default the sigmoid gates (``i f o`` of an LSTM, ``r z`` of a GRU); fractions
    are over every sequence and step.
    """
    import pandas as pd

    if not 0 <= low < high <= 1:
        raise OptionError(f"need 0 <= low < high <= 1, got low={low!r} and high={high!r}.")
    gates = _SIGMOID_GATES[states.kind] if gates is None else tuple(gates)
    rows = []
    for gate in gates:
        values = states[gate]
        L, H = values.shape[0], values.shape[-1]
        flat = values.reshape(L, -1, H)
        left = (flat < low).float().mean(1).numpy()
        right = (flat > high).float().mean(1).numpy()
        for layer in range(L):
            rows.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "gate": gate,
                        "unit": np.arange(H),
                        "left": left[layer],
                        "right": right[layer],
                    }
                )
            )
    table = pd.concat(rows, ignore_index=True).sort_values(["layer", "gate"], kind="stable")
    table = table.reset_index(drop=True)
    return GateSaturation(table=table, low=low, high=high)


@dataclass(frozen=True)
class UnitCorrelation:
    """Pearson correlation of every unit of every layer with every label.

    ``table``: DataFrame ``layer, unit, label, r`` (``r`` is 0 where a unit or a label is
    constant). :meth:`top` lists the units most correlated with one label; :meth:`summary`
    gives the best unit per label and layer; :meth:`plot` the largest ``|r|`` per layer and label.
    """

    table: pd.DataFrame

    def top(self, label: str, k: int = 5, layer: str | None = None) -> pd.DataFrame:
        """The ``k`` units with the largest ``|r|`` for ``label`` (in ``layer``, or anywhere)."""
        labels = list(dict.fromkeys(self.table["label"]))
        if label not in labels:
            raise OptionError(f"no label {label!r}; choose from {', '.join(map(repr, labels))}.")
        part = self.table[self.table["label"] == label]
        if layer is not None:
            layers = list(dict.fromkeys(self.table["layer"]))
            if layer not in layers:
                raise OptionError(
                    f"no layer {layer!r}; choose from {', '.join(map(repr, layers))}."
                )
            part = part[part["layer"] == layer]
        order = part["r"].abs().sort_values(ascending=False, kind="stable").index
        return part.loc[order[:k]].reset_index(drop=True)

    def best(self, label: str, layer: str | None = None) -> tuple[str, int, float]:
        """``(layer, unit, r)`` of the unit with the largest ``|r|`` for ``label``."""
        row = self.top(label, 1, layer).iloc[0]
        return str(row["layer"]), int(row["unit"]), float(row["r"])

    def summary(self) -> pd.DataFrame:
        """The best unit (largest ``|r|``) per label and layer: ``label, layer, unit, r``."""
        t = self.table.assign(abs_r=self.table["r"].abs())
        idx = t.groupby(["label", "layer"], sort=False)["abs_r"].idxmax()
        return t.loc[idx, ["label", "layer", "unit", "r"]].reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """The long table: ``layer, unit, label, r``."""
        return self.table.copy()

    def plot(self, *, ax: Axes | None = None) -> Axes:
        """Heat map (seaborn) of the largest ``|r|`` per layer (rows) and label (columns);
        returns the Axes."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        grid = self.table.assign(abs_r=self.table["r"].abs()).pivot_table(
            index="layer", columns="label", values="abs_r", aggfunc="max", sort=False
        )
        if ax is None:
            _, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 2, 0.5 * grid.shape[0] + 1.5))
        sns.heatmap(
            grid,
            ax=ax,
            vmin=0,
            vmax=1,
            cmap="viridis",
            annot=True,
            fmt=".2f",
            cbar_kws={"label": "max |r| over units"},
        )
        ax.set_xticks(ax.get_xticks(), grid.columns, rotation=30, ha="right")
        ax.set_yticks(ax.get_yticks(), grid.index, rotation=0)
        ax.set(xlabel="", ylabel="")
        return ax


def unit_label_correlation(acts: Any, labels: Mapping[str, Any]) -> UnitCorrelation:
    """Correlate every unit with every label: a :class:`UnitCorrelation`.

    >>> acts = {"h": np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])}
    >>> corr = unit_label_correlation(acts, {"depth": [0, 1, 2]})
    >>> layer, unit, r = corr.best("depth")
    >>> layer, unit, round(r, 6)
    ('h', 0, 1.0)

    ``acts``: layer name -> ``(n, H)`` activations (arrays or tensors), or an
    :class:`RNNStates` (its ``h`` and ``c`` per layer, see :func:`state_features`);
    ``labels``: name -> ``(n,)`` numbers, one per row of every layer.
    """
    import pandas as pd

    if isinstance(acts, RNNStates):
        acts = state_features(acts)
    if not isinstance(acts, Mapping) or not acts:
        raise OptionError(
            f"acts must be a non-empty mapping layer -> (n, H) activations or RNNStates, "
            f"got {type(acts).__name__}."
        )
    ys = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in labels.items()}
    if not ys:
        raise OptionError("labels is empty: give name -> (n,) values, e.g. {'depth': depth}.")
    frames = []
    for layer, values in acts.items():
        a = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, np.float64)
        if a.ndim != 2:
            raise ShapeMismatchError(
                f"layer {layer!r} has shape {a.shape}; give (n, H) rows (flatten positions)."
            )
        a = a - a.mean(0)
        a_norm = np.sqrt((a**2).sum(0))
        for name, y in ys.items():
            if len(y) != len(a):
                raise ShapeMismatchError(
                    f"label {name!r} has {len(y)} values but layer {layer!r} has {len(a)} "
                    "rows: give one label per row."
                )
            yc = y - y.mean()
            denom = a_norm * np.sqrt((yc**2).sum())
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.where(denom > 0, (a * yc[:, None]).sum(0) / denom, 0.0)
            frames.append(
                pd.DataFrame({"layer": layer, "unit": np.arange(a.shape[1]), "label": name, "r": r})
            )
    return UnitCorrelation(pd.concat(frames, ignore_index=True))


def unit_heatmap_html(
    text: str,
    values: Any,
    *,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    line_numbers: bool = False,
) -> HTML:
    """One unit over text as escaped HTML: each character coloured by the unit's value.

    >>> page = unit_heatmap_html("a<b\\nc", [0.5, -1.0, 0.0, 0.2, 1.0], title="unit 7")
    >>> page.count('class="hlviz-row"'), "&lt;" in page and "<b" not in page
    (2, True)

    ``text`` of ``T`` characters, ``values`` ``(T,)`` (the unit's state after each
    character); a row per line of text (the newline is shown as a symbol at the end of
    its line). The scale is ``vmin..vmax`` (default ``+/- max |value|``), white at 0.
    Returns :class:`hlviz.plotting.html.HTML` (Jupyter displays it; ``IPython.display.HTML`` too).
    """
    from ..plotting.html import token_heatmap_html

    if not isinstance(text, str):
        raise OptionError(f"text must be a str, got {type(text).__name__}.")
    v = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, float)
    v = v.reshape(-1)
    if len(v) != len(text):
        raise ShapeMismatchError(
            f"{len(text)} characters but {len(v)} values: give one value per character."
        )
    rows, cuts, start = [], [], 0
    for line in text.split("\n"):
        end = start + len(line) + (1 if start + len(line) < len(text) else 0)
        rows.append(list(text[start:end]))
        cuts.append(v[start:end])
        start = end
    if rows and not rows[-1]:
        rows, cuts = rows[:-1], cuts[:-1]
    labels = [f"{i + 1:>3}" for i in range(len(rows))] if line_numbers else None
    return token_heatmap_html(rows, cuts, vmin=vmin, vmax=vmax, labels=labels, title=title)
