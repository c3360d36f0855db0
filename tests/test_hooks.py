"""record / activations: values, copies, options, structured outputs, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import (
    HlvizWarning,
    LayerNotFoundError,
    NotRecordedError,
    OutputSelectError,
    RecordingStateError,
)

from .zoo import DictOut, Shared, tiny_bert


def reference(model, names, x):
    """Hand-written hooks: the independent reference record() must equal."""
    modules = dict(model.named_modules())
    out, handles = {}, []

    def make(n):
        def hook(module, args, output):  # returns None: a returned value would replace the output
            out.setdefault(n, output.detach().clone())

        return hook

    for n in names:
        handles.append(modules[n].register_forward_hook(make(n)))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def test_record_equals_hand_written_hooks(cnn, images):
    names = hlviz.resolve(cnn, "**")
    with hlviz.record(cnn, "**") as rec:
        logits = cnn(images)
    ref = reference(cnn, names, images)
    assert list(rec) == names
    for n in names:
        torch.testing.assert_close(rec[n], ref[n])
    torch.testing.assert_close(rec["classifier"], logits.detach())


def test_inplace_relu_cannot_change_the_captured_value(cnn, images):
    with hlviz.record(cnn, ["features.0", "features.1"]) as rec:
        cnn(images)
    pre = rec["features.0"]
    assert (pre < 0).any(), "the conv output has negative values before the in-place ReLU"
    torch.testing.assert_close(pre, cnn.features[0](images))
    torch.testing.assert_close(rec["features.1"], pre.clamp(min=0))


def test_values_are_detached_copies_on_the_requested_device_and_dtype(cnn, images):
    with hlviz.record(cnn, "features.4", dtype=torch.float16, to="cpu") as rec:
        cnn(images.requires_grad_())
    value = rec["features.4"]
    assert value.dtype == torch.float16 and not value.requires_grad and value.device.type == "cpu"
    with hlviz.record(cnn, "features.4", to=None) as rec2:
        cnn(images)
    assert rec2["features.4"].dtype == torch.float32


@pytest.mark.parametrize(
    ("how", "shape"), [("mean", (2, 4)), ("max", (2, 4)), ("sum", (2, 4)), ("flatten", (2, 256))]
)
def test_reduce_over_space(cnn, images, how, shape):
    with hlviz.record(cnn, "features.0", reduce=how) as rec:
        cnn(images)
    full = cnn.features[0](images).detach()
    assert tuple(rec["features.0"].shape) == shape
    expected = {
        "mean": full.mean((2, 3)),
        "max": full.amax((2, 3)),
        "sum": full.sum((2, 3)),
        "flatten": full.flatten(1),
    }[how]
    torch.testing.assert_close(rec["features.0"], expected)


def test_reduce_over_tokens_for_batch_first_and_time_first_rnns():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    for batch_first in (True, False):
        rnn = nn.GRU(4, 6, batch_first=batch_first)
        model = nn.Sequential(rnn)
        inp = x if batch_first else x.transpose(0, 1)
        with hlviz.record(model, "0", reduce="last") as last, torch.no_grad():
            out = model(inp)[0]
        with hlviz.record(model, "0", reduce="mean") as mean, torch.no_grad():
            model(inp)
        seq = out if batch_first else out.transpose(0, 1)
        torch.testing.assert_close(last["0"], seq[:, -1])
        torch.testing.assert_close(mean["0"], seq.mean(1))


def test_reduce_first_and_last_of_a_3d_channels_first_conv():
    conv = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU())
    x = torch.randn(4, 2, 10)
    with hlviz.record(conv, ["0", "1"], reduce="last") as rec:
        out = conv(x)
    torch.testing.assert_close(rec["1"], out[:, :, -1].detach())
    assert rec["0"].shape == (4, 3)


def test_reduce_callable_view_is_still_copied():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    with hlviz.record(model, "0", reduce=lambda t: t[:, :2]) as rec:
        out = model(torch.full((2, 3), -5.0))
    assert (rec["0"] != out[:, :2]).any() or (out[:, :2] >= 0).all()
    torch.testing.assert_close(rec["0"], model[0](torch.full((2, 3), -5.0))[:, :2].detach())


def test_bad_options_raise_before_any_hook(cnn):
    with pytest.raises(
        ValueError,
        match=r"reduce='avg' is not one of 'mean', .*'flatten'\. Or give None .* a callable",
    ):
        hlviz.record(cnn, "features.0", reduce="avg")
    with pytest.raises(ValueError, match="to='gpu0' is not a device"):
        hlviz.record(cnn, "features.0", to="gpu0")
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        hlviz.record(cnn, "features.0", dtype="half")
    with pytest.raises(ValueError, match="grads=True needs the whole forward pass"):
        hlviz.record(cnn, "features.0", grads=True, stop=True)
    hlviz.testing.assert_no_hooks(cnn)


def test_reduce_first_on_an_image_explains(cnn, images):
    with pytest.raises(ValueError, match="reduce='first' takes the first position of a sequence"):
        with hlviz.record(cnn, "features.0", reduce="first"):
            cnn(images)
    hlviz.testing.assert_no_hooks(cnn)


def test_shared_module_gives_one_entry_per_call_and_a_warning():
    model = Shared()
    x = torch.randn(2, 5)
    with pytest.warns(HlvizWarning, match="ran more than once in one forward pass"):
        with hlviz.record(model, ["block", "head"]) as rec:
            model(x)
    calls = rec["block"]
    assert isinstance(calls, list) and len(calls) == 3
    h = x
    for value in calls:
        torch.testing.assert_close(value, model.block(h).detach())
        h = torch.tanh(model.block(h))
    assert rec.calls("head")[0].shape == (2, 2)
    assert rec.summary()["call"].tolist() == [0, 1, 2, 0]


def test_each_forward_pass_replaces_the_previous_one():
    model = Shared()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HlvizWarning)
        with hlviz.record(model, "head") as rec:
            model(torch.zeros(1, 5))
            first = rec["head"]
            model(torch.ones(1, 5))
    assert not torch.equal(first, rec["head"]) and not isinstance(rec["head"], list)


def test_lstm_tuple_output_default_and_select():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(4, 6, num_layers=2, batch_first=True))
    x = torch.randn(3, 5, 4)
    with torch.no_grad():
        out, (h, c) = model[0](x)
    with hlviz.record(model, "0") as rec:
        model(x)
    torch.testing.assert_close(rec["0"], out)
    with hlviz.record(model, "0", select=(1, 1)) as cell:
        model(x)
    torch.testing.assert_close(cell["0"], c)
    with hlviz.record(model, "0", select=lambda o: o[1][0][-1]) as top:
        model(x)
    torch.testing.assert_close(top["0"], h[-1])


def test_packed_sequence_output_is_padded_batch_first():
    lstm = nn.LSTM(3, 4)
    model = nn.Sequential(lstm)
    seqs = [torch.randn(5, 3), torch.randn(2, 3)]
    packed = nn.utils.rnn.pack_sequence(seqs)
    with hlviz.record(model, "0") as rec:
        model(packed)
    assert rec["0"].shape == (2, 5, 4)
    torch.testing.assert_close(rec["0"][1, 2:], torch.zeros(3, 4))


def test_dict_outputs_and_select_errors():
    model = DictOut()
    x = torch.randn(2, 3)
    with hlviz.record(model, ["enc", "inner"]) as rec:
        out = model(x)
    torch.testing.assert_close(rec["inner"], out["hidden"].detach())
    with hlviz.record(model, "inner", select="z") as rec:
        model(x)
    assert rec["inner"].shape == (2, 6)
    with pytest.raises(
        OutputSelectError, match=r"select='meta' picked str from the output of layer 'inner'"
    ):
        with hlviz.record(model, "inner", select="meta"):
            model(x)
    with pytest.raises(
        OutputSelectError, match="select='q' does not index the output of layer 'inner'"
    ):
        with hlviz.record(model, "inner", select="q"):
            model(x)
    hlviz.testing.assert_no_hooks(model)


def test_non_tensor_output_without_select():
    class Meta(nn.Module):
        def forward(self, x):
            return {"note": "text", "n": 3}

    model = nn.Sequential(nn.Linear(2, 2), Meta())
    with pytest.raises(
        OutputSelectError,
        match=r"layer '1' returned dict\{'note': str, 'n': int\}, which holds no tensor\. Pass select=",
    ):
        with hlviz.record(model, "1"):
            model(torch.zeros(1, 2))
    hlviz.testing.assert_no_hooks(model)


def test_inputs_are_recorded(cnn, images):
    with hlviz.record(cnn, "classifier", inputs=True) as rec:
        cnn(images)
    torch.testing.assert_close(
        rec.inputs["classifier"], cnn.pool(cnn.features(images)).flatten(1).detach()
    )
    with pytest.raises(RecordingStateError, match="pass grads=True"):
        rec.grads  # noqa: B018
    with pytest.raises(RecordingStateError, match="pass inputs=True"):
        hlviz.activations(cnn, images, "classifier").inputs  # noqa: B018


def test_inputs_given_as_keywords_are_recorded():
    class KwCaller(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 3)

        def forward(self, x):
            return self.inner(input=x)  # keyword only: args is empty in the hook

    model = KwCaller()
    x = torch.randn(2, 3)
    with hlviz.record(model, "inner", inputs=True) as rec:
        model(x)
    torch.testing.assert_close(rec.inputs["inner"], x)


def test_gradients_through_tensor_hooks_match_autograd(cnn, images):
    x = images.clone().requires_grad_()
    with hlviz.record(cnn, ["features.0", "features.2", "classifier"], grads=True) as rec:
        logits = cnn(x)
        logits[:, 1].sum().backward()
    # reference: autograd.grad w.r.t. the conv outputs of a copy whose ReLUs are not in place
    import copy

    twin = copy.deepcopy(cnn)
    for i in (1, 3):
        twin.features[i].inplace = False
    acts = {}
    hs = [
        twin.features[i].register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(i, o))
        for i in (0, 2)
    ]
    try:
        out = twin(x)
    finally:
        for h in hs:
            h.remove()
    g0, g2 = torch.autograd.grad(out[:, 1].sum(), [acts[0], acts[2]])
    torch.testing.assert_close(rec.grads["features.0"], g0)
    torch.testing.assert_close(rec.grads["features.2"], g2)
    assert rec.grads["classifier"][:, 1].eq(1).all() and rec.grads["classifier"][:, 0].eq(0).all()
    assert list(rec.grads) == ["features.0", "features.2", "classifier"]
    hlviz.testing.assert_no_hooks(cnn)


def test_gradient_missing_explains(cnn, images):
    with torch.no_grad(), hlviz.record(cnn, "features.0", grads=True) as rec:
        cnn(images)
    with pytest.raises(
        NotRecordedError, match=r"no gradient was recorded for 'features.0': call .backward\(\)"
    ):
        rec.grads["features.0"]
    with pytest.raises(RecordingStateError, match="pass grads=True"):
        hlviz.activations(cnn, images, "features.0").grads  # noqa: B018


def test_reading_before_any_forward_and_unknown_layers(cnn, images):
    rec = hlviz.record(cnn, "features.0")
    with pytest.raises(NotRecordedError, match="nothing has been recorded yet"):
        rec["features.0"]
    with rec:
        pass
    with pytest.raises(NotRecordedError, match="hooks exist only inside it"):
        rec["features.0"]
    with rec:
        cnn(images)
    with pytest.raises(
        LayerNotFoundError, match=r"'classifier' is not among the recorded layers \['features.0'\]"
    ):
        rec["classifier"]
    assert "features.0" in rec and "classifier" not in rec and len(rec) == 1
    assert rec["module.features.0"] is rec["features.0"]


def test_layer_that_did_not_run_explains():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    model = Skips()
    with hlviz.record(model, ["used", "unused"]) as rec:
        model(torch.zeros(1, 2))
    with pytest.raises(
        NotRecordedError, match="layer 'unused' did not run during the last forward pass"
    ):
        rec["unused"]
    assert list(rec) == ["used"]


def test_stop_ends_the_forward_pass_early(cnn, images):
    seen = []
    handle = cnn.classifier.register_forward_hook(lambda *a: seen.append(1))
    try:
        with hlviz.record(cnn, "features.2", stop=True) as rec:
            cnn(images)
            seen.append("after")  # skipped: the stop exception leaves the with-block
        assert seen == [] and rec["features.2"].shape == (2, 6, 8, 8)
        acts = hlviz.activations(cnn, images, ["features.0", "features.4"], stop=True)
        assert seen == [] and set(acts) == {"features.0", "features.4"}
        hlviz.activations(cnn, images, ["features.0"])  # the default runs the whole model
        assert seen == [1]
        hlviz.testing.assert_no_hooks(cnn, ignore=[handle])
    finally:
        handle.remove()


def test_activations_takes_tuples_and_mappings():
    class TwoArgs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, a, b=None):
            return self.lin(a + (0 if b is None else b))

    model = TwoArgs()
    a, b = torch.ones(1, 3), torch.ones(1, 3)
    r1 = hlviz.activations(model, (a, b), "lin")
    r2 = hlviz.activations(model, {"a": a, "b": b}, "lin")
    torch.testing.assert_close(r1["lin"], r2["lin"])
    with pytest.raises(ValueError, match="hlviz.activations runs without gradients"):
        hlviz.activations(model, a, "lin", grads=True)


def test_entering_twice_is_refused(cnn):
    rec = hlviz.record(cnn, "features.0")
    with rec, pytest.raises(RecordingStateError, match="already active"), rec:
        pass
    hlviz.testing.assert_no_hooks(cnn)


def test_summary_and_repr(cnn, images):
    rec = hlviz.record(cnn, ["features.0", "classifier"])
    assert repr(rec) == "Recording(Blocks; nothing recorded yet)"
    with rec:
        cnn(images)
    assert repr(rec) == "Recording(Blocks; features.0: (2, 4, 8, 8), classifier: (2, 3))"
    table = rec.summary()
    assert table["shape"].tolist() == [(2, 4, 8, 8), (2, 3)]
    assert table["MB"].tolist() == [round(2 * 4 * 64 * 4 / 2**20, 3), round(24 / 2**20, 3)]


def test_recording_does_not_keep_the_model_alive(images):
    import gc
    import weakref

    from .zoo import Blocks

    model = Blocks()
    with hlviz.record(model, "features.0") as rec:
        model(images)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert rec["features.0"].shape == (2, 4, 8, 8)
    with pytest.raises(
        RecordingStateError, match="the model of this hook context has been deleted"
    ):
        with rec:
            pass


def test_transformer_encoder_layers_are_recorded_in_eval_and_no_grad():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    before = torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad(), hlviz.record(model, ["layers.0.self_attn", "layers.*"]) as rec:
        out = model(x, src_key_padding_mask=mask)
    assert torch.backends.mha.get_fastpath_enabled() == before
    assert rec["layers.0.self_attn"].shape == (2, 5, 8)
    assert rec["layers.1"].shape == (2, 5, 8) and not rec["layers.1"].is_nested
    torch.testing.assert_close(rec["layers.1"][0], out[0])
    hlviz.testing.assert_no_hooks(model)


def test_hugging_face_bert_from_a_small_random_config():
    torch.manual_seed(0)
    bert = tiny_bert()
    batch = {
        "input_ids": torch.randint(0, 50, (2, 7)),
        "attention_mask": torch.ones(2, 7, dtype=torch.long),
    }
    with torch.no_grad():  # transformers installs hooks of its own on the first forward pass
        bert(**batch, output_hidden_states=True)
    own = hlviz.testing.list_hooks(bert)
    assert own and not any(h["hlviz"] for h in own)
    with torch.no_grad(), hlviz.record(bert, ["encoder.layer.*", "embeddings"]) as rec:
        out = bert(**batch, output_hidden_states=True)
    for i in range(2):
        torch.testing.assert_close(rec[f"encoder.layer.{i}"], out.hidden_states[i + 1])
    torch.testing.assert_close(rec["embeddings"], out.hidden_states[0])
    with hlviz.edit(bert, {"encoder.layer.1": hlviz.ablate()}), torch.no_grad():
        ablated = bert(**batch)
    assert type(ablated) is type(out) and ablated.last_hidden_state.abs().sum() == 0
    hlviz.testing.assert_no_hooks(bert, ignore=own)


def test_one_training_mode_warning_for_every_verb_that_needs_eval():
    from hlviz.hooks.checks import noisy_modules, warn_if_training

    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.Dropout(0.0))
    assert noisy_modules(model) == ["1", "2"]  # dropout with p=0 changes nothing
    with pytest.warns(
        HlvizWarning,
        match=r"^Sequential is in training mode \('1' and 1 more: dropout or batch norm\): "
        r"the maps are random and differ from evaluation\. Call model.eval\(\) first\.$",
    ):
        warn_if_training(model, "the maps")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_training(model.eval(), "the maps")
        warn_if_training(nn.Linear(2, 2), "the maps")  # training mode, but nothing noisy
    lens_model = hlviz.models.CharGPT(vocab_size=8, d_model=8, n_heads=2, n_layers=1, dropout=0.1)
    with pytest.warns(HlvizWarning, match="the decoded residual streams are random"):
        hlviz.logit_lens(lens_model, torch.randint(0, 8, (1, 4)))


def test_one_check_for_a_layer_that_ran_more_than_once():
    from hlviz.errors import LayerRepeatedError, OptionError, ShapeMismatchError
    from hlviz.hooks.checks import once

    x = torch.ones(2)
    assert once("fc", x, "it is needed") is x
    with pytest.raises(LayerRepeatedError) as info:
        once("fc", [x, x, x], "the lens decodes one")
    assert isinstance(info.value, OptionError) and isinstance(info.value, ShapeMismatchError)
    assert str(info.value) == (
        "layer 'fc' ran 3 times in one forward pass, and the lens decodes one; choose a module "
        "that runs once, or use hlviz.record and rec.calls('fc') to read each call."
    )
    model = Shared().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HlvizWarning)  # record's own warning, tested above
        with pytest.raises(LayerRepeatedError, match="layer 'block' ran 3 times.*collect keeps"):
            hlviz.collect(model, torch.randn(4, 5), "block", progress=False)
        with pytest.raises(LayerRepeatedError, match="layer 'block' ran 3 times.*logit lens"):
            hlviz.logit_lens(
                model,
                torch.randn(1, 3, 5),
                layers=["block"],
                norm=nn.Identity(),
                unembed=nn.Identity(),
            )
    hlviz.testing.assert_no_hooks(model)


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_repro_compile_hooks_after_warmup(backend) -> None:
    """After a compiled model has run once, record and edit still see its layers."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    compiled = torch.compile(net, backend=backend)
    x = torch.randn(3, 4)
    compiled(x)  # warm-up: compiled before any hook existed
    saved = compiled.__dict__["forward"]
    with hlviz.record(compiled, "0") as rec:
        compiled(x)
    torch.testing.assert_close(rec["0"], net[0](x).detach())
    with hlviz.edit(compiled, {"0": hlviz.ablate()}):
        with hlviz.record(compiled, "1") as inner:  # nested: restored once, by the outer
            edited = compiled(x)
        assert compiled.__dict__["forward"] is not saved
    torch.testing.assert_close(inner["1"], torch.zeros(3, 8))
    torch.testing.assert_close(edited, net[2](torch.zeros(3, 8)).detach())
    assert compiled.__dict__["forward"] is saved  # the compiled code runs again afterwards
    torch.testing.assert_close(compiled(x), net(x), atol=1e-5, rtol=1e-5)
    hlviz.testing.assert_no_hooks(net)


def test_compiled_in_place_and_compiled_submodules_are_hooked() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    net.compile(backend="eager")
    x = torch.randn(3, 4)
    net(x)
    impl = net.__dict__["_compiled_call_impl"]
    assert hlviz.activations(net, x, "0")["0"].shape == (3, 8)
    assert net.__dict__["_compiled_call_impl"] is impl
    outer = nn.Sequential(torch.compile(nn.Linear(4, 8), backend="eager"), nn.ReLU())
    outer(x)
    with hlviz.edit(outer, {"1": hlviz.ablate(units=[0])}), hlviz.record(outer, "0") as rec:
        outer(x)
    torch.testing.assert_close(rec["0"], outer[0](x).detach())
