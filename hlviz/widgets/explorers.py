"""Widgets over finished results: probe reports, CKA tables, attributions.

>>> import pandas as pd
>>> from hlviz.widgets.explorers import CKAExplorer
>>> table = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
>>> explorer = CKAExplorer(table)
>>> explorer.controls["column"].value = "b"
>>> explorer.figure.axes[0].get_title()
'CKA(a, b) = 0.300'

Each is a pure function of a small frozen state (:func:`render_probe`,
:func:`probe_table_html`, :func:`render_cka_view`) plus a thin class that builds core
ipywidgets controls and redraws into one reused figure; errors while drawing are shown
in the widget, and ``_repr_mimebundle_`` carries a static rendering too
(:class:`~hlviz.widgets.base.StaticFallback`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import OptionError, OptionTypeError
from ..hooks.layers import check_module, unwrap
from .base import StaticFallback
from .data import InputSet, resolve_decode
from .inspector import PREDICTED, AttributionSource, plain_target
from .views import HIGHLIGHT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..plotting.html import HTML
    from ..probes.layers import ProbeReport

__all__ = [
    "AttributionExplorer",
    "CKAExplorer",
    "CKAState",
    "ProbeExplorer",
    "ProbeState",
    "probe_table_html",
    "render_cka_view",
    "render_probe",
]

CONTROLS = ("majority", "shuffled", "control_task", "baseline")
METRICS = ("score", "selectivity", *CONTROLS)


def _named(
    value: Any, kind: type | tuple, what: str, name: str, key: str | None = None
) -> dict[str, Any]:
    items = dict(value) if isinstance(value, Mapping) else {key or name: value}
    if not items or not all(isinstance(v, kind) for v in items.values()):
        found = sorted({type(v).__name__ for v in items.values()}) or ["nothing"]
        raise OptionTypeError(
            f"{what} must be a {name} or a non-empty dict name -> {name}, got "
            f"{type(value).__name__} holding {', '.join(found)}."
        )
    return {str(k): v for k, v in items.items()}


def _present(table: Any, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in table and table[c].notna().any()]


@dataclass(frozen=True)
class ProbeState:
    """What :func:`render_probe` draws: a ``metric`` column by layer, ``controls`` overlaid,
    ``layer`` highlighted."""

    metric: str = "score"
    controls: tuple[str, ...] = ()
    layer: str | None = None


def _check_probe(report: ProbeReport, state: ProbeState) -> Any:
    from ..probes.layers import ProbeReport

    if not isinstance(report, ProbeReport):
        raise OptionTypeError(f"report must be a ProbeReport, got {type(report).__name__}.")
    table = report.table
    metrics = _present(table, METRICS)
    if state.metric not in metrics:
        raise OptionError(
            f"metric {state.metric!r} is not in this report; choose one of {', '.join(metrics)}."
        )
    for c in state.controls:
        if c not in _present(table, CONTROLS):
            raise OptionError(
                f"control {c!r} is not in this report; it has {_present(table, CONTROLS)}."
            )
    if state.layer is not None and state.layer not in set(table["layer"].astype(str)):
        raise OptionError(
            f"layer {state.layer!r} is not in this report; its layers are "
            f"{list(table['layer'].astype(str))[:8]}."
        )
    return table


def render_probe(report: ProbeReport, state: ProbeState, *, fig: Figure | None = None) -> Figure:
    """The metric by layer (a band of +-sd for ``score``), dashed controls, the layer marked.

    Example::

        fig = render_probe(report, ProbeState("selectivity", layer="blocks.2"))
    """
    import matplotlib.pyplot as plt
    import numpy as np

    table = _check_probe(report, state)
    size = (max(5.0, 0.8 * len(table) + 3.0), 3.3)
    if fig is None:
        fig = plt.figure(figsize=size)
    else:
        fig.clear()
        fig.set_size_inches(*size)
    ax = fig.subplots()
    x = np.arange(len(table))
    y = table[state.metric].to_numpy(dtype=float)
    ax.plot(x, y, marker="o", color="C0", label=state.metric)
    if state.metric == "score" and "score_sd" in table:
        sd = table["score_sd"].to_numpy(dtype=float)
        ax.fill_between(x, y - sd, y + sd, color="C0", alpha=0.2)
    for i, c in enumerate(state.controls):
        ax.plot(x, table[c].to_numpy(dtype=float), ls="--", marker=".", color=f"C{i + 1}", label=c)
    layers = list(table["layer"].astype(str))
    title = f"{state.metric} by layer ({report.task})"
    if state.layer is not None:
        i = layers.index(state.layer)
        ax.axvline(i, color=HIGHLIGHT, lw=1, alpha=0.6)
        ax.plot([i], [y[i]], "o", color=HIGHLIGHT, ms=9, zorder=5)
        title = f"{state.metric} by layer; {state.layer}: {y[i]:.3f}"
    ax.set_xticks(x, layers, rotation=30, ha="right")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def probe_table_html(report: ProbeReport, state: ProbeState, digits: int = 3) -> HTML:
    """The report's rows (layer, metric, controls) as an HTML table, ``layer``'s row marked.

    Example::

        page = probe_table_html(report, ProbeState(controls=("majority",), layer="lstm"))
    """
    from ..plotting.html import HTML

    table = _check_probe(report, state)
    columns = ["layer", state.metric, *[c for c in state.controls if c != state.metric]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for _, row in table.iterrows():
        selected = str(row["layer"]) == state.layer
        style = f" style='color:{HIGHLIGHT};font-weight:bold'" if selected else ""
        cells = "".join(
            f"<td>{html.escape(str(row[c]))}</td>"
            if c == "layer"
            else f"<td>{float(row[c]):.{digits}f}</td>"
            for c in columns
        )
        rows.append(f"<tr class='{'hlviz-selected' if selected else ''}'{style}>{cells}</tr>")
    return HTML(f"<table class='hlviz-probe'><tr>{head}</tr>{''.join(rows)}</table>")


class ProbeExplorer(StaticFallback):
    """Choose a report, a metric (score, selectivity, a control) and controls to overlay;
    pick a layer to read its row.

    Example (in a notebook cell)::

        ProbeExplorer({"depth": report_depth, "in string": report_string})

    ``controls``: ``report``, ``metric``, ``controls`` (a SelectMultiple), ``layer``;
    ``output`` shows the curve and the table; ``state`` is the :class:`ProbeState` drawn.
    """

    def __init__(self, report: ProbeReport | Mapping[str, ProbeReport]) -> None:
        import ipywidgets as widgets

        from ..probes.layers import ProbeReport

        self.reports = _named(report, ProbeReport, "report", "ProbeReport")
        first = next(iter(self.reports.values()))
        style = {"description_width": "60px"}
        self.controls = {
            "report": widgets.Dropdown(
                options=list(self.reports), description="report", style=style
            ),
            "metric": widgets.Dropdown(options=["score"], description="metric", style=style),
            "controls": widgets.SelectMultiple(
                options=[], description="controls", rows=4, style=style
            ),
            "layer": widgets.Dropdown(options=["score"], description="layer", style=style),
        }
        self.output = widgets.Output()
        self.ui = widgets.VBox(
            [
                widgets.HBox(list(self.controls.values())[:2]),
                widgets.HBox(list(self.controls.values())[2:]),
                self.output,
            ]
        )
        self._syncing = False
        self._sync_options(first)
        self.controls["report"].observe(self._report_changed, names="value")
        for name in ("metric", "controls", "layer"):
            self.controls[name].observe(self._changed, names="value")
        self.redraw()

    @property
    def report(self) -> ProbeReport:
        """The report now shown."""
        return self.reports[self.controls["report"].value]

    @property
    def state(self) -> ProbeState:
        """The :class:`ProbeState` the controls describe."""
        c = self.controls
        return ProbeState(c["metric"].value, tuple(c["controls"].value), c["layer"].value)

    @property
    def figure(self) -> Figure:
        """The one reused figure."""
        return self._figure("probe")

    def _sync_options(self, report: ProbeReport) -> None:
        self._syncing = True
        try:
            c = self.controls
            metric = c["metric"].value
            c["metric"].options = _present(report.table, METRICS)
            c["metric"].value = metric if metric in c["metric"].options else "score"
            kept = tuple(x for x in c["controls"].value if x in _present(report.table, CONTROLS))
            c["controls"].options = _present(report.table, CONTROLS)
            c["controls"].value = kept
            layers = list(report.table["layer"].astype(str))
            layer = c["layer"].value
            c["layer"].options = layers
            c["layer"].value = layer if layer in layers else report.best_layer()
        finally:
            self._syncing = False

    def _report_changed(self, change: dict) -> None:
        if self._guard(self.output, lambda: self._sync_options(self.reports[change["new"]])):
            self.redraw()

    def _changed(self, change: dict) -> None:
        if not self._syncing:
            self.redraw()

    def redraw(self) -> None:
        """Draw the curve and the table for the controls' values (errors shown inside)."""
        self._show(
            self.output,
            lambda: [
                render_probe(self.report, self.state, fig=self.figure),
                probe_table_html(self.report, self.state),
            ],
        )

    def _visible_outputs(self) -> list[Any]:
        return [self.output]


