"""hlviz.inspect: layer discovery, the four views, every control of the LayerInspector, the
attribution and top-examples tabs, errors shown in the widget, hooks and figures not leaked,
and the static fallback."""

from __future__ import annotations

import base64
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import (
    HlvizWarning,
    LayerNotFoundError,
    LayerShapeError,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
    UnitIndexError,
)
from hlviz.models import CharLSTM
from hlviz.models.gpt import CharGPT
from hlviz.testing import assert_no_hooks
from hlviz.widgets.data import record_layers, take, tokens_of
from hlviz.widgets.inspector import LayerInspector
from hlviz.widgets.views import (
    HIGHLIGHT,
    LayerView,
    TopExamples,
    render_layer_view,
    render_top_examples,
    sequence_html,
    view_kind,
)

from .zoo import tiny_bert, tiny_gpt2

VOCAB = "abcdefgh ()'\n"


def decode(ids):
    return "".join(VOCAB[int(i)] for i in ids)


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.fixture
def lstm():
    torch.manual_seed(0)
    return CharLSTM(vocab_size=len(VOCAB), hidden_size=8, num_layers=1, embed_dim=4).eval()


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    return CharGPT(len(VOCAB), d_model=16, n_heads=2, n_layers=1, context=16).eval()


@pytest.fixture
def ids():
    torch.manual_seed(2)
    return torch.randint(0, len(VOCAB), (3, 10))


def _png(output) -> bytes:
    return base64.b64decode(output.outputs[0]["data"]["image/png"])


def _text(output) -> str:
    return "\n".join(o["data"]["text/plain"] for o in output.outputs)


def _html(output) -> str:
    return "".join(o["data"].get("text/html", "") for o in output.outputs)


# --- layer discovery ---------------------------------------------------------------------


def test_view_kind_follows_the_output_shape():
    assert view_kind((2, 3, 5, 5)) == "feature_maps"
    assert view_kind((2, 3, 5, 5), attention=True) == "attention"
    assert view_kind((2, 3, 5, 4), attention=True) == "feature_maps"
    assert view_kind((2, 7, 9)) == "sequence"
    assert view_kind((2, 9)) == "bars"
    with pytest.raises(ShapeMismatchError, match=r"shape \(2, 3, 4, 5, 6\) has no view"):
        view_kind((2, 3, 4, 5, 6))


def test_record_layers_finds_a_view_for_every_model_and_leaves_no_hooks(cnn, mlp, lstm, gpt, ids):
    kinds = {c.label: c.kind for c in record_layers(cnn, torch.randn(3, 1, 8, 8))}
    assert kinds["features.0"] == "feature_maps" and kinds["classifier"] == "bars"
    assert kinds["pool"] == "feature_maps"
    assert {c.kind for c in record_layers(mlp, torch.randn(5, 4))} == {"bars"}
    lstm_layers = record_layers(lstm, ids)
    assert [c.label for c in lstm_layers] == ["embed", "lstm", "head"]
    assert lstm_layers[1].acts.shape == (3, 10, 8) and lstm_layers[1].kind == "sequence"
    gpt_kinds = {c.label: c.kind for c in record_layers(gpt, ids)}
    assert gpt_kinds["blocks.0.attn.pattern"] == "attention"
    assert gpt_kinds["blocks.0.attn.scores"] == "feature_maps", "masked scores are no pattern"
    assert "pos" not in gpt_kinds, "(T, D) is not batch first: left out"
    for model in (cnn, mlp, lstm, gpt):
        assert_no_hooks(model)


def test_record_layers_finds_the_attention_weights_a_hugging_face_layer_returns():
    bert = tiny_bert()
    bert.set_attn_implementation("eager")  # SDPA returns no weights
    enc = {"input_ids": torch.randint(5, 50, (2, 7)), "attention_mask": torch.ones(2, 7).long()}
    layers = {c.label: c for c in record_layers(bert, enc)}
    attention = layers["encoder.layer.0.attention.self (attention)"]
    assert attention.kind == "attention" and attention.acts.shape == (2, 2, 7, 7)
    assert torch.allclose(attention.acts.sum(-1), torch.ones(2, 2, 7), atol=1e-5)
    assert "encoder.layer.1.attention.self (attention)" in layers
    explicit = record_layers(bert, enc, {"encoder.layer.1.attention.self": 1})
    assert [(c.label, c.kind) for c in explicit] == [
        ("encoder.layer.1.attention.self", "attention")
    ]
    assert_no_hooks(bert)


