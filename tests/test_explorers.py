"""ProbeExplorer, CKAExplorer and AttributionExplorer: pure renders and every control."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle
from torch import nn

import hlviz
from hlviz.errors import NotAModuleError, OptionError, OptionTypeError
from hlviz.models import CharLSTM
from hlviz.probes import probe_layers
from hlviz.testing import assert_no_hooks
from hlviz.widgets.explorers import (
    AttributionExplorer,
    CKAExplorer,
    CKAState,
    ProbeExplorer,
    ProbeState,
    probe_table_html,
    render_cka_view,
    render_probe,
)
from hlviz.widgets.views import HIGHLIGHT


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def reports():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (120,), generator=g)
    signal = y[:, None].float() * torch.tensor([2.0, 0.0, 0.0])
    acts = {
        "noise": torch.randn(120, 3, generator=g),
        "<mid>": torch.randn(120, 3, generator=g) + 0.5 * signal,
        "top": torch.randn(120, 3, generator=g) + signal,
    }
    first = probe_layers(acts, y.numpy(), seeds=2)
    second = probe_layers({k: v[:, :2] for k, v in acts.items()}, y.numpy(), seeds=2)
    return {"three features": first, "two features": second}


def _png(output) -> bytes:
    return base64.b64decode(output.outputs[0]["data"]["image/png"])


def _html(output) -> str:
    return "".join(o["data"].get("text/html", "") for o in output.outputs)


def test_render_probe_marks_the_layer_and_overlays_controls(reports):
    report = reports["three features"]
    fig = render_probe(report, ProbeState("score", ("majority", "shuffled"), "top"))
    ax = fig.axes[0]
    value = report.table.set_index("layer").loc["top", "score"]
    assert ax.get_title() == f"score by layer; top: {value:.3f}"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:3] == ["score", "majority", "shuffled"]
    assert to_hex(ax.get_lines()[-1].get_color()) == HIGHLIGHT
    assert [t.get_text() for t in ax.get_xticklabels()] == ["noise", "<mid>", "top"]
    plain = render_probe(report, ProbeState("majority"))
    assert plain.axes[0].get_title() == "majority by layer (classification)"


def test_render_probe_and_the_table_check_their_state(reports):
    report = reports["three features"]
    with pytest.raises(OptionError, match="metric 'accuracy' is not in this report"):
        render_probe(report, ProbeState("accuracy"))
    with pytest.raises(OptionError, match="control 'control_task' is not in this report"):
        render_probe(report, ProbeState(controls=("control_task",)))
    with pytest.raises(OptionError, match="layer 'fc' is not in this report"):
        probe_table_html(report, ProbeState(layer="fc"))
    with pytest.raises(OptionTypeError, match="report must be a ProbeReport, got dict"):
        render_probe({}, ProbeState())
    page = probe_table_html(report, ProbeState(controls=("majority",), layer="<mid>"))
    assert "<th>layer</th><th>score</th><th>majority</th>" in page
    assert page.count("hlviz-selected") == 1 and "&lt;mid&gt;" in page and "<mid>" not in page


def test_probe_explorer_redraws_for_every_control(reports):
    explorer = ProbeExplorer(reports)
    c = explorer.controls
    assert c["layer"].value == reports["three features"].best_layer()
    assert set(c["metric"].options) >= {"score", "majority", "shuffled"}
    figure = explorer.figure
    for name, value in [
        ("metric", "shuffled"),
        ("controls", ("majority",)),
        ("layer", "noise"),
        ("report", "two features"),
    ]:
        before = _png(explorer.output)
        c[name].value = value
        assert _png(explorer.output) != before, f"changing {name} did not redraw"
        assert len(explorer.output.outputs) == 2 and explorer.figure is figure
    assert explorer.state == ProbeState("shuffled", ("majority",), "noise")
    assert explorer.figure.axes[0].get_title().startswith("shuffled by layer; noise: ")
    assert "hlviz-selected" in _html(explorer.output)
    assert plt.get_fignums() == []
    assert explorer.describe().startswith("ProbeExplorer(report='two features', metric='shuffled'")


def test_probe_explorer_refuses_what_is_not_a_report():
    with pytest.raises(OptionTypeError, match="report must be a ProbeReport or a non-empty dict"):
        ProbeExplorer({"a": pd.DataFrame()})
    with pytest.raises(OptionTypeError, match="got dict holding nothing"):
        ProbeExplorer({})


def test_render_cka_view_frames_the_cell_and_draws_the_row():
    m = pd.DataFrame([[1.0, 0.2, 0.7], [0.2, 1.0, 0.4]], index=["a", "b"], columns=["x", "y", "z"])
    fig = render_cka_view(m, CKAState("b", "z"))
    heat, row = fig.axes[0], fig.axes[1]
    assert heat.get_title() == "CKA(b, z) = 0.400"
    frames = [p for p in heat.patches if isinstance(p, Rectangle) and p.get_xy() == (2, 1)]
    assert len(frames) == 1 and to_hex(frames[0].get_edgecolor()) == HIGHLIGHT
    assert row.get_title() == "b against every column layer"
    assert list(row.get_lines()[0].get_ydata()) == [0.2, 1.0, 0.4]
    with pytest.raises(OptionError, match=r"column 'q' is not in the matrix; choose one of \['x'"):
        render_cka_view(m, CKAState("a", "q"))
    with pytest.raises(OptionTypeError, match="matrix must be a pandas DataFrame"):
        render_cka_view(m.to_numpy(), CKAState("a", "x"))


def test_cka_explorer_switches_matrices_and_cells():
    acts = {"l1": torch.randn(40, 5), "l2": torch.randn(40, 3)}
    other = {"m1": torch.randn(40, 4)}
    within = hlviz.cka_matrix(acts)
    across = hlviz.cka_matrix(acts, other)
    explorer = CKAExplorer({"within": within, "across": across})
    c = explorer.controls
    c["column"].value = "l2"
    assert explorer.figure.axes[0].get_title() == f"CKA(l1, l2) = {within.loc['l1', 'l2']:.3f}"
    before = _png(explorer.output)
    c["row"].value = "l2"
    assert _png(explorer.output) != before
    c["matrix"].value = "across"
    assert c["column"].options == ("m1",) and c["row"].value == "l2"
    assert explorer.figure.axes[0].get_title() == f"CKA(l2, m1) = {across.loc['l2', 'm1']:.3f}"
    assert plt.get_fignums() == []
    with pytest.raises(OptionError, match="matrix 'e' is empty"):
        CKAExplorer({"e": pd.DataFrame()})
    assert CKAExplorer(within.to_frame()).matrices["CKA"].equals(within.matrix)
    with pytest.raises(OptionTypeError, match="a DataFrame or CKAReport or a non-empty dict"):
        CKAExplorer({"x": [[1.0]]})


def test_an_error_in_an_explorer_is_shown_inside_it(monkeypatch):
    import hlviz.widgets.explorers as ex

    m = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["a", "b"], columns=["a", "b"])
    explorer = CKAExplorer(m)
    real = ex.render_cka_view

    def flaky(matrix, state, fig=None):
        if state.row == "b":
            raise RuntimeError("row b <broke>")
        return real(matrix, state, fig=fig)

    monkeypatch.setattr(ex, "render_cka_view", flaky)
    explorer.controls["row"].value = "b"
    assert explorer.output.outputs[0]["data"]["text/plain"] == "RuntimeError: row b <broke>"
    assert "&lt;broke&gt;" in _html(explorer.output)
    explorer.controls["row"].value = "a"
    assert _png(explorer.output).startswith(b"\x89PNG")


def test_attribution_explorer_on_images(cnn):
    images = torch.rand(3, 1, 8, 8)
    explorer = AttributionExplorer(
        cnn,
        images,
        methods=["saliency", "integrated_gradients", "grad_cam"],
        layer="features.4",
        labels=["a", "b", "c"],
    )
    assert _png(explorer.output).startswith(b"\x89PNG")
    for name, value in [("method", "integrated_gradients"), ("input", 2), ("method", "grad_cam")]:
        before = _png(explorer.output)
        explorer.controls[name].value = value
        assert _png(explorer.output) != before, name
        assert explorer.figure.axes[0].get_title() == "input"
    with torch.no_grad():
        predicted = int(cnn(images[2:3]).argmax())
    assert f"grad_cam target={predicted} layer='features.4'" in _html(explorer.output)
    cached = explorer.source.get("grad_cam", 2, "predicted", "features.4")
    explorer.controls["input"].value = 0
    explorer.controls["input"].value = 2
    assert explorer.source.get("grad_cam", 2, "predicted", "features.4") is cached
    assert plt.get_fignums() == []
    assert_no_hooks(cnn)


def test_attribution_explorer_on_token_ids_and_its_errors(cnn):
    torch.manual_seed(0)
    lstm = CharLSTM(vocab_size=6, hidden_size=8, num_layers=1, embed_dim=4).eval()
    ids = torch.randint(0, 6, (2, 7))
    explorer = AttributionExplorer(
        lstm,
        ids,
        target=(6, 1),
        decode=lambda row: "".join("ab<d e"[int(i)] for i in row),
        attribute_options={"pad_id": 4},
    )
    page = _html(explorer.output)
    assert "layer_integrated_gradients, target (6, 1)" in page and page.count("hlviz-token") == 7
    explorer.controls["input"].value = 1
    assert explorer.source.inputs.tokens[1] == tuple(
        "ab<d e"[int(i)] for i in ids[1]
    ) and "hlviz-token" in _html(explorer.output)
    assert_no_hooks(lstm)
    with pytest.raises(OptionError, match=r"methods \['saliency'\] do not fit these inputs"):
        AttributionExplorer(lstm, ids, methods=["saliency"])
    with pytest.raises(OptionError, match="grad_cam needs layer="):
        AttributionExplorer(cnn, torch.rand(2, 1, 8, 8), methods=["grad_cam"])
    with pytest.raises(NotAModuleError, match="model must be a torch.nn.Module, got function"):
        AttributionExplorer(lambda x: x, torch.rand(2, 4))


def test_explorers_have_a_static_fallback(monkeypatch, reports):
    monkeypatch.setenv("HLVIZ_STATIC", "1")
    explorer = ProbeExplorer(reports["three features"])
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert "<img src='data:image/png;base64," in bundle["text/html"]
    assert "hlviz-probe" in bundle["text/html"], "the table is part of the static view"
    assert bundle["text/plain"] == explorer.describe()


def test_model_free_explorers_keep_no_hooks():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    explorer = AttributionExplorer(model, torch.randn(3, 3))
    assert _png(explorer.output).startswith(b"\x89PNG")
    explorer.controls["method"].value = "smoothgrad"
    assert "smoothgrad target=" in _html(explorer.output)
    assert_no_hooks(model)


def test_an_error_while_switching_reports_is_shown_in_the_probe_explorer(reports, monkeypatch):
    from hlviz.probes import ProbeReport

    first = reports["three features"]
    renamed = ProbeReport(
        first.table.assign(layer=["x", "y", "z"]),
        **{k: v for k, v in vars(first).items() if k != "table"},
    )
    explorer = ProbeExplorer({"first": first, "renamed": renamed})

    def best_layer_of_nothing(self):
        raise ValueError("no <best> layer")

    monkeypatch.setattr(ProbeReport, "best_layer", best_layer_of_nothing)
    explorer.controls["report"].value = "renamed"  # raised out of the setter before
    assert explorer.output.outputs[0]["data"]["text/plain"] == "ValueError: no <best> layer"
    page = _html(explorer.output)
    details = page[page.index("<details class='hlviz-traceback'>") :]
    assert "best_layer_of_nothing" in details and "_sync_options" in details
    assert "&lt;best&gt;" in details and "<best>" not in page
    assert isinstance(explorer.last_error, ValueError)
    monkeypatch.undo()
    explorer.controls["report"].value = "first"
    assert _png(explorer.output).startswith(b"\x89PNG") and explorer.state.layer == "top"


def test_an_error_while_drawing_an_explorer_is_kept_with_its_traceback(monkeypatch):
    import hlviz.widgets.explorers as ex

    m = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["a", "b"], columns=["a", "b"])
    explorer = CKAExplorer(m)
    assert explorer.last_error is None

    def draw_nothing(matrix, state, fig=None):
        raise RuntimeError("cannot draw <this>")

    monkeypatch.setattr(ex, "render_cka_view", draw_nothing)
    explorer.controls["column"].value = "b"
    assert isinstance(explorer.last_error, RuntimeError)
    page = _html(explorer.output)
    assert page.index("RuntimeError: cannot draw &lt;this&gt;</pre>") < page.index("<details")
    assert "draw_nothing" in page[page.index("<details") :]


def test_attribution_explorer_takes_a_numpy_integer_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 4)
    labels = np.array([2, 1, 0, 2])
    explorer = AttributionExplorer(model, x, target=labels[0])
    assert explorer.target == 2 and type(explorer.target) is int
    assert explorer.last_error is None, explorer.last_error
    page = _html(explorer.output)
    assert "saliency target=2" in page
    reference = AttributionExplorer(model, x, target=2)
    assert _png(explorer.output) == _png(reference.output)
    assert_no_hooks(model)


def test_every_public_function_and_method_of_the_widgets_has_a_return_type():
    import ast
    from pathlib import Path

    import hlviz.widgets

    missing = []
    for path in sorted(Path(hlviz.widgets.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        scopes = [("", tree)] + [
            (f"{c.name}.", c)
            for c in tree.body
            if isinstance(c, ast.ClassDef) and not c.name.startswith("_")
        ]
        for prefix, scope in scopes:
            for fn in scope.body:
                if not isinstance(fn, ast.FunctionDef):
                    continue
                public = not fn.name.startswith("_") or fn.name in ("__init__", "__call__")
                if public and fn.returns is None:
                    missing.append(f"{path.name}:{fn.lineno} {prefix}{fn.name}")
    assert not missing, f"public widget functions without a return type: {missing}"
