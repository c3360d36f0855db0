"""Interactive views: core ipywidgets controls wired to pure render functions.

>>> from hlviz.widgets import PlaneState, render_plane
>>> fig = render_plane(PlaneState(dataset="circles", depth=1, width=4, steps=50))
>>> [ax.get_title().split(":")[0] for ax in fig.axes]
['decision boundary', 'linear regions', 'training loss']

Each view is a pure function ``state -> matplotlib Figure`` (testable without a
browser) plus a thin class that builds the controls and redraws on change.
ipywidgets is imported only when a widget is built, so ``import hlviz`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import OptionError, OptionTypeError
from ..models.mlp import ACTIVATIONS
from ..toy.data import DATASETS, fit_mlp, linear_regions, make_toy
from .base import StaticFallback

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PlaneExplorer", "PlaneState", "render_plane"]


@dataclass(frozen=True)
class PlaneState:
    """What :func:`render_plane` draws: a toy data set and an MLP of ``depth`` hidden layers
    of ``width`` units with ``activation``, trained for ``steps`` full-batch Adam steps."""

    dataset: str = "moons"
    depth: int = 2
    width: int = 8
    activation: str = "relu"
    steps: int = 300
    seed: int = 0
    n: int = 300


def render_plane(state: PlaneState, *, fig: Figure | None = None) -> Figure:
    """Train the network ``state`` describes and draw it: the decision boundary, the
    linear regions (ReLU) or the last hidden layer (other activations), the loss curve.

    >>> fig = render_plane(PlaneState(dataset="xor", depth=2, width=4, activation="tanh",
    ...                               steps=20))
    >>> fig.axes[1].get_title()
    'last hidden layer: layers.1.act (PCA of 4-D)'

    Takes about a second on a CPU for the default sizes (training plus drawing).
    Returns the Figure (three panels; ``fig=`` draws into an empty one).
    """
    import matplotlib.pyplot as plt

    if not isinstance(state, PlaneState):
        raise OptionError(f"state must be a PlaneState, got {type(state).__name__}.")
    for name, low in (("depth", 0), ("width", 1), ("steps", 1)):
        value = getattr(state, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OptionError(f"state.{name} must be an int >= {low}, got {value!r}.")
    data = make_toy(state.dataset, n=state.n, seed=state.seed)
    fit = fit_mlp(
        data,
        [state.width] * state.depth,
        activation=state.activation,
        seed=state.seed,
        steps=state.steps,
    )
    created = fig is None
    fig = plt.figure(figsize=(10, 3.4)) if fig is None else fig
    try:
        _draw(fig, fit, data, state)
    except BaseException:
        if created:  # do not leave a half-drawn figure open in pyplot
            plt.close(fig)
        raise
    return fig


def _draw(fig: Figure, fit: Any, data: Any, state: PlaneState) -> None:
    from ..toy.plots import plot_decision, plot_layer, plot_regions

    axes = fig.subplots(1, 3)
    plot_decision(fit.model, data, ax=axes[0], resolution=120)
    axes[0].set_title(f"decision boundary: accuracy {fit.accuracy:.3f}", fontsize="small")
    if state.activation in ("relu", "leaky_relu") and state.depth > 0:
        regions = linear_regions(fit.model, data.extent(), resolution=150)
        plot_regions(regions, ax=axes[1])
        axes[1].set_title(f"linear regions: {regions.count}", fontsize="small")
    else:
        layer = f"layers.{state.depth - 1}.act" if state.depth > 0 else "head"
        plot_layer(fit.model, data, layer, ax=axes[1])
        axes[1].set_title(f"last hidden layer: {axes[1].get_title()}", fontsize="small")
    fit.plot(ax=axes[2])
    axes[2].set_title(f"training loss: {state.steps} Adam steps", fontsize="small")
    fig.suptitle(
        f"{state.dataset}, {state.depth} x {state.width} {state.activation}", fontsize="medium"
    )
    fig.tight_layout()


class PlaneExplorer(StaticFallback):
    """Sliders for depth and width, drop-downs for activation and data set; every change
    retrains the MLP and redraws (about a second).

    Example (in a notebook cell)::

        explorer = PlaneExplorer()
        explorer          # displays the controls and the figure

    ``explorer.controls`` holds the widgets by name (``depth``, ``width``,
    ``activation``, ``dataset``): set their ``.value`` to drive the view from code.
    ``explorer.output`` is the one Output widget that shows the current figure; each
    redraw replaces its content in one step (no flicker, like
    ``clear_output(wait=True)``), and an exception raised while rendering is shown in it
    (message and traceback) and kept in ``explorer.last_error``, instead of being lost in
    the kernel log. ``render`` is the pure ``PlaneState -> Figure`` function used (default
    :func:`render_plane`). Where no widget frontend runs (nbconvert, GitHub, ``HLVIZ_STATIC=1``)
    the explorer shows a static rendering: the control values and the figure as a PNG.
    """

    def __init__(
        self,
        state: PlaneState | None = None,
        *,
        render: Callable[[PlaneState], Figure] = render_plane,
        max_depth: int = 4,
        max_width: int = 32,
    ) -> None:
        import ipywidgets as widgets

        state = PlaneState() if state is None else state
        if not isinstance(state, PlaneState):
            raise OptionTypeError(
                f"state must be a PlaneState or None, got {type(state).__name__}; "
                "build one with PlaneState(dataset=..., depth=..., width=...)."
            )
        if not callable(render):
            raise OptionTypeError(
                f"render must be a function PlaneState -> Figure, got {type(render).__name__}."
            )
        for name, value, low, current in (
            ("max_depth", max_depth, 0, state.depth),
            ("max_width", max_width, 1, state.width),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < max(low, current):
                raise OptionError(
                    f"{name} must be an int >= {max(low, current)} (the state's "
                    f"{name[4:]} is {current}), got {value!r}; raise {name} or lower the state."
                )
        self.render, self.state = render, state
        common = {"continuous_update": False, "style": {"description_width": "70px"}}
        self.controls = {
            "depth": widgets.IntSlider(
                value=state.depth, min=0, max=max_depth, description="depth", **common
            ),
            "width": widgets.IntSlider(
                value=state.width, min=1, max=max_width, description="width", **common
            ),
            "activation": widgets.Dropdown(
                options=list(ACTIVATIONS),
                value=state.activation,
                description="activation",
                style=common["style"],
            ),
            "dataset": widgets.Dropdown(
                options=list(DATASETS),
                value=state.dataset,
                description="data set",
                style=common["style"],
            ),
        }
        self.output = widgets.Output()
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self.ui = widgets.VBox(
            [
                widgets.HBox(list(self.controls.values())[:2]),
                widgets.HBox(list(self.controls.values())[2:]),
                self.output,
            ]
        )
        self.redraw()

    def _changed(self, change: dict) -> None:
        self.redraw()

    def _read_controls(self) -> None:
        values = {name: control.value for name, control in self.controls.items()}
        self.state = replace(self.state, **values)

    def redraw(self) -> None:
        """Read the controls, render, and replace the output (or show the error there and
        keep it in ``last_error``)."""
        import matplotlib.pyplot as plt

        drawn: list[Figure] = []

        def draw() -> list[Figure]:
            drawn.append(self.render(self.state))
            return drawn

        try:
            if self._guard(self.output, self._read_controls):
                self._show(self.output, draw)
        finally:
            for fig in drawn:  # the PNG is kept; the figure would pile up in pyplot
                plt.close(fig)

    def _visible_outputs(self) -> list[Any]:
        return [self.output]