def test_record_layers_limits_large_models_to_blocks(gpt, ids):
    big = CharGPT(len(VOCAB), d_model=16, n_heads=2, n_layers=3, context=16).eval()
    labels = [c.label for c in record_layers(big, ids, max_layers=12)]
    assert "blocks.2" in labels and "blocks.2.attn.pattern" in labels
    assert "blocks.0.mlp.fc" not in labels and len(labels) <= 12


def test_record_layers_explicit_layers_and_their_errors(cnn, gpt, ids):
    x = torch.randn(2, 1, 8, 8)
    assert [c.label for c in record_layers(cnn, x, "features.*")][:2] == [
        "features.0",
        "features.1",
    ]
    with pytest.raises(LayerNotFoundError, match="did you mean 'features.0'"):
        record_layers(cnn, x, "feature.0")
    with pytest.raises(LayerShapeError, match=r"layer 'pos' gives \(10, 16\) for 3 inputs"):
        record_layers(gpt, ids, "pos")
    with pytest.raises(OptionTypeError, match="inputs must be a tensor"):
        record_layers(cnn, "not a tensor")
    with pytest.raises(OptionError, match="at least one example"):
        record_layers(cnn, torch.zeros(0, 1, 8, 8))
    assert_no_hooks(cnn)
    assert_no_hooks(gpt)


def test_take_and_tokens_keep_the_batch_axis_and_check_decode(ids):
    assert take(ids, 1).shape == (1, 10)
    enc = {"input_ids": ids, "mask": torch.ones(3, 10), "flag": True}
    assert take(enc, 2)["mask"].shape == (1, 10) and take(enc, 2)["flag"] is True
    assert tokens_of(torch.tensor([0, 12]), decode) == ["a", "\n"]
    assert tokens_of(torch.tensor([3, 4]), None) == ["3", "4"]
    with pytest.raises(OptionError, match="decode gave 1 tokens for 2 positions"):
        tokens_of(torch.tensor([0, 1]), lambda ids: ["ab"])
    with pytest.raises(OptionTypeError, match="decode must be a callable"):
        tokens_of(torch.tensor([0, 1]), 42)


# --- the pure views ------------------------------------------------------------------------


def _red(ax) -> bool:
    from matplotlib.colors import to_hex

    return all(to_hex(s.get_edgecolor()) == HIGHLIGHT for s in ax.spines.values())


def _tiles(ax) -> tuple[list[str], list[str], list]:
    """A montage's tile labels, the red ones, and its frames of the selected tile."""
    from matplotlib.colors import to_hex

    labels = [t.get_text() for t in ax.texts]
    red = [t.get_text() for t in ax.texts if to_hex(t.get_color()) == HIGHLIGHT]
    return labels, red, [p for p in ax.patches if p.get_gid() == "hlviz-selected"]


def test_feature_maps_view_frames_the_selected_channel_on_its_page():
    acts = torch.randn(40, 5, 5)
    fig = render_layer_view(
        LayerView("conv", "feature_maps", acts, unit=35, image=torch.rand(1, 8, 8), max_maps=16)
    )
    assert fig._suptitle.get_text() == "conv: channel 35 of 40, input 0"
    (tiles,) = [ax for ax in fig.axes if ax.get_title().startswith("channels 32-39")]
    labels, red, frames = _tiles(tiles)
    assert labels == [f"ch {c}" for c in range(32, 40)] and red == ["ch 35"]
    assert len(frames) == 1 and frames[0].get_xy() == (3 * (5 + 1) - 0.5, 2 - 0.5)
    montage = tiles.get_images()[0].get_array()
    assert torch.allclose(torch.as_tensor(montage[2:7, 18:23].data).float(), acts[35])
    big = [ax for ax in fig.axes if ax.get_title() == "channel 35"]
    assert len(big) == 1 and _red(big[0])
    assert torch.allclose(
        torch.as_tensor(big[0].get_images()[0].get_array().data).float(), acts[35]
    )
    assert any(ax.get_title() == "input 0" for ax in fig.axes)
    whole = render_layer_view(LayerView("conv", "feature_maps", acts[:6], unit=0))
    assert [ax.get_title() for ax in whole.axes][1] == "all 6 channels, one colour scale"


