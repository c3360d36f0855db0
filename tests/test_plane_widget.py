"""The plane explorer: a pure render function (state -> figure) and its ipywidgets wiring,
driven from code by setting the controls' values."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import pytest

from hlviz.errors import OptionError
from hlviz.widgets import PlaneExplorer, PlaneState, render_plane

FAST = PlaneState(depth=1, width=4, steps=30, n=100)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png(explorer: PlaneExplorer) -> bytes:
    (output,) = explorer.output.outputs
    return base64.b64decode(output["data"]["image/png"])


def _text(explorer: PlaneExplorer) -> str:
    return "".join(o["data"]["text/plain"] for o in explorer.output.outputs)


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_render_plane_draws_boundary_regions_and_loss():
    fig = render_plane(FAST)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("decision boundary: accuracy ")
    assert titles[1].startswith("linear regions: ")
    assert titles[2] == "training loss: 30 Adam steps"
    assert fig._suptitle.get_text() == "moons, 1 x 4 relu"


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_render_plane_shows_the_last_hidden_layer_for_tanh_and_the_input_for_depth_0():
    fig = render_plane(PlaneState(dataset="spirals", depth=2, width=2, activation="tanh", steps=5))
    assert fig.axes[1].get_title() == "last hidden layer: layers.1.act (2-D)"
    fig = render_plane(PlaneState(dataset="xor", depth=0, width=3, activation="tanh", steps=5))
    assert fig.axes[1].get_title() == "last hidden layer: head (2-D)"


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_render_plane_is_deterministic_and_checks_its_state():
    a, b = render_plane(FAST), render_plane(FAST)
    assert a.axes[0].get_title() == b.axes[0].get_title()
    plt.close("all")
    with pytest.raises(OptionError, match="no toy data set 'moon'"):
        render_plane(PlaneState(dataset="moon"))
    with pytest.raises(OptionError, match="state must be a PlaneState"):
        render_plane({"dataset": "moons"})
    with pytest.raises(OptionError, match="state.depth must be an int >= 0, got -1"):
        render_plane(PlaneState(depth=-1))
    with pytest.raises(OptionError, match="state.width must be an int >= 1, got 0"):
        render_plane(PlaneState(width=0))
    assert not plt.get_fignums(), "a failed render left a figure open"


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_explorer_redraws_when_a_control_changes():
    explorer = PlaneExplorer(FAST)
    assert set(explorer.controls) == {"depth", "width", "activation", "dataset"}
    assert not explorer.controls["depth"].continuous_update
    assert not explorer.controls["width"].continuous_update
    first = _png(explorer)
    assert first.startswith(b"\x89PNG")
    for name, value in [("depth", 2), ("width", 6), ("activation", "tanh"), ("dataset", "xor")]:
        before = _png(explorer)
        explorer.controls[name].value = value
        assert getattr(explorer.state, name) == value
        assert len(explorer.output.outputs) == 1  # replaced, not appended
        assert _png(explorer) != before, f"changing {name} did not change the figure"
    assert explorer.state == PlaneState(
        dataset="xor", depth=2, width=6, activation="tanh", steps=30, n=100
    )
    assert explorer._repr_mimebundle_()["text/plain"] == (
        "PlaneExplorer(depth=2, width=6, activation='tanh', dataset='xor')"
    )
    assert explorer.last_error is None


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_an_error_in_the_callback_is_shown_in_the_widget_and_the_next_change_recovers():
    def render(state):
        if state.width == 3:
            raise ValueError("width 3 is cursed")
        return render_plane(state)

    explorer = PlaneExplorer(FAST, render=render)
    assert explorer.last_error is None
    explorer.controls["width"].value = 3
    assert _text(explorer) == "ValueError: width 3 is cursed"
    assert "<pre" in explorer.output.outputs[0]["data"]["text/html"]
    assert isinstance(explorer.last_error, ValueError)
    assert str(explorer.last_error) == "width 3 is cursed"
    assert explorer.last_error.__traceback__ is not None, "kept for debugging"
    page = explorer.output.outputs[0]["data"]["text/html"]
    assert "in render" in page[page.index("<details class='hlviz-traceback'>") :]
    explorer.controls["width"].value = 5
    assert _png(explorer).startswith(b"\x89PNG") and explorer.state.width == 5
    assert not plt.get_fignums(), "the explorer left its figures open in pyplot"


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_a_render_that_fails_while_drawing_closes_its_figure(monkeypatch):
    import hlviz.widgets.plane

    def broken(*args, **kwargs):
        raise RuntimeError("cannot count regions")

    monkeypatch.setattr(hlviz.widgets.plane, "linear_regions", broken)
    plt.close("all")
    with pytest.raises(RuntimeError, match="cannot count regions"):
        render_plane(FAST)
    assert not plt.get_fignums(), "the half-drawn figure was left open"


def test_the_static_fallback_shows_the_controls_and_the_figure_not_the_widget_repr(monkeypatch):
    import hlviz.widgets.base as base

    explorer = PlaneExplorer(FAST)
    monkeypatch.setenv("HLVIZ_STATIC", "1")
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert (
        bundle["text/plain"]
        == "PlaneExplorer(depth=1, width=4, activation='relu', dataset='moons')"
    )
    assert "VBox" not in bundle["text/plain"] and "VBox" not in bundle["text/html"]
    png = explorer.output.outputs[0]["data"]["image/png"]
    assert bundle["text/html"].count("<img src='data:image/png;base64,") == 1
    assert f"<img src='data:image/png;base64,{png}'/>" in bundle["text/html"]
    assert "PlaneExplorer(depth=1, width=4" in bundle["text/html"]
    explorer.controls["dataset"].value = "circles"  # the static view follows the controls
    assert "dataset=&#x27;circles&#x27;" in explorer._repr_mimebundle_()["text/html"]
    monkeypatch.delenv("HLVIZ_STATIC")
    monkeypatch.setattr(base, "static_mode", lambda: False)
    live = explorer._repr_mimebundle_()
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.ui.model_id
    assert live["text/plain"] == explorer.describe() and "<img" in live["text/html"]


def test_the_static_fallback_of_a_failed_render_shows_the_error_box(monkeypatch):
    def render(state):
        raise RuntimeError("no <plane> today")

    monkeypatch.setenv("HLVIZ_STATIC", "1")
    explorer = PlaneExplorer(FAST, render=render)
    assert isinstance(explorer.last_error, RuntimeError)
    page = explorer._repr_mimebundle_()["text/html"]
    assert "RuntimeError: no &lt;plane&gt; today" in page and "<plane>" not in page
    assert "<img" not in page


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_an_error_while_reading_the_controls_is_shown_and_kept(monkeypatch):
    explorer = PlaneExplorer(FAST)

    def refuse(*args, **kwargs):
        raise TypeError("cannot replace <state>")

    monkeypatch.setattr("hlviz.widgets.plane.replace", refuse)
    explorer.controls["depth"].value = 2  # raised out of the setter before
    assert _text(explorer) == "TypeError: cannot replace <state>"
    assert isinstance(explorer.last_error, TypeError)


def test_the_explorer_checks_its_arguments():
    from hlviz.errors import OptionTypeError

    with pytest.raises(OptionTypeError, match="state must be a PlaneState or None, got dict"):
        PlaneExplorer({"depth": 1})
    with pytest.raises(OptionTypeError, match="render must be a function .* got int"):
        PlaneExplorer(FAST, render=3)
    with pytest.raises(
        OptionError, match=r"max_depth must be an int >= 3 \(the state's depth is 3\)"
    ):
        PlaneExplorer(PlaneState(depth=3), max_depth=2)
    with pytest.raises(OptionError, match="max_width must be an int >= 4 .* got 2.5"):
        PlaneExplorer(FAST, max_width=2.5)
