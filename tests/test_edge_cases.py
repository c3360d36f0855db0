"""Edge cases found in review: each was a silent wrong value or a misleading error once."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import hlviz
from hlviz.errors import HlvizError, LayerNotFoundError, NotRecordedError, OptionError

from .zoo import Shared, tiny_bert


def test_inputs_are_copied_before_an_inplace_module_changes_them():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    with hlviz.record(model, ["0", "1"], inputs=True) as rec:
        model(torch.randn(3, 4))
    assert (rec.inputs["1"] < 0).any()
    torch.testing.assert_close(rec.inputs["1"], rec["0"])


def test_edits_and_reducers_do_not_keep_modules_alive():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ref = weakref.ref(model[0])
    with hlviz.edit(model, {"0": hlviz.ablate(units=[0])}), hlviz.record(model, "0", reduce="mean"):
        model(torch.randn(2, 5, 4))
    del model
    gc.collect()
    assert ref() is None


class PackedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5, batch_first=True)

    def forward(self, packed):
        return self.rnn(packed)


def _packed():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3)
    return x, pack_padded_sequence(x, torch.tensor([4, 2]), batch_first=True)


def test_reducers_skip_the_padding_of_packed_sequences():
    model = PackedLSTM()
    x, packed = _packed()
    with torch.no_grad():
        full, _ = model.rnn(x[:1])
        short, (h_short, _) = model.rnn(x[1:, :2])
    with hlviz.record(model, "rnn", reduce="last") as last, torch.no_grad():
        _, (h_n, _) = model(packed)
    with hlviz.record(model, "rnn", reduce="mean") as mean, torch.no_grad():
        model(packed)
    torch.testing.assert_close(last["rnn"], h_n[0])
    torch.testing.assert_close(last["rnn"][1], h_short[0, 0])
    torch.testing.assert_close(mean["rnn"][1], short[0].mean(0))
    torch.testing.assert_close(mean["rnn"][0], full[0].mean(0))


def test_gradients_of_a_packed_output():
    model = PackedLSTM()
    _, packed = _packed()
    with hlviz.record(model, "rnn", grads=True) as rec:
        out, _ = model(packed)
        out.data.sum().backward()
    grad = rec.grads["rnn"]
    assert grad.shape == (2, 4, 5)
    torch.testing.assert_close(grad[0], torch.ones(4, 5))
    torch.testing.assert_close(grad[1, :2], torch.ones(2, 5))
    torch.testing.assert_close(grad[1, 2:], torch.zeros(2, 5))


def test_activations_and_list_layers_take_a_packed_sequence():
    model = PackedLSTM()
    _, packed = _packed()
    assert hlviz.activations(model, packed, "rnn")["rnn"].shape == (2, 4, 5)
    assert hlviz.list_layers(model, packed).loc[0, "output_shape"].startswith("(packed")


def test_layers_inside_a_sequence_first_transformer_reduce_over_time():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1, enable_nested_tensor=False)
    x = torch.randn(5, 3, 8)  # (T, N, D)
    names = ["layers.0", "layers.0.linear1", "layers.0.norm1", "layers.0.dropout"]
    with (
        hlviz.record(enc, names, reduce="mean") as rec,
        hlviz.record(enc, names) as full,
        torch.no_grad(),
    ):
        enc.eval()(x)
    for name in names:
        torch.testing.assert_close(rec[name], full[name].mean(0))
    with (
        hlviz.edit(enc, {"layers.0.norm1": hlviz.ablate(positions=[0])}),
        hlviz.record(enc, "layers.0.norm1") as ed,
    ):
        enc(x)
    assert ed["layers.0.norm1"][0].abs().sum() == 0 and ed["layers.0.norm1"][1:].abs().sum() > 0


def test_other_threads_are_not_recorded_or_stopped():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    results = {}

    def other():
        results["out"] = model(torch.ones(1, 2)).shape

    with hlviz.record(model, "0", stop=True) as rec:
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        model(torch.zeros(1, 2))
    assert results["out"] == (1, 2)
    torch.testing.assert_close(rec["0"], model[0](torch.zeros(1, 2)).detach())


def test_activations_records_every_call_by_default():
    model = Shared()
    with pytest.warns(hlviz.HlvizWarning):
        acts = hlviz.activations(model, torch.randn(2, 5), "block")
    assert len(acts.calls("block")) == 3


def test_nested_edits_apply_inner_on_top_of_outer():
    model = nn.Sequential(nn.Linear(2, 2))
    x = torch.zeros(1, 2)
    with hlviz.edit(model, {"0": hlviz.patch(torch.full((1, 2), 5.0))}):
        with hlviz.edit(model, {"0": hlviz.steer([100.0, 100.0])}), hlviz.record(model, "0") as rec:
            model(x)
    torch.testing.assert_close(rec["0"], torch.full((1, 2), 105.0))
    hlviz.testing.assert_no_hooks(model)


def test_an_edit_function_with_a_default_argument_gets_only_the_tensor():
    def scale(t, factor=2.0):
        return t * factor

    model = nn.Sequential(nn.Linear(2, 2))
    x = torch.ones(1, 2)
    with hlviz.edit(model, {"0": scale}), torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, 2 * model(x).detach())


def test_int_select_on_a_model_output_in_record_and_edit():
    outer = nn.ModuleDict({"bert": tiny_bert(layers=1, hidden=8, vocab=30)})
    ids = torch.randint(0, 30, (1, 4))
    with hlviz.edit(outer, {"bert": hlviz.ablate()}, select=0), torch.no_grad():
        out = outer["bert"](input_ids=ids)
    assert out.last_hidden_state.abs().sum() == 0 and out.pooler_output.abs().sum() > 0


def test_recording_behaves_like_a_mapping_before_and_after():
    model = nn.Sequential(nn.Linear(2, 2))
    rec = hlviz.record(model, "0", grads=True)
    assert rec.get("0", "default") == "default" and "0" not in rec
    with rec, torch.no_grad():
        model(torch.zeros(1, 2))
    assert "module.0" in rec and rec.get("0") is rec["0"]
    assert "0" not in rec.grads and rec.grads.get("0") is None
    assert len({rec}) == 1 and rec == rec


def test_gradients_with_one_call_under_no_grad():
    lin = nn.Linear(2, 2)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            with torch.no_grad():
                self.lin(x)
            return self.lin(x)

    model = Twice()
    with pytest.warns(hlviz.HlvizWarning), hlviz.record(model, "lin", grads=True) as rec:
        model(torch.ones(1, 2)).sum().backward()
    first, second = rec.grads["lin"]
    assert first is None and torch.equal(second, torch.ones(1, 2))


def test_a_direct_call_after_a_model_pass_starts_a_new_pass():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with hlviz.record(model, ["0", "1"]) as rec:
        model(torch.zeros(1, 2))
        model[0](torch.ones(1, 2))
    assert not isinstance(rec["0"], list) and "1" not in rec
    torch.testing.assert_close(rec["0"], model[0](torch.ones(1, 2)).detach())
    with hlviz.record(model, "1") as sub:  # calling a submodule directly is a pass too
        model[:2](torch.zeros(1, 2))
    assert sub["1"].shape == (1, 2)


def test_fastpath_is_restored_when_contexts_exit_out_of_order():
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1, enable_nested_tensor=False
    )
    before = torch.backends.mha.get_fastpath_enabled()
    a, b = hlviz.record(enc, "layers.0"), hlviz.record(enc, "layers.0")
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert torch.backends.mha.get_fastpath_enabled() is False
    b.__exit__(None, None, None)
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_option_errors_are_hlviz_errors_and_name_the_fix():
    model = nn.Sequential(nn.Linear(2, 2))
    if not torch.cuda.is_available():
        with pytest.raises(
            OptionError, match="to='cuda' asks for a GPU copy but CUDA is not available"
        ):
            hlviz.record(model, "0", to="cuda")
    for bad in (
        lambda: hlviz.record(model, "0", reduce="avg"),
        lambda: hlviz.ablate(value="x"),
        lambda: hlviz.edit(model, {"0": 3}),
        lambda: hlviz.ablate(units="ab"),
    ):
        with pytest.raises(HlvizError):
            bad()
    with hlviz.edit(model, {"0": hlviz.ablate(units=1)}), torch.no_grad():
        assert model(torch.ones(1, 2))[0, 1] == 0


def test_reading_with_a_pattern_that_selects_several_layers_explains():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with hlviz.record(model, "*") as rec:
        model(torch.zeros(1, 2))
    with pytest.raises(LayerNotFoundError, match=r"rec\[...\] reads one layer, but '\*' selects 2"):
        rec["*"]
    with pytest.raises(NotRecordedError):
        hlviz.record(model, "0")["0"]