def test_sequence_view_labels_positions_with_tokens_and_lists_top_units():
    acts = torch.zeros(4, 6)
    acts[:, 5] = torch.tensor([0.0, 3.0, 0.0, 0.0])
    acts[:, 1] = torch.tensor([1.0, -1.0, 0.5, 0.0])
    view = LayerView("lstm", "sequence", acts, unit=1, tokens=("a", "\n", "b", " "), top_units=3)
    fig = render_layer_view(view)
    line, heat = fig.axes[:2]
    assert line.get_ylabel() == "unit 1" and line.get_title() == "unit 1 over 4 positions"
    assert [t.get_text() for t in heat.get_xticklabels()] == ["a", "\u23ce", "b", "\u2423"]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["unit 1", "unit 5", "unit 0"]
    assert fig._suptitle.get_text() == "lstm: unit 1 of 6, input 0"
    page = sequence_html(view)
    assert page.count('class="hlviz-token"') == 4 and "lstm, unit 1" in page


def test_attention_view_draws_the_selected_head_large():
    acts = torch.softmax(torch.randn(3, 5, 5), -1)
    fig = render_layer_view(
        LayerView("attn", "attention", acts, unit=2, tokens=tuple("abcde"), input_label="x")
    )
    assert fig._suptitle.get_text() == "attn: head 2 of 3, x"
    assert fig.axes[0].get_title().startswith("head 2: row = query")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("abcde")
    assert torch.allclose(
        torch.as_tensor(fig.axes[0].get_images()[0].get_array().data).float(), acts[2]
    )
    labels, red, frames = _tiles(fig.axes[1])
    assert labels == ["head 0", "head 1", "head 2"] and red == ["head 2"] and len(frames) == 1


def test_bars_view_highlights_the_unit_and_shows_its_spread_over_inputs():
    from matplotlib.colors import to_hex

    batch = torch.randn(10, 6)
    fig = render_layer_view(LayerView("fc", "bars", batch[3], unit=4, batch=batch))
    bars = fig.axes[0].patches
    assert (
        to_hex(bars[4].get_facecolor()) == HIGHLIGHT
        and to_hex(bars[0].get_facecolor()) != HIGHLIGHT
    )
    assert fig.axes[1].get_title() == "unit 4 across 10 inputs"
    wide = render_layer_view(LayerView("fc", "bars", torch.randn(300), unit=7))
    assert wide.axes[0].get_title() == "histogram of the 300 units for this input"


def test_layer_view_checks_its_state_and_closes_a_failed_figure(monkeypatch):
    with pytest.raises(UnitIndexError, match=r"unit=6 is out of range for layer 'fc': use 0..5"):
        render_layer_view(LayerView("fc", "bars", torch.zeros(6), unit=6))
    with pytest.raises(ShapeMismatchError, match="takes acts with 3 axes"):
        render_layer_view(LayerView("c", "feature_maps", torch.zeros(2, 3)))
    with pytest.raises(OptionError, match="kind must be one of"):
        render_layer_view(LayerView("c", "maps", torch.zeros(2, 3)))
    with pytest.raises(OptionError, match="view must be a LayerView"):
        render_layer_view({"kind": "bars"})
    with pytest.raises(ShapeMismatchError, match="2 tokens for 3 positions"):
        render_layer_view(LayerView("s", "sequence", torch.zeros(3, 2), tokens=("a", "b")))
    import hlviz.widgets.views as iv

    def broken(*args):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(iv, "_bars", broken)
    plt.close("all")
    with pytest.raises(RuntimeError, match="cannot draw"):
        render_layer_view(LayerView("fc", "bars", torch.zeros(3)))
    assert not plt.get_fignums()


def test_top_examples_render_as_images_text_or_a_table():
    images = TopExamples(
        "c", 1, torch.tensor([3.0, 2.0]), torch.tensor([4, 9]), torch.rand(2, 1, 6, 6)
    )
    fig = render_top_examples(images)
    assert [ax.get_title() for ax in fig.axes] == ["#4\n3", "#9\n2"]
    text = TopExamples(
        "lstm",
        0,
        torch.tensor([1.0]),
        torch.tensor([5]),
        torch.zeros(1, 2, dtype=torch.long),
        torch.tensor([1]),
        torch.tensor([[0.1, 1.0]]),
        (("<", "b"),),
    )
    page = render_top_examples(text)
    assert "#5 (1)" in page and "&lt;" in page and "top-1 examples of lstm, unit 0" in page
    assert list(text.summary().columns) == ["rank", "index", "value", "position"]


# --- the widget ----------------------------------------------------------------------------