@dataclass(frozen=True)
class CKAState:
    """What :func:`render_cka_view` draws: the heat map with the cell ``(row, column)`` framed."""

    row: str
    column: str


def render_cka_view(matrix: Any, state: CKAState, *, fig: Figure | None = None) -> Figure:
    """A CKA table as a heat map, cell ``(row, column)`` framed, and ``row``'s profile.

    >>> import pandas as pd
    >>> m = pd.DataFrame([[1.0, 0.25], [0.25, 1.0]], index=["x", "y"], columns=["x", "y"])
    >>> render_cka_view(m, CKAState("y", "x")).axes[0].get_title()
    'CKA(y, x) = 0.250'
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from matplotlib.patches import Rectangle

    from ..plotting.figures import plot_cka

    if not isinstance(matrix, pd.DataFrame):
        raise OptionTypeError(
            f"matrix must be a pandas DataFrame (from hlviz.cka_matrix), got {type(matrix).__name__}."
        )
    rows, cols = [str(r) for r in matrix.index], [str(c) for c in matrix.columns]
    for name, value, names in (("row", state.row, rows), ("column", state.column, cols)):
        if value not in names:
            raise OptionError(f"{name} {value!r} is not in the matrix; choose one of {names[:8]}.")
    i, j = rows.index(state.row), cols.index(state.column)
    value = float(matrix.iloc[i, j])
    side = max(3.5, 0.55 * len(cols) + 2.2)
    size = (side + max(4.0, 0.45 * len(cols) + 1.5), max(3.2, 0.5 * len(rows) + 1.6))
    if fig is None:
        fig = plt.figure(figsize=size)
    else:
        fig.clear()
        fig.set_size_inches(*size)
    ax_map, ax_row = fig.subplots(1, 2, width_ratios=[side, max(4.0, 0.45 * len(cols) + 1.5)])
    plot_cka(matrix, ax=ax_map, annot=len(rows) * len(cols) <= 144)
    ax_map.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor=HIGHLIGHT, lw=3, clip_on=False))
    ax_map.set_title(f"CKA({state.row}, {state.column}) = {value:.3f}", fontsize=10)
    profile = matrix.iloc[i].to_numpy(dtype=float)
    ax_row.plot(np.arange(len(cols)), profile, marker="o", color="0.4")
    ax_row.plot([j], [value], "o", color=HIGHLIGHT, ms=9)
    ax_row.set_ylim(0, 1.05)
    ax_row.set_xticks(np.arange(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax_row.set_ylabel("CKA")
    ax_row.set_title(f"{state.row} against every column layer", fontsize=9)
    fig.tight_layout()
    return fig


class CKAExplorer(StaticFallback):
    """Pick a matrix (a model, a pair of seeds...) and a cell by dropdowns: the heat map frames
    it and the title gives its value; the right panel shows the row layer's profile.

    Example (in a notebook cell)::

        CKAExplorer({"seed 0 vs seed 0": within, "seed 0 vs seed 1": across})

    Each matrix is a :func:`hlviz.cka_matrix` report or its ``DataFrame``.
    ``controls``: ``matrix``, ``row``, ``column``; ``output`` shows the figure.
    """

    def __init__(self, matrix: Any) -> None:
        import ipywidgets as widgets
        import pandas as pd

        from ..similarity.report import CKAReport

        given = _named(matrix, (pd.DataFrame, CKAReport), "matrix", "DataFrame or CKAReport", "CKA")
        self.matrices = {k: v.matrix if isinstance(v, CKAReport) else v for k, v in given.items()}
        for name, m in self.matrices.items():
            if m.empty:
                raise OptionError(f"matrix {name!r} is empty: give at least one layer.")
        style = {"description_width": "60px"}
        self.controls = {
            "matrix": widgets.Dropdown(
                options=list(self.matrices), description="matrix", style=style
            ),
            "row": widgets.Dropdown(options=[""], description="row", style=style),
            "column": widgets.Dropdown(options=[""], description="column", style=style),
        }
        self.output = widgets.Output()
        self.ui = widgets.VBox([widgets.HBox(list(self.controls.values())), self.output])
        self._syncing = False
        self._sync_options(next(iter(self.matrices.values())))
        self.controls["matrix"].observe(self._matrix_changed, names="value")
        for name in ("row", "column"):
            self.controls[name].observe(self._changed, names="value")
        self.redraw()

    @property
    def matrix(self) -> Any:
        """The matrix now shown."""
        return self.matrices[self.controls["matrix"].value]

    @property
    def state(self) -> CKAState:
        """The :class:`CKAState` the controls describe."""
        return CKAState(self.controls["row"].value, self.controls["column"].value)

    @property
    def figure(self) -> Figure:
        """The one reused figure."""
        return self._figure("cka")

    def _sync_options(self, matrix: Any) -> None:
        self._syncing = True
        try:
            for name, labels in (("row", matrix.index), ("column", matrix.columns)):
                labels = [str(x) for x in labels]
                old = self.controls[name].value
                self.controls[name].options = labels
                self.controls[name].value = old if old in labels else labels[0]
        finally:
            self._syncing = False

    def _matrix_changed(self, change: dict) -> None:
        if self._guard(self.output, lambda: self._sync_options(self.matrices[change["new"]])):
            self.redraw()

    def _changed(self, change: dict) -> None:
        if not self._syncing:
            self.redraw()

    def redraw(self) -> None:
        """Draw the figure for the controls' values (errors shown inside)."""
        self._show(self.output, lambda: [render_cka_view(self.matrix, self.state, fig=self.figure)])

    def _visible_outputs(self) -> list[Any]:
        return [self.output]


