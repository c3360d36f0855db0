"""edit / ablate / patch / steer: values, composition with record, structured outputs, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import LayerSpecError, OutputSelectError, ShapeMismatchError


def test_ablate_units_and_mean(cnn, images):
    with (
        hlviz.edit(cnn, {"features.2": hlviz.ablate(units=[1, 4])}),
        hlviz.record(cnn, "features.2") as rec,
    ):
        cnn(images)
    full = cnn.features[2](cnn.features[1](cnn.features[0](images))).detach()
    assert rec["features.2"][:, [1, 4]].abs().sum() == 0
    keep = [0, 2, 3, 5]
    torch.testing.assert_close(rec["features.2"][:, keep], full[:, keep])
    with (
        hlviz.edit(cnn, {"features.2": hlviz.ablate(units=[3], value="mean")}),
        hlviz.record(cnn, "features.2") as rec,
    ):
        cnn(images)
    torch.testing.assert_close(rec["features.2"][:, 3], full[:, 3].mean().expand(2, 8, 8))


def test_edit_changes_the_model_output_and_record_sees_the_edit_in_any_order(cnn, images):
    with torch.no_grad():
        clean = cnn(images)
    for order in ("edit-first", "record-first"):
        e = hlviz.edit(cnn, {"classifier": lambda out: out + 1.0})
        r = hlviz.record(cnn, "classifier")
        first, second = (e, r) if order == "edit-first" else (r, e)
        with first, second, torch.no_grad():
            edited = cnn(images)
        torch.testing.assert_close(edited, clean + 1)
        torch.testing.assert_close(r["classifier"], clean + 1)
    hlviz.testing.assert_no_hooks(cnn)


def test_edit_functions_may_take_the_layer_name_and_return_none(cnn, images):
    seen = []

    def spy(out, layer):
        seen.append((layer, tuple(out.shape)))

    with hlviz.edit(cnn, {"features.[02]": spy}), torch.no_grad():
        out = cnn(images)
    assert seen == [("features.0", (2, 4, 8, 8)), ("features.2", (2, 6, 8, 8))]
    torch.testing.assert_close(out, cnn(images))


def test_several_edits_of_one_layer_run_in_order(cnn, images):
    with (
        hlviz.edit(cnn, {"classifier": lambda o: o * 2, ("classifier",): lambda o: o + 1}),
        torch.no_grad(),
    ):
        out = cnn(images)
    torch.testing.assert_close(out, cnn(images) * 2 + 1)


def test_patch_from_a_recording_restores_the_clean_run(cnn, images):
    clean_x, corrupt_x = images[:1], images[1:]
    clean = hlviz.activations(cnn, clean_x, ["features.4", "features.5"], stop=False)
    with torch.no_grad():
        expected = cnn(clean_x)
    with hlviz.edit(cnn, {"features.5": hlviz.patch(clean)}), torch.no_grad():
        patched = cnn(corrupt_x)
    torch.testing.assert_close(patched, expected)
    with (
        hlviz.edit(cnn, {"features.4": hlviz.patch(clean, units=[0])}),
        hlviz.record(cnn, "features.4") as rec,
    ):
        cnn(corrupt_x)
    torch.testing.assert_close(rec["features.4"][:, 0], clean["features.4"][:, 0])
    torch.testing.assert_close(
        rec["features.4"][:, 1:], cnn.features[:5](corrupt_x)[:, 1:].detach()
    )


def test_patch_broadcasts_a_batch_of_one_and_refuses_other_shapes(cnn, images):
    source = torch.zeros(1, 3)
    with hlviz.edit(cnn, {"classifier": hlviz.patch(source)}), torch.no_grad():
        assert cnn(images).abs().sum() == 0
    with pytest.raises(
        ShapeMismatchError,
        match=r"source activation has shape \(4,\) but the layer outputs \(2, 3\)",
    ):
        with hlviz.edit(cnn, {"classifier": hlviz.patch(torch.zeros(4))}):
            cnn(images)
    with pytest.raises(TypeError, match="patch source must be a Recording"):
        hlviz.patch([1, 2])
    hlviz.testing.assert_no_hooks(cnn)


def test_patch_tokens_at_positions_of_a_sequence():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    a, b = torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    clean = hlviz.activations(model, a, "0")
    with (
        hlviz.edit(model, {"0": hlviz.patch(clean, positions=[1, 3])}),
        hlviz.record(model, "0") as rec,
    ):
        model(b)
    torch.testing.assert_close(rec["0"][:, [1, 3]], clean["0"][:, [1, 3]])
    torch.testing.assert_close(rec["0"][:, [0, 2, 4]], model[0](b)[:, [0, 2, 4]].detach())
    with (
        hlviz.edit(model, {"0": hlviz.patch(clean, positions=[2], units=[0, 5])}),
        hlviz.record(model, "0") as rec,
    ):
        model(b)
    torch.testing.assert_close(rec["0"][0, 2, [0, 5]], clean["0"][0, 2, [0, 5]])
    torch.testing.assert_close(rec["0"][0, 2, 1:5], model[0](b)[0, 2, 1:5].detach())


def test_steer_adds_a_direction_per_unit(cnn, images):
    direction = torch.arange(6, dtype=torch.float32)
    with (
        hlviz.edit(cnn, {"features.2": hlviz.steer(direction, scale=0.5)}),
        hlviz.record(cnn, "features.2") as rec,
    ):
        cnn(images)
    full = cnn.features[:3](images).detach()
    torch.testing.assert_close(rec["features.2"], full + 0.5 * direction.view(1, 6, 1, 1))
    with pytest.raises(
        ShapeMismatchError,
        match=r"the steering direction has 4 entries but layer 'features.2' has 6 units",
    ):
        with hlviz.edit(cnn, {"features.2": hlviz.steer(torch.ones(4))}):
            cnn(images)
    hlviz.testing.assert_no_hooks(cnn)


def test_steer_at_positions_of_a_sequence():
    model = nn.Sequential(nn.Linear(3, 3))
    x = torch.zeros(1, 4, 3)
    with hlviz.edit(model, {"0": hlviz.steer([1.0, 2.0, 3.0], positions=[0])}), torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out[0, 0] - out[0, 1], torch.tensor([1.0, 2.0, 3.0]))


def test_edit_of_an_lstm_keeps_the_tuple_structure():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4, batch_first=True))
    x = torch.randn(2, 5, 3)
    captured = {}

    def keep(module, args, output):
        captured["out"] = output

    handle = model[0].register_forward_hook(keep)
    try:
        with hlviz.edit(model, {"0": hlviz.ablate(units=[0])}), torch.no_grad():
            out, (h, _) = model(x)
    finally:
        handle.remove()
    assert out[..., 0].abs().sum() == 0 and h[..., 0].abs().sum() > 0
    with hlviz.edit(model, {"0": hlviz.ablate()}, select=(1, 0)), torch.no_grad():
        out2, (h2, _) = model(x)
    assert h2.abs().sum() == 0 and out2.abs().sum() > 0
    assert isinstance(captured["out"], tuple)


def test_edit_through_a_callable_select_is_refused():
    model = nn.Sequential(nn.LSTM(3, 4, batch_first=True))
    with pytest.raises(
        OutputSelectError, match="cannot put a tensor back through a callable select="
    ):
        with hlviz.edit(model, {"0": hlviz.ablate()}, select=lambda o: o[0]):
            model(torch.zeros(1, 2, 3))
    hlviz.testing.assert_no_hooks(model)


def test_edit_errors(cnn, images):
    with pytest.raises(TypeError, match="edits must be a non-empty dict"):
        hlviz.edit(cnn, {})
    with pytest.raises(TypeError, match="the edit for 'classifier' is a int, not a function"):
        hlviz.edit(cnn, {"classifier": 3})
    with pytest.raises(ValueError, match="ablate value must be a number or 'mean', got 'zero'"):
        hlviz.ablate(value="zero")
    with pytest.raises(LayerSpecError, match="cannot be a float"):
        hlviz.edit(cnn, {1.5: hlviz.ablate()})
    with pytest.raises(
        ShapeMismatchError, match=r"returned \(2,\) for an output of shape \(2, 3\)"
    ):
        with hlviz.edit(cnn, {"classifier": lambda o: o.sum(1)}):
            cnn(images)
    with pytest.raises(
        IndexError, match=r"units \[9\] are out of range for layer 'features.0', which has 4 units"
    ):
        with hlviz.edit(cnn, {"features.0": hlviz.ablate(units=[9])}):
            cnn(images)
    with pytest.raises(ValueError, match="positions= needs an activation with one position axis"):
        with hlviz.edit(cnn, {"features.0": hlviz.ablate(positions=[0])}):
            cnn(images)
    hlviz.testing.assert_no_hooks(cnn)


def test_edit_helpers_have_readable_reprs():
    assert repr(hlviz.ablate(units=[1])) == "ablate(units=[1], value=0.0, positions=None)"
    assert repr(hlviz.steer([1.0], scale=2)) == "steer(scale=2.0, positions=None)"
    assert repr(hlviz.patch(torch.zeros(1))) == "patch(units=None, positions=None)"