def test_hlviz_inspect_is_the_lazy_function():
    assert hlviz.inspect is hlviz.widgets.inspector.inspect
    assert hlviz.LayerInspector is LayerInspector


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_feature_map_inspector_redraws_for_every_control(cnn):
    images = torch.rand(4, 1, 8, 8)
    plt.close("all")
    ins = hlviz.inspect(cnn, images, labels=["a", "b", "c", "d"])
    unit, layer = ins.controls["unit"], ins.controls["layer"]
    assert not unit.continuous_update and unit.description == "channel" and unit.max == 3
    assert _png(ins.outputs["activations"]).startswith(b"\x89PNG")
    figure = ins.figure
    for name, value, check in [
        ("unit", 2, lambda: ins.view.unit == 2),
        ("layer", "features.4", lambda: ins.view.layer == "features.4" and unit.max == 7),
        ("input", 3, lambda: ins.view.input_label == "d"),
        ("layer", "classifier", lambda: ins.view.kind == "bars" and unit.description == "unit"),
    ]:
        before = _png(ins.outputs["activations"])
        ins.controls[name].value = value
        assert check(), name
        assert ins.caption.value.count(ins.view.layer) == 1, "the caption names the view"
        assert f"{unit.description} {unit.value} of {unit.max + 1}, " in ins.caption.value
        assert len(ins.outputs["activations"].outputs) == 1
        assert _png(ins.outputs["activations"]) != before, f"changing {name} did not redraw"
        assert ins.figure is figure, "the figure is reused"
    assert ins.figure._suptitle.get_text() == "classifier: unit 2 of 3 = " + (
        f"{ins.view.acts[2].item():.3g}, d"
    )
    layer.value = "features.0"
    assert unit.value == 2 and unit.max == 3 and ins.view.image is not None
    assert "features.0: channel 2 of 4, a" not in ins.caption.value  # input is still "d"
    assert "features.0: channel 2 of 4, d (activations)" in ins.caption.value
    assert {"hlviz-inspector"} <= set(ins.ui._dom_classes)
    assert "hlviz-control-unit" in unit._dom_classes
    assert plt.get_fignums() == [], "the inspector never opens pyplot figures"
    assert_no_hooks(cnn)


def test_a_layer_change_clamps_the_unit_and_redraws_once(cnn, monkeypatch):
    ins = hlviz.inspect(cnn, torch.rand(2, 1, 8, 8), layers=["features.4", "classifier"])
    ins.controls["unit"].value = 7
    calls = []
    original = ins.redraw
    monkeypatch.setattr(ins, "redraw", lambda: (calls.append(1), original()))
    ins.controls["layer"].value = "classifier"
    assert ins.controls["unit"].value == 2 and ins.view.unit == 2 and len(calls) == 1


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_sequence_inspector_shows_tokens_and_a_text_heat_map(lstm, ids):
    ins = hlviz.inspect(lstm, ids, decode=decode)
    assert ins.controls["input"].options[0][0] == "0: " + decode(ids[0]).replace("\n", " ")
    ins.controls["layer"].value = "lstm"
    ins.controls["unit"].value = 5
    out = ins.outputs["activations"]
    assert len(out.outputs) == 2 and "lstm, unit 5" in _html(out)
    assert ins.view.tokens == tuple(decode(ids[0]))
    ins.controls["input"].value = 2
    assert ins.view.tokens == tuple(decode(ids[2])) and "lstm, unit 5: 2:" in _html(out)
    assert_no_hooks(lstm)


def test_attention_inspector_steps_through_heads(gpt, ids):
    ins = hlviz.inspect(gpt, ids, decode=decode)
    ins.controls["layer"].value = "blocks.0.attn.pattern"
    assert ins.controls["unit"].description == "head" and ins.controls["unit"].max == 1
    ins.controls["unit"].value = 1
    assert ins.figure._suptitle.get_text().startswith("blocks.0.attn.pattern: head 1 of 2, 0: ")
    assert_no_hooks(gpt)