class AttributionExplorer(StaticFallback):
    """Choose an attribution method and an input; see the overlay (images) or the token heat
    map (token ids), with Captum's convergence delta.

    Example (in a notebook cell)::

        AttributionExplorer(cnn, test.X[:6], labels=[test.classes[y] for y in test.y[:6]])

    ``target``: the class to attribute (an int, numpy integers included, or a tuple; default:
    the predicted one, per input); ``methods``
    limits the dropdown (default: every method that fits the inputs); ``decode`` gives the
    tokens of id inputs; ``attribute_options`` go to :func:`hlviz.attribute` (e.g.
    ``output=``, ``n_steps=``). Attributions are computed on first view and cached.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        *,
        target: Any = None,
        methods: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
        decode: Any = None,
        layer: str | None = None,
        attribute_options: Mapping[str, Any] | None = None,
    ) -> None:
        import ipywidgets as widgets

        check_module(model)
        decode = resolve_decode(decode)
        self.source = AttributionSource(
            unwrap(model),
            InputSet.build(inputs, labels, decode),
            decode=decode,
            options=attribute_options,
        )
        available = self.source.methods
        methods = list(available if methods is None else methods)
        wrong = [m for m in methods if m not in available]
        if wrong or not methods:
            raise OptionError(
                f"methods {wrong or methods} do not fit these inputs; choose among "
                f"{', '.join(available)}."
            )
        if "grad_cam" in methods and layer is None:
            raise OptionError(
                "grad_cam needs layer= (a (N, C, H, W) layer such as the last conv block); "
                "pass layer=..., or leave grad_cam out of methods."
            )
        self.layer = layer
        self.target = PREDICTED if target is None else plain_target(target)
        style = {"description_width": "60px"}
        self.controls = {
            "method": widgets.Dropdown(options=methods, description="method", style=style),
            "input": widgets.Dropdown(
                options=[(lab, i) for i, lab in enumerate(self.source.inputs.labels)],
                description="input",
                style=style,
            ),
        }
        self.output = widgets.Output()
        self.ui = widgets.VBox([widgets.HBox(list(self.controls.values())), self.output])
        for control in self.controls.values():
            control.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    @property
    def figure(self) -> Figure:
        """The one reused figure (image and position views)."""
        return self._figure("attribution")

    def redraw(self) -> None:
        """Compute (or reuse) the attribution for the controls' values and draw it."""
        self._show(
            self.output,
            lambda: self.source.render(
                self.controls["method"].value,
                self.controls["input"].value,
                self.target,
                self.layer,
                self.figure,
            ),
        )

    def _visible_outputs(self) -> list[Any]:
        return [self.output]
