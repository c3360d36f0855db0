"""Recurrent networks over time: every layer's per-step states and gates, gate saturation,
units correlated with labels, and units shown over text.

>>> lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
>>> states = rnn_states(lstm, torch.randn(4, 7, 3))
>>> tuple(states["h"].shape), states.gates        # (layers, N, T, H)
((2, 4, 7, 5), ('i', 'f', 'g', 'o'))
>>> gate_saturation(states).summary().shape      # one row per layer and sigmoid gate
(6, 5)

``nn.LSTM`` and ``nn.GRU`` return only the top layer's outputs and the final states; the other
layers' steps and the gates never leave the cuDNN/ATen kernel. :func:`rnn_states` therefore
records the input the recurrent module received (with :func:`hlviz.record`, so no hook is
left behind) and replays its weights one step at a time with PyTorch's own formulas, then
checks that the replayed top layer equals what the module returned. A
:class:`~hlviz.models.rnn.CharLSTM` is run through its own unrolled path instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import LayerNotFoundError, OptionError, OptionTypeError, ShapeMismatchError
from ..hooks.layers import resolve, unwrap
from ..models.rnn import CharLSTM, RNNStates, lstm_layer_steps

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
    "replay_dtype",
    "replay_tolerance",
    "rnn_states",
    "state_features",
    "unit_heatmap_html",
    "unit_label_correlation",
]

_SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}


def gru_layer_steps(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    h: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Run one GRU layer step by step, as ``nn.GRU`` computes it: ``h``, ``r``, ``z``, ``n``.

    >>> gru = nn.GRU(3, 4, batch_first=True)
    >>> x = torch.randn(2, 6, 3)
    >>> w = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    >>> torch.allclose(gru_layer_steps(x, w, torch.zeros(2, 4))["h"], gru(x)[0], atol=1e-6)
    True

    ``x`` ``(N, T, D)``, ``h`` ``(N, H)``; each result is ``(N, T, H)``:
    ``r = sigmoid(.)``, ``z = sigmoid(.)``, ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``,
    ``h' = (1 - z) n + z h``.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    xproj = x @ w_ih.T
    if b_ih is not None:
        xproj = xproj + b_ih
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("h", "r", "z", "n")}
    for t in range(x.shape[1]):
        hproj = h @ w_hh.T
        if b_hh is not None:
            hproj = hproj + b_hh
        xr, xz, xn = xproj[:, t].chunk(3, dim=-1)
        hr, hz, hn = hproj.chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        for key, value in zip(("h", "r", "z", "n"), (h, r, z, n), strict=True):
            out[key].append(value)
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def _find_rnn(model: nn.Module, layer: Any) -> tuple[str, nn.Module]:
    if isinstance(model, (nn.LSTM, nn.GRU)) and layer is None:
        return "", model
    if layer is not None:
        found = resolve(model, layer)
        if len(found) != 1:
            raise OptionError(
                f"layer={layer!r} matches {len(found)} modules ({', '.join(found)[:200]}); "
                "name one nn.LSTM or nn.GRU."
            )
        name = found[0]
        module = unwrap(model).get_submodule(name)
        if not isinstance(module, (nn.LSTM, nn.GRU)):
            raise OptionError(
                f"layer {name!r} is a {type(module).__name__}, not an nn.LSTM or nn.GRU; "
                "rnn_states replays recurrent layers only."
            )
        return name, module
    found = [(n, m) for n, m in unwrap(model).named_modules() if isinstance(m, (nn.LSTM, nn.GRU))]
    if len(found) != 1:
        raise LayerNotFoundError(
            f"{type(model).__name__} has {len(found)} nn.LSTM/nn.GRU modules "
            f"({', '.join(n for n, _ in found) or 'none'}); pass layer= the name of one."
        )
    return found[0]


def _weight(rnn: nn.Module) -> torch.Tensor:
    return rnn.weight_ih_l0


def replay_dtype(rnn: nn.Module) -> torch.dtype:
    """The dtype :func:`rnn_states` replays ``rnn`` in: its weights' dtype, raised to at
    least float32 (a float16/bfloat16 module is replayed from its own weights in float32,
    so the states are exact for those weights and can go to NumPy).

    >>> replay_dtype(nn.GRU(2, 3).half()), replay_dtype(nn.GRU(2, 3).double())
    (torch.float32, torch.float64)
    """
    return torch.promote_types(_weight(rnn).dtype, torch.float32)


def replay_tolerance(rnn: nn.Module) -> float:
    """How far (relative to the output's largest value, at least 1) the module's own output
    may be from the replay: ``1e-4`` for float32/float64 modules, four rounding steps of the
    module's dtype for float16 (~0.004) and bfloat16 (~0.03), whose kernels round every step.

    >>> replay_tolerance(nn.LSTM(2, 3)), replay_tolerance(nn.LSTM(2, 3).bfloat16())
    (0.0001, 0.03125)
    """
    return max(1e-4, 4 * torch.finfo(_weight(rnn).dtype).eps)


def _check_dtype(rnn: nn.Module, x: torch.Tensor) -> None:
    """Refuse an input the module would refuse (its dtype differs from the weights')."""
    want = _weight(rnn).dtype
    if x.dtype != want:
        raise OptionTypeError(
            f"the input to {type(rnn).__name__} is {x.dtype} but its weights are {want} (the "
            f"module itself would refuse it): give a {want} input, e.g. x.to({want})"
            + (
                f", or convert the model with model.to({x.dtype})."
                if x.is_floating_point()
                else "."
            )
        )


def _check_finite(
    values: torch.Tensor,
    what: str,
    rnn: nn.Module,
    rows: int = 0,
    fix: str = "Drop or fix those sequences first (~torch.isfinite(x) shows where).",
) -> None:
    """Refuse NaN/inf, saying in how many of the rows (sequences, axis ``rows``) they are."""
    bad = ~torch.isfinite(values)
    if not bad.any():
        return
    axis = rows if rows else (0 if rnn.batch_first else 1)
    per_row = bad.movedim(axis, 0).reshape(values.shape[axis], -1).any(1)
    which = per_row.nonzero().flatten().tolist()
    shown = ", ".join(map(str, which[:10])) + (", ..." if len(which) > 10 else "")
    raise OptionError(
        f"{what} of {type(rnn).__name__} holds NaN or inf in {len(which)} of "
        f"{values.shape[axis]} sequences (sequences {shown}; {int(bad.sum())} values): the "
        "states would be NaN from there on and cannot be checked against the module. " + fix
    )


def _replay(rnn: nn.Module, x: torch.Tensor, hx: Any) -> RNNStates:
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise OptionError(
            f"{type(rnn).__name__} with bidirectional={rnn.bidirectional} and proj_size="
            f"{getattr(rnn, 'proj_size', 0)} is not supported: rnn_states replays "
            "unidirectional layers without projections."
        )
    _check_dtype(rnn, x)
    _check_finite(x, "the input", rnn)
    if not rnn.batch_first:
        x = x.transpose(0, 1)
    kind = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
    shape = (rnn.num_layers, x.shape[0], rnn.hidden_size)
    work = replay_dtype(rnn)
    x = x.to(work)
    if hx is None:
        zeros = x.new_zeros(shape)
        hx = (zeros, zeros) if kind == "lstm" else zeros
    parts = tuple(hx) if kind == "lstm" and isinstance(hx, (tuple, list)) else (hx,)
    if len(parts) != (2 if kind == "lstm" else 1) or any(
        not isinstance(p, torch.Tensor) or tuple(p.shape) != shape for p in parts
    ):
        raise ShapeMismatchError(
            f"hx must be {'a pair (h_0, c_0) of tensors' if kind == 'lstm' else 'a tensor'} of "
            f"shape {shape} (layers, batch, hidden), got {hx!r:.120}."
        )
    for name, part in zip(("h_0", "c_0"), parts):
        if not part.is_floating_point():
            raise OptionTypeError(
                f"hx's {name} is {part.dtype}, not a floating-point tensor: give it in the "
                f"module's dtype, e.g. {name}.to({_weight(rnn).dtype})."
            )
        _check_finite(part, f"hx's {name}", rnn, 1, f"Give a finite {name} (zeros: hx=None).")
    parts = tuple(p.to(work) for p in parts)
    hx = parts if kind == "lstm" else parts[0]
    collected: dict[str, list[torch.Tensor]] = {}
    for layer in range(rnn.num_layers):
        weights = tuple(
            None if w is None else w.to(work)
            for w in (
                getattr(rnn, f"{k}_l{layer}", None)
                for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
        )
        if kind == "lstm":
            out = lstm_layer_steps(x, weights, hx[0][layer], hx[1][layer])
        else:
            out = gru_layer_steps(x, weights, hx[layer])
        for key, value in out.items():
            collected.setdefault(key, []).append(value)
        x = out["h"]
    return RNNStates({k: torch.stack(v).detach().cpu() for k, v in collected.items()}, kind)


def rnn_states(model: nn.Module, inputs: Any, layer: Any = None, *, hx: Any = None) -> RNNStates:
    """Every layer's hidden state (and cell state and gates) at every step: :class:`RNNStates`.

    >>> model = hlviz.models.CharLSTM(vocab_size=10, hidden_size=6)
    >>> rnn_states(model, torch.randint(0, 10, (2, 9)))["c"].shape   # (layers, N, T, H)
    torch.Size([2, 2, 9, 6])

    ``model``: an ``nn.LSTM``/``nn.GRU`` (``inputs`` is then its input), a
    :class:`~hlviz.models.rnn.CharLSTM` (run through its unrolled path), or any model holding
    one ``nn.LSTM``/``nn.GRU`` (or name it with ``layer=``): the model is run on ``inputs``
    once, the recurrent module's input is recorded and its weights are replayed step by step
    (from ``hx``, default zeros: the initial state the module was given is not seen, and a
    replay that does not reproduce the module's own output raises). Values are detached CPU
    tensors ``(L, N, T, H)``. No gradients are kept.
    """
    from ..hooks.checks import once
    from ..hooks.recording import record
    from ..runtime import run_model

    with torch.no_grad():
        if isinstance(unwrap(model), CharLSTM) and layer is None:
            return unwrap(model).run(inputs, hx, unroll=True).states.detached()
        name, rnn = _find_rnn(model, layer)
        if name == "" and rnn is unwrap(model):
            x = inputs
            if not isinstance(x, torch.Tensor) or x.dim() != 3:
                raise ShapeMismatchError(
                    f"an {type(rnn).__name__}'s input must be a (N, T, D) or (T, N, D) tensor, "
                    f"got {type(x).__name__}{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}."
                )
            states = _replay(rnn, x, hx)  # checks hx before the module sees it
            expected = rnn(x, hx)[0]
        else:
            with record(model, name, inputs=True, to=None) as rec:
                run_model(model, inputs)
            x = once(name, rec.inputs[name], "rnn_states replays one call of the module")
            expected = rec[name]
            states = _replay(rnn, x, hx)
        top = states["h"][-1] if rnn.batch_first else states["h"][-1].transpose(0, 1)
        expected = expected.detach().cpu().to(top.dtype)
        if not torch.isfinite(expected).all():
            raise OptionError(
                f"{type(rnn).__name__} {name or ''} returned NaN or inf from finite inputs "
                f"(its weights are {_weight(rnn).dtype}; a float16 module overflows past "
                "65504): its states cannot be checked. Run the model in float32 "
                "(model.float()) and pass float32 inputs."
            )
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        atol = replay_tolerance(rnn) * max(scale, 1.0)
        if tuple(top.shape) != tuple(expected.shape) or not torch.allclose(
            top, expected, atol=atol
        ):
            raise OptionError(
                f"replaying {type(rnn).__name__} {name or ''} does not reproduce its output: it "
                "was probably called with an initial state (pass the same hx=) or a "
                "PackedSequence (pass padded sequences of one length)."
            )
        return states


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