def test_attribution_tab_covers_every_method_and_the_target(cnn):
    ins = hlviz.inspect(cnn, torch.rand(3, 1, 8, 8), classes=["x", "y", "z"], target=1)
    assert ins.controls["target"].options[0] == ("given: 1", 1)
    ins.controls["layer"].value = "features.4"
    ins.tabs.selected_index = 1
    assert ins.tab == "attribution"
    for method in ins.controls["method"].options:
        ins.controls["method"].value = method
        out = ins.outputs["attribution"]
        assert _png(out).startswith(b"\x89PNG"), _text(out)
        assert f"{method} target=1" in _html(out)
    ins.controls["target"].value = 2
    assert "grad_cam target=2" in _html(ins.outputs["attribution"])
    ins.controls["target"].value = "predicted"
    with torch.no_grad():
        predicted = int(cnn(ins.inputs.main[:1]).argmax())
    assert f"grad_cam target={predicted}" in _html(ins.outputs["attribution"])
    ins.controls["layer"].value = "classifier"
    assert _text(ins.outputs["attribution"]) == (
        "OptionError: grad_cam needs a spatial layer: choose a (N, C, H, W) layer in the "
        "layer dropdown."
    )
    assert_no_hooks(cnn)


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_attribution_of_vectors_and_of_token_ids(mlp, lstm, ids):
    ins = hlviz.inspect(mlp, torch.randn(4, 4))
    ins.tabs.selected_index = 1
    assert _png(ins.outputs["attribution"]).startswith(b"\x89PNG")
    assert ins.controls["method"].options == (
        "saliency",
        "integrated_gradients",
        "input_x_gradient",
        "smoothgrad",
    )
    tokens = hlviz.inspect(lstm, ids, decode=decode)
    tokens.tabs.selected_index = 1
    assert "BaselineError: no PAD token id is known" in _text(tokens.outputs["attribution"])
    tokens = hlviz.inspect(lstm, ids, decode=decode, attribute_options={"pad_id": 8})
    tokens.tabs.selected_index = 1
    page = _html(tokens.outputs["attribution"])
    assert "layer_integrated_gradients, target (9," in page and page.count("hlviz-token") == 10
    assert_no_hooks(lstm)


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_top_examples_tab_for_images_sequences_vectors_and_a_store(cnn, lstm, mlp, tmp_path):
    data = torch.rand(30, 1, 8, 8)
    ins = hlviz.inspect(cnn, data[:2], data=data, top_k=4)
    ins.controls["layer"].value = "features.5"
    ins.tabs.selected_index = 2
    assert ins.tab == "top examples" and _png(ins.outputs["top examples"]).startswith(b"\x89PNG")
    scores = hlviz.activations(cnn, data, "features.5")["features.5"].amax((2, 3))[:, 0]
    assert ins.top.indices.tolist() == scores.argsort(descending=True)[:4].tolist()
    ins.controls["unit"].value = 3
    assert ins.top.unit == 3
    windows = torch.randint(0, len(VOCAB), (12, 10))
    seq = hlviz.inspect(lstm, windows[:2], data=windows, decode=decode, layers=["lstm"])
    seq.tabs.selected_index = 2
    assert "top-8 examples of lstm, unit 0" in _html(seq.outputs["top examples"])
    assert (
        seq.top.traces.shape == (8, 10)
        and seq.top.positions.tolist() == seq.top.traces.argmax(1).tolist()
    )
    store = hlviz.collect(mlp, torch.randn(50, 4), "2", batch_size=25, progress=False)
    flat = hlviz.inspect(mlp, torch.randn(3, 4), data=store)
    flat.tabs.selected_index = 2
    assert "the ActivationStore holds layers ['2'], not '0'" in _text(flat.outputs["top examples"])
    flat.controls["layer"].value = "2"
    assert "<td>1</td>" in _html(flat.outputs["top examples"])
    top = store["2"].numpy()[:, 0].argmax()
    assert flat.top.indices[0].item() == top
    for model in (cnn, lstm, mlp):
        assert_no_hooks(model)


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_an_error_while_drawing_is_shown_in_the_widget_and_the_next_change_recovers(
    cnn, monkeypatch
):
    import hlviz.widgets.inspector as hi

    ins = hlviz.inspect(cnn, torch.rand(2, 1, 8, 8))
    real = hi.render_layer_view

    def flaky(view, fig=None):
        if view.unit == 1:
            raise ValueError("unit 1 is <cursed>")
        return real(view, fig=fig)

    monkeypatch.setattr(hi, "render_layer_view", flaky)
    ins.controls["unit"].value = 1
    out = ins.outputs["activations"]
    assert _text(out) == "ValueError: unit 1 is <cursed>"
    assert "&lt;cursed&gt;" in _html(out) and "hlviz-error" in _html(out)
    ins.controls["unit"].value = 2
    assert _png(out).startswith(b"\x89PNG")


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_figures_stay_constant_and_hooks_gone_across_many_redraws(cnn):
    handle = cnn.features[0].register_forward_hook(lambda m, i, o: None)
    plt.close("all")
    ins = hlviz.inspect(cnn, torch.rand(3, 1, 8, 8), data=torch.rand(10, 1, 8, 8))
    before = plt.get_fignums()
    for tab in (0, 1, 2):
        ins.tabs.selected_index = tab
        for unit in (1, 2, 3):
            ins.controls["unit"].value = unit
        ins.controls["layer"].value = "features.2" if tab != 1 else "features.4"
    assert plt.get_fignums() == before
    assert len(ins._figures) == 3
    assert_no_hooks(cnn, ignore=[handle])
    handle.remove()


def test_inspect_refuses_bad_labels_and_layers_with_a_message(cnn):
    # its hook hygiene (every tab, bad arguments, a model raising): tests/test_hygiene.py
    with pytest.raises(OptionError, match="labels has 1 entries for 2 inputs"):
        hlviz.inspect(cnn, torch.rand(2, 1, 8, 8), labels=["x"])
    with pytest.raises(LayerNotFoundError, match="no layer 'nope'"):
        hlviz.inspect(cnn, torch.rand(2, 1, 8, 8), layers="nope")
    assert_no_hooks(cnn)


def test_static_fallback_renders_the_view_as_html_with_the_png_inline(cnn, monkeypatch):
    import hlviz.widgets.base as wiring

    ins = hlviz.inspect(cnn, torch.rand(2, 1, 8, 8))
    monkeypatch.setenv("HLVIZ_STATIC", "1")
    assert wiring.static_mode()
    bundle = ins._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    assert bundle["text/plain"] == (
        "LayerInspector(layer='features.0', unit=0, input=0, method='saliency', target='predicted')"
    )
    png = ins.outputs["activations"].outputs[0]["data"]["image/png"]
    assert bundle["text/html"].count("<img src='data:image/png;base64,") == 1
    assert f"<img src='data:image/png;base64,{png}'/>" in bundle["text/html"]
    monkeypatch.delenv("HLVIZ_STATIC")
    assert wiring.static_mode(), "no IPython kernel runs under pytest"
    monkeypatch.setattr(wiring, "static_mode", lambda: False)
    live = ins._repr_mimebundle_()
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == ins.ui.model_id
    assert live["text/plain"] == bundle["text/plain"] and "text/html" in live


def test_the_data_helpers_explain_what_they_cannot_do(mlp):
    from hlviz.widgets.data import embedding_layer, predicted_target
    from hlviz.widgets.top import top_examples

    with pytest.raises(LayerShapeError, match="Sequential takes token ids but has no nn.Embedding"):
        embedding_layer(mlp)
    conv = nn.Conv2d(1, 2, 3)
    with pytest.raises(
        OptionError, match=r"the model's output has shape \(1, 2, 2, 2\); give target="
    ):
        predicted_target(conv, torch.rand(1, 1, 4, 4))
    assert predicted_target(mlp, torch.zeros(1, 4)) == int(mlp(torch.zeros(1, 4)).argmax())
    (choice,) = record_layers(mlp, torch.randn(2, 4), "2")
    with pytest.raises(OptionError, match="data is empty: give at least one example to rank"):
        top_examples(mlp, torch.zeros(0, 4), choice, 0)
    with pytest.raises(
        OptionError, match="unit 3 is out of range for '2', whose data scores have 3"
    ):
        top_examples(mlp, torch.randn(5, 4), choice, 3)
    assert_no_hooks(mlp)


def test_top_examples_of_a_sequence_layer_agree_between_a_store_and_a_scan():
    from hlviz.widgets.top import top_examples

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 6)).eval()  # (N, T=4, D=6): units last
    data = torch.randint(0, 20, (30, 4))
    (choice,) = record_layers(model, data[:3], "0")
    assert choice.kind == "sequence"
    store = hlviz.collect(model, data, "0", progress=False)
    assert store["0"].shape == (30, 4, 6)
    with torch.no_grad():
        acts = model(data)
    for unit in (2, 5):  # 5 >= T: the positions axis has only 4 entries
        from_store = top_examples(model, store, choice, unit, k=5)
        from_scan = top_examples(model, data, choice, unit, k=5)
        hand = torch.sort(acts[..., unit].amax(1), descending=True, stable=True)
        assert from_store.indices.tolist() == from_scan.indices.tolist()
        assert from_store.indices.tolist() == hand.indices[:5].tolist()
        assert torch.equal(from_store.values, from_scan.values)
        assert torch.equal(from_store.values, hand.values[:5])
    conv = nn.Sequential(nn.Conv1d(3, 5, 2)).eval()  # (N, C=5, L=6): units on axis 1
    signals = torch.randn(12, 3, 7)
    (channel,) = record_layers(conv, signals[:2], "0")
    conv_store = hlviz.collect(conv, signals, "0", progress=False)
    with torch.no_grad():
        reference = conv(signals)[:, 4].amax(1)
    top = top_examples(conv, conv_store, channel, 4, k=3)
    assert top.indices.tolist() == reference.argsort(descending=True)[:3].tolist()
    assert top.indices.tolist() == top_examples(conv, signals, channel, 4, k=3).indices.tolist()
    narrow = nn.Sequential(nn.Embedding(20, 5)).eval()
    (other,) = record_layers(narrow, data[:3], "0")
    with pytest.raises(
        LayerShapeError, match=r"holds '0' as \(30, 4, 6\), which gives 6 units per example"
    ):
        top_examples(narrow, store, other, 0)
    assert_no_hooks(model)
    assert_no_hooks(conv)


def _details(output) -> str:
    page = _html(output)
    assert "<details class='hlviz-traceback'>" in page, page
    return page[page.index("<details") :]


def test_an_error_while_drawing_shows_its_traceback_and_is_kept_in_last_error(cnn, monkeypatch):
    import hlviz.widgets.inspector as hi

    ins = hlviz.inspect(cnn, torch.rand(2, 1, 8, 8))
    assert ins.last_error is None
    real = hi.render_layer_view

    def draw_or_refuse_unit_one(view, fig=None):
        if view.unit == 1:
            raise ValueError("unit 1 is <cursed>")
        return real(view, fig=fig)

    monkeypatch.setattr(hi, "render_layer_view", draw_or_refuse_unit_one)
    ins.controls["unit"].value = 1
    out = ins.outputs["activations"]
    assert _text(out) == "ValueError: unit 1 is <cursed>"
    details = _details(out)
    assert "draw_or_refuse_unit_one" in details and "_render_activations" in details
    assert "Traceback (most recent call last)" in details
    assert "unit 1 is &lt;cursed&gt;" in details and "<cursed>" not in _html(out)
    assert isinstance(ins.last_error, ValueError) and str(ins.last_error) == "unit 1 is <cursed>"
    ins.controls["unit"].value = 2
    assert _png(out).startswith(b"\x89PNG")


def test_an_error_while_a_layer_change_syncs_the_slider_is_shown_in_the_widget(cnn, monkeypatch):
    ins = hlviz.inspect(cnn, torch.rand(2, 1, 8, 8), layers=["features.4", "classifier"])
    real = LayerInspector._units

    def count_units_but_not_bars(choice):
        if choice.kind == "bars":
            raise RuntimeError(f"cannot count the units of <{choice.label}>")
        return real(choice)

    monkeypatch.setattr(LayerInspector, "_units", staticmethod(count_units_but_not_bars))
    ins.controls["layer"].value = "classifier"  # raised out of the setter before
    out = ins.outputs["activations"]
    assert _text(out) == "RuntimeError: cannot count the units of <classifier>"
    details = _details(out)
    assert "count_units_but_not_bars" in details and "_sync_unit" in details
    assert isinstance(ins.last_error, RuntimeError)
    ins.controls["layer"].value = "features.4"
    assert _png(out).startswith(b"\x89PNG") and ins.view.layer == "features.4"
    assert_no_hooks(cnn)


def test_a_numpy_integer_target_reaches_attribute_as_an_int(mlp):
    x = torch.randn(4, 4)
    labels = np.array([2, 0, 1, 2])
    ins = hlviz.inspect(mlp, x, target=labels[0])
    assert ins.controls["target"].options[0] == ("given: 2", 2)
    assert type(ins.controls["target"].value) is int
    ins.tabs.selected_index = 1
    page = _html(ins.outputs["attribution"])
    assert "saliency target=2" in page and "hlviz-error" not in page, _text(
        ins.outputs["attribution"]
    )
    assert ins.last_error is None
    assert_no_hooks(mlp)


# --- issue 22: reproductions -------------------------------------------------------------


def test_repro_inspect_truncates_deep():
    gpt = tiny_gpt2(layers=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HlvizWarning)  # nothing left out, nothing to warn
        ins = hlviz.inspect(gpt, torch.randint(0, 30, (2, 6)))
    labels = list(ins.layers)
    blocks = {int(x.split(".")[2]) for x in labels if x.startswith("transformer.h.")}
    assert blocks == set(range(16)) and labels[-1] == "lm_head"
    assert sum(x.endswith("(attention)") for x in labels) == 16
    assert "transformer.h.0.mlp.c_fc" not in labels, "a large model is shown by its blocks"
    assert len(labels) > 24  # more than max_layers: the cap picks blocks, it cuts nothing
    assert_no_hooks(gpt)


def test_repro_inspect_sdpa_no_attention():
    ids = torch.randint(5, 50, (2, 7))
    bert = tiny_bert()
    bert.set_attn_implementation("sdpa")
    with pytest.warns(
        HlvizWarning, match=r"attn_implementation='sdpa'.*attn_implementation=\"eager\""
    ):
        ins = hlviz.inspect(bert, ids)
    assert not any(c.kind == "attention" for c in ins.layers.values())
    notes = [w.value for w in ins.ui.children if "hlviz-note" in getattr(w, "value", "")]
    assert len(notes) == 1 and "set_attn_implementation(&quot;eager&quot;)" in notes[0]
    bert.set_attn_implementation("eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", HlvizWarning)
        eager = hlviz.inspect(bert, ids)
    assert eager.note is None and "encoder.layer.1.attention.self (attention)" in eager.layers
    assert not any("hlviz-note" in getattr(w, "value", "") for w in eager.ui.children)
    with warnings.catch_warnings():  # layers named: the user chose, no note
        warnings.simplefilter("error", HlvizWarning)
        bert.set_attn_implementation("sdpa")
        assert hlviz.inspect(bert, ids, layers=["encoder.layer.0"]).note is None


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.flat = nn.Flatten()
        self.tab = nn.Linear(5, 4)
        self.head = nn.Linear(8, 3)

    def forward(self, image, tab):
        return self.head(torch.cat([self.flat(self.cnn(image)), self.tab(tab)], 1))


@pytest.mark.slow  # over 2 s (redraws)
def test_repro_inspect_top_examples_data():
    from torch.utils.data import DataLoader, TensorDataset

    bert = tiny_bert()
    bert.set_attn_implementation("eager")
    ids = torch.randint(5, 50, (10, 7))
    mask = torch.ones(10, 7, dtype=torch.long)
    mask[::3, 5:] = 0
    data = [
        {"input_ids": ids[i : i + 4], "attention_mask": mask[i : i + 4], "labels": ids[i : i + 4]}
        for i in range(0, 10, 4)
    ]
    ins = hlviz.inspect(bert, {"input_ids": ids[:2], "attention_mask": mask[:2]}, data=data)
    ins.controls["layer"].value = "encoder.layer.1"
    ins.controls["unit"].value = 3
    ins.tabs.selected_index = 2
    assert "Error" not in _text(ins.outputs["top examples"])
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = hidden[..., 3].amax(1).argsort(descending=True, stable=True)[:8]
    assert ins.top.indices.tolist() == expected.tolist()
    assert ins.top.traces.shape == (8, 7) and len(ins.top.tokens) == 8

    model = _TwoInputs().eval()
    images, tables, y = torch.randn(20, 3, 8, 8), torch.randn(20, 5), torch.arange(20) % 3
    with torch.no_grad():
        reference = model(images, tables)[:, 1].argsort(descending=True, stable=True)[:4]
    for form in (
        (images, tables),
        (images, tables, y),  # labels after the arguments are not needed
        DataLoader(TensorDataset(images, tables, y), batch_size=6),
    ):
        ins = hlviz.inspect(model, (images[:3], tables[:3]), data=form, top_k=4)
        ins.controls["layer"].value = "head"
        ins.controls["unit"].value = 1
        ins.tabs.selected_index = 2
        assert "Error" not in _text(ins.outputs["top examples"]), form
        assert ins.top.indices.tolist() == reference.tolist()
    ins = hlviz.inspect(model, (images[:3], tables[:3]), data=images)
    ins.tabs.selected_index = 2
    assert "inputs are 2 arguments, but a batch of data is a tensor" in _text(
        ins.outputs["top examples"]
    )
    for m in (bert, model):
        assert_no_hooks(m)
