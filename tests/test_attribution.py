"""hlviz.attribute: the values are Captum's (called directly), and what Captum lets slip
(targets, token ids, baselines, batch sizes, deltas, RNNs, Grad-CAM shapes) is checked."""

from __future__ import annotations

import warnings

import captum.attr as ca
import pytest
import torch
from torch import nn

import hlviz
from hlviz.attribution import Attribution, attribute, token_baseline
from hlviz.attribution import forward as af
from hlviz.attribution.core import MAX_STEPS
from hlviz.errors import (
    BaselineError,
    ConvergenceWarning,
    HlvizWarning,
    LayerNotFoundError,
    LayerShapeError,
    OptionError,
    OptionTypeError,
    ShapeMismatchError,
    TargetError,
    TokenInputError,
)

from .zoo import Blocks, tiny_bert

TOL = dict(atol=1e-6, rtol=1e-6)


def mlp(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 3)).eval()


class TokenLSTM(nn.Module):
    """Own token model: embedding -> LSTM -> head on the last step."""

    def __init__(self, vocab: int = 20):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8, padding_idx=0)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        out, _ = self.rnn(self.emb(ids))
        return self.head(out[:, -1])


class SeqModel(nn.Module):
    """An RNN over float sequences (N, T, 3) that notes cuDNN's flag and its mode per call."""

    def __init__(self, kind):
        super().__init__()
        self.rnn = kind(3, 6, batch_first=True)
        self.head = nn.Linear(6, 2)
        self.seen = []

    def forward(self, x):
        self.seen.append((torch.backends.cudnn.enabled, self.training))
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Tokens2D(nn.Module):
    """A (N, T, C) layer 'proj' and, for Captum's reference, the same with an explicit permute."""

    def __init__(self, permute: bool = False):
        super().__init__()
        torch.manual_seed(3)
        self.proj = nn.Linear(4, 6)
        self.perm = _Permute() if permute else nn.Identity()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = self.perm(self.proj(x))  # (N, T, 6), or (N, 6, T) with the permute
        h = h.mean(-1) if isinstance(self.perm, _Permute) else h.mean(1)
        return self.head(torch.relu(h))


class _Permute(nn.Module):
    def forward(self, h):
        return h.permute(0, 2, 1)


@pytest.fixture
def x(images):
    return images + 0.5  # no example equals the zero baseline


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


# --- the tests ------------------------------------------------------------------------


def test_integrated_gradients_completeness_on_a_small_mlp():
    model, x = mlp(), torch.randn(5, 4)
    a = attribute(model, x, target=2, method="integrated_gradients", n_steps=200)
    assert isinstance(a, Attribution) and a.delta.abs().max() < 1e-3
    with torch.no_grad():
        change = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    torch.testing.assert_close(a.values.sum(1), change, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.output_change, change, atol=1e-5, rtol=0)
    assert a.method == "integrated_gradients" and a.target == 2 and a.layer is None


def _captum_cases(model, x, t):
    zeros, xg = torch.zeros_like(x), x.clone().requires_grad_(True)
    conv2, conv4 = model.features[2], model.features[4]
    return {
        "saliency": ({}, lambda: ca.Saliency(model).attribute(xg, target=t)),
        "input_x_gradient": ({}, lambda: ca.InputXGradient(model).attribute(xg, target=t)),
        "integrated_gradients": (
            {"n_steps": 20},
            lambda: ca.IntegratedGradients(model).attribute(
                x, baselines=zeros, target=t, n_steps=20, return_convergence_delta=True
            ),
        ),
        "smoothgrad": (
            {"nt_samples": 4, "stdevs": 0.2, "seed": 7},
            lambda: ca.NoiseTunnel(ca.Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=t
            ),
        ),
        "occlusion": (
            {"window": (1, 2, 2), "strides": (1, 2, 2)},
            lambda: ca.Occlusion(model).attribute(
                x, sliding_window_shapes=(1, 2, 2), strides=(1, 2, 2), baselines=0, target=t
            ),
        ),
        "feature_ablation": (
            {"feature_mask": torch.arange(64).reshape(1, 1, 8, 8) // 8},
            lambda: ca.FeatureAblation(model).attribute(
                x, feature_mask=torch.arange(64).reshape(1, 1, 8, 8) // 8, baselines=0, target=t
            ),
        ),
        "grad_cam": (
            {"layer": "features.4", "upsample": False},
            lambda: ca.LayerGradCam(model, conv4).attribute(x, target=t, relu_attributions=True),
        ),
        "layer_conductance": (
            {"layer": "features.2", "n_steps": 20},
            lambda: ca.LayerConductance(model, conv2).attribute(
                x, baselines=zeros, target=t, n_steps=20, return_convergence_delta=True
            ),
        ),
        "neuron_conductance": (
            {"layer": conv2, "neuron": (1, 2, 3), "n_steps": 20},
            lambda: ca.NeuronConductance(model, conv2).attribute(
                x, neuron_selector=(1, 2, 3), baselines=zeros, target=t, n_steps=20
            ),
        ),
    }


@pytest.mark.parametrize(
    "method",
    [
        "saliency",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
        "occlusion",
        "feature_ablation",
        "grad_cam",
        "layer_conductance",
        "neuron_conductance",
    ],
)
def test_values_equal_captum_called_directly(method, x):
    torch.manual_seed(0)
    model = Blocks().eval()
    t = [0, 2]
    options, direct = _captum_cases(model, x, t)[method]
    state = torch.random.get_rng_state()
    ours = quiet(attribute, model, x, target=t, method=method, **options)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
    torch.manual_seed(7)  # smoothgrad's noise: ours is drawn under seed=7
    theirs = direct()
    if isinstance(theirs, tuple):
        theirs, delta = theirs
        torch.testing.assert_close(ours.delta, delta, **TOL)
        torch.testing.assert_close(ours.output_change, ours.values.flatten(1).sum(1) - delta)
    else:
        assert ours.delta is None
    torch.testing.assert_close(ours.values, theirs.detach(), **TOL)
    hlviz.testing.assert_no_hooks(model)


def test_grad_cam_upsamples_to_the_input_with_captum(x):
    model = Blocks().eval()
    ours = attribute(model, x, target=1, method="grad_cam", layer="features.4")
    raw = ca.LayerGradCam(model, model.features[4]).attribute(x, target=1, relu_attributions=True)
    expected = ca.LayerAttribution.interpolate(raw, (8, 8), "bilinear")
    torch.testing.assert_close(ours.values, expected.detach(), **TOL)
    assert ours.values.shape == (2, 1, 8, 8)


def _bert_classifier():
    transformers = pytest.importorskip("transformers")
    base = tiny_bert()
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(base.config).eval()


def test_layer_integrated_gradients_on_a_hugging_face_model_keeps_special_tokens():
    model = _bert_classifier()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 10, 11, 3, 0]])
    mask = (ids != 0).long()
    batch = {"input_ids": ids, "attention_mask": mask}
    ours = quiet(
        attribute, model, batch, target=1, method="layer_integrated_gradients", n_steps=20,
        special_ids=[2, 3], tokens=[list("abcde"), list("fghij")],
    )  # fmt: skip
    baseline = token_baseline(ids, 0, [2, 3])
    assert baseline.tolist() == [[2, 0, 0, 0, 3], [2, 0, 0, 3, 0]]

    def forward(i, m):
        return model(input_ids=i, attention_mask=m).logits

    emb = model.bert.embeddings.word_embeddings
    theirs, delta = ca.LayerIntegratedGradients(forward, emb).attribute(
        ids,
        baselines=baseline,
        target=1,
        additional_forward_args=(mask,),
        n_steps=20,
        return_convergence_delta=True,
    )
    torch.testing.assert_close(ours.values, theirs.sum(-1).detach(), **TOL)
    torch.testing.assert_close(ours.delta, delta, **TOL)
    assert ours.layer == "bert.embeddings.word_embeddings"  # found by get_input_embeddings()
    assert ours.values.shape == (2, 5) and ours.tokens[1] == list("fghij")
    assert "<span" in ours.to_html()
    by_label = quiet(attribute, model, batch, target="LABEL_1", method="layer_integrated_gradients",
                     n_steps=20, special_ids=[2, 3])  # fmt: skip
    torch.testing.assert_close(by_label.values, ours.values)


def test_layer_integrated_gradients_on_an_own_token_model():
    torch.manual_seed(0)
    model = TokenLSTM().eval()
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 2]])
    ours = quiet(
        attribute, model, ids, target=[0, 2], method="layer_integrated_gradients", layer="emb",
        pad_id=0, special_ids=[1], n_steps=16,
    )  # fmt: skip
    theirs, delta = ca.LayerIntegratedGradients(model, model.emb).attribute(
        ids,
        baselines=token_baseline(ids, 0, [1]),
        target=[0, 2],
        n_steps=16,
        return_convergence_delta=True,
    )
    torch.testing.assert_close(ours.values, theirs.sum(-1).detach(), **TOL)
    torch.testing.assert_close(ours.delta, delta, **TOL)
    with pytest.warns(HlvizWarning, match=r"no special token ids are known, so the PAD baseline"):
        quiet(attribute, model, ids, target=0, method="layer_integrated_gradients", layer="emb",
              baseline="pad", pad_id=0, n_steps=4)  # fmt: skip


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_rnn_backward_in_eval_mode_with_cudnn_off_for_the_call(kind):
    torch.manual_seed(0)
    model = SeqModel(kind).eval()
    xs = torch.randn(2, 5, 3)
    before = torch.backends.cudnn.enabled
    ours = quiet(attribute, model, xs, target=1, method="integrated_gradients", n_steps=8)
    captum_calls = model.seen[1:]  # the first call is hlviz's one-example probe
    assert captum_calls and all(flag is False and mode is False for flag, mode in captum_calls)
    assert torch.backends.cudnn.enabled == before and not model.training
    theirs = ca.IntegratedGradients(model).attribute(xs, target=1, n_steps=8)
    torch.testing.assert_close(ours.values, theirs.detach(), **TOL)
    cam = attribute(model, xs, target=1, method="grad_cam", layer="rnn", channel_dim=-1)
    assert cam.values.shape == (2, 1, 5)
    hlviz.testing.assert_no_hooks(model)


def test_grad_cam_reads_the_channel_axis_from_the_layout():
    """A (N, T, C) linear layer over positions: the layout (axis 2 matches the layer's width 6)
    puts the channels last, so Grad-CAM maps the 7 positions, as Captum does on an explicit
    permute; channel_dim= overrides, and an ambiguous layer asks for it."""
    model, xs = Tokens2D().eval(), torch.randn(3, 7, 4)
    ours = attribute(model, xs, target=0, method="grad_cam", layer="proj")
    ref = Tokens2D(permute=True).eval()
    theirs = ca.LayerGradCam(ref, ref.perm).attribute(xs, target=0, relu_attributions=True)
    torch.testing.assert_close(ours.values, theirs.detach(), **TOL)
    assert ours.values.shape == (3, 1, 7)
    given = attribute(model, xs, target=0, method="grad_cam", layer="proj", channel_dim=-1)
    torch.testing.assert_close(given.values, ours.values, **TOL)
    hlviz.testing.assert_no_hooks(model)
    with pytest.raises(LayerShapeError, match=r"outputs \(1, 2\), which has no spatial or time"):
        attribute(model, xs, target=0, method="grad_cam", layer="head")
    with pytest.raises(OptionError, match=r"channel_dim=5 is not an axis of layer 'proj'"):
        attribute(model, xs, target=0, method="grad_cam", layer="proj", channel_dim=5)
    square = Tokens2D().eval()  # (N, 6, 6): both axes match the width, nothing tells them apart
    square.proj = nn.Linear(4, 6)
    with pytest.raises(LayerShapeError, match=r"outputs \(1, 6, 6\): which axis holds its channels "
                       r"cannot be told from the tensor \(layer 'proj' was read as \(N, T, D\).*"
                       r"Pass channel_dim=1 if its 6 are the channels.*or channel_dim=-1"):  # fmt: skip
        attribute(square, torch.randn(2, 6, 4), target=0, method="grad_cam", layer="proj")
    seq_first = nn.Sequential(nn.LSTM(4, 5))
    with pytest.raises(LayerShapeError, match=r"is sequence-first \(T, N, C\)"):
        attribute(nn.Sequential(seq_first, _First()), xs, target=0, method="grad_cam", layer="0.0")


class _Audio(nn.Module):
    """issue 22, gradcam_conv1d_relu: a Conv1d front end as in audio models."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.feat = nn.Sequential(nn.Conv1d(1, 8, 9, stride=4), nn.ReLU(),
                                  nn.Conv1d(8, 16, 5, stride=2), nn.ReLU())  # fmt: skip
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.feat(x).mean(-1))


def test_grad_cam_on_the_relu_after_a_conv1d_maps_time_like_the_conv():
    """issue 22, gradcam_conv1d_relu: the ReLU after a Conv1d (N, C=16, L=47) was refused as
    a sequence '(N, T, C)' of '16 positions', and the suggested channel_dim=-1 mapped channels."""
    model, wav = _Audio().eval(), torch.randn(3, 1, 400)
    relu = attribute(model, wav, target=0, method="grad_cam", layer="feat.3")
    conv = attribute(model, wav, target=0, method="grad_cam", layer="feat.2")
    assert relu.values.shape == conv.values.shape == (3, 1, 47)
    theirs = ca.LayerGradCam(model, model.feat[3]).attribute(wav, target=0, relu_attributions=True)
    torch.testing.assert_close(relu.values, theirs.detach(), **TOL)
    hlviz.testing.assert_no_hooks(model)


class _First(nn.Module):
    def forward(self, out):
        return out[0][-1]


# --- the forward wrapper and targets ----------------------------------------------------------


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        y = self.lin(x)
        return y, {"hidden": y * 2}


def test_tuple_and_dict_outputs_and_output_selection():
    model, xs = TupleOut().eval(), torch.randn(2, 4, requires_grad=True)
    a = attribute(model, xs, target=1, method="saliency")
    b = ca.Saliency(model.lin).attribute(xs, target=1)
    torch.testing.assert_close(a.values, b)
    c = attribute(model, xs, target=1, method="saliency", output=(1, "hidden"))
    torch.testing.assert_close(c.values, 2 * b)
    d = attribute(model, xs, target=None, method="saliency", output=lambda out: out[0].sum(1))
    torch.testing.assert_close(d.values, ca.Saliency(lambda v: model.lin(v).sum(1)).attribute(xs))
    with pytest.raises(TargetError, match=r"returned dict with keys \['z'\] and no 'logits'"):
        attribute(_DictModel(), xs, target=0, method="saliency")


class _DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return {"z": self.lin(x)}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (None, r"target is required: the model's output has shape \(N, 3\) per batch, 3 scores"),
        (3, r"target 3 is out of range for the output of shape \(N, 3\) \(valid indices -3..2\)"),
        ([0, 1, 2], r"target is a list of 3 but the batch has 2 examples"),
        ((0, 1), r"target \(0, 1\) has 2 indices but the output has shape \(N, 3\): give 1"),
        ("cat", r"target='cat' is not a label of this model"),
        (1.5, r"target 1.5 is not an index"),
        (torch.zeros(2, 2, dtype=torch.long), r"a target tensor must be 0-D or 1-D"),
    ],
)
def test_target_errors(target, message):
    with pytest.raises(TargetError, match=message):
        attribute(mlp(), torch.randn(2, 4), target=target, method="saliency")


def test_targets_that_are_fine():
    model, xs = mlp(), torch.randn(2, 4)
    neg = attribute(model, xs, target=-1, method="saliency")
    assert neg.target == 2
    per = attribute(model, xs, target=torch.tensor([0, 2]), method="saliency")
    assert per.target == [0, 2]
    scalar = nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    assert attribute(scalar, xs, target=None, method="saliency").values.shape == (2, 4)
    with pytest.raises(TargetError, match=r"one score per example already: use target=None"):
        attribute(scalar, xs, target=0, method="saliency")


# --- token ids, baselines ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["saliency", "integrated_gradients", "smoothgrad", "layer_conductance"]
)
def test_token_ids_to_a_gradient_method_name_the_token_route(method):
    kwargs = {"layer": "rnn"} if method == "layer_conductance" else {}
    with pytest.raises(
        TokenInputError,
        match=r"integer token ids \(torch.int64\), which have no gradient. Attribute tokens with "
        r"method='layer_integrated_gradients' and layer= the embedding that reads the ids \(one "
        r"of emb\) .*, or with a method that needs no "
        r"gradients \('occlusion', 'feature_ablation'\)",
    ):
        attribute(TokenLSTM(), torch.tensor([[1, 2, 3]]), target=0, method=method, **kwargs)


def _tiny_t5():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                                pad_token_id=0, eos_token_id=1)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.T5ForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(2, 100, (2, 7), generator=gen),
        "decoder_input_ids": torch.randint(2, 100, (2, 5), generator=gen),
    }
    return model, batch


def test_t5_layer_integrated_gradients_defaults_to_the_embedding_that_runs():
    """issue 22, t5_lig_default_layer: T5's get_input_embeddings() is `shared`, which is never
    called (encoder.embed_tokens shares its weight): was a raw Captum AssertionError."""
    model, batch = _tiny_t5()
    assert hlviz.list_layers(model, batch).set_index("name").loc["shared", "output_shape"] == (
        "(not run)"
    )
    opts = dict(target=(4, 3), method="layer_integrated_gradients", pad_id=0, n_steps=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = attribute(model, batch, **opts)
        named = attribute(model, batch, layer="encoder.embed_tokens", **opts)
    assert ours.layer == "encoder.embed_tokens" and ours.values.shape == (2, 7)
    torch.testing.assert_close(ours.values, named.values, **TOL)
    # the reference: Captum called directly on the encoder's embedding
    fwd = af.ModelForward(model, None, "input_ids", ["decoder_input_ids"])
    ids = batch["input_ids"]
    lig = ca.LayerIntegratedGradients(fwd, model.encoder.embed_tokens)
    ref = lig.attribute(ids, baselines=torch.zeros_like(ids), target=(4, 3), n_steps=8,
                        additional_forward_args=(batch["decoder_input_ids"],))  # fmt: skip
    torch.testing.assert_close(ours.values, ref.sum(-1).detach(), **TOL)
    with pytest.raises(OptionError, match=r"layer 'shared' \(Embedding\) did not run when the "
                       r"model was called on these inputs.*'\(not run\)'\)\. Embeddings sharing "
                       r"its weight: 'encoder.embed_tokens', 'decoder.embed_tokens'; pass the one "
                       r"that reads these inputs, e.g. layer='encoder.embed_tokens'"):  # fmt: skip
        attribute(model, batch, layer="shared", **opts)
    hlviz.testing.assert_no_hooks(model)


class _Tied(nn.Module):
    """Two embeddings tied to `shared`, each reading its own ids; `shared` never runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Embedding(10, 4)
        self.a, self.b = nn.Embedding(10, 4), nn.Embedding(10, 4)
        self.a.weight = self.b.weight = self.shared.weight
        self.aux = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def get_input_embeddings(self):
        return self.shared

    def forward(self, ids, other=None):
        other = ids if other is None else other
        return self.head((self.a(ids) + self.b(other)).mean(1))


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.aux = nn.Linear(4, 2), nn.Linear(4, 4)

    def forward(self, v):
        return self.body(v)


def test_a_layer_that_never_runs_is_named_not_left_to_captum():
    model, ids = _Tied().eval(), torch.tensor([[1, 2, 3], [4, 5, 6]])
    # both tied embeddings read the ids: no one to choose, the candidates are listed
    with pytest.raises(OptionError, match=r"the default layer, model.get_input_embeddings\(\) = "
                       r"'shared' \(Embedding\), did not run.*sharing its weight: 'a', 'b'"):  # fmt: skip
        attribute(model, ids, target=0, method="layer_integrated_gradients", n_steps=4, pad_id=0)
    # only `a` reads the attributed ids: it is taken
    other = torch.tensor([[7, 8, 9], [7, 8, 9]])
    picked = attribute(model, (ids, other), target=0, method="layer_integrated_gradients",
                       n_steps=4, pad_id=0, special_ids=[])  # fmt: skip
    assert picked.layer == "a"
    x = torch.randn(2, 3, 4)
    floats = _Unused().eval()  # its `aux` is never called
    for method, extra in (("layer_conductance", {}), ("neuron_conductance", {"neuron": (0, 0)})):
        with pytest.raises(OptionError, match=r"layer 'aux' \(Linear\) did not run when the model "
                           r"was called on these inputs.* Pass layer= a module that runs"):  # fmt: skip
            attribute(floats, x, target=(0, 0), method=method, layer="aux", **extra)
    hlviz.testing.assert_no_hooks(model)
    hlviz.testing.assert_no_hooks(floats)


def _occlude_by_hand(score, ids, fill):
    """``score(ids) - score(ids with token t replaced by fill)`` for every position, a loop."""
    out = torch.zeros(ids.shape, dtype=torch.float32)
    with torch.no_grad():
        intact = score(ids)
        for t in range(ids.shape[1]):
            hidden = ids.clone()
            hidden[:, t] = fill
            out[:, t] = intact - score(hidden)
    return out


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation"])
def test_perturbation_methods_take_token_ids_and_equal_a_hand_written_loop(method):
    torch.manual_seed(0)
    model = TokenLSTM().eval()
    ids = torch.tensor([[1, 5, 6, 7, 3], [2, 8, 9, 4, 4]])
    targets = [2, 0]
    a = attribute(model, ids, target=targets, method=method, baseline=0, special_ids=[],
                  perturbations_per_eval=3)  # fmt: skip
    expected = _occlude_by_hand(lambda v: model(v)[torch.arange(2), targets], ids, 0)
    torch.testing.assert_close(a.values, expected, atol=1e-6, rtol=1e-5)
    assert a.values.shape == (2, 5) and a.per_position().shape == (2, 5) and a.delta is None
    tokens = [list("abcde"), list("fghij")]
    named = attribute(model, ids, target=targets, method=method, baseline=0, special_ids=[],
                      tokens=tokens)  # fmt: skip
    assert named.tokens == tokens and named.to_html().count('class="hlviz-token"') == 10
    hlviz.testing.assert_no_hooks(model)


class _NextChar(nn.Module):
    """A character model: (N, T) ids -> (N, T, vocab) logits, as CharLSTM gives."""

    def __init__(self, vocab: int = 7):
        super().__init__()
        self.emb = nn.Embedding(vocab, 6)
        self.rnn = nn.GRU(6, 6, batch_first=True)
        self.head = nn.Linear(6, vocab)

    def forward(self, ids):
        return self.head(self.rnn(self.emb(ids))[0])


def test_occlusion_over_time_is_attribute_on_token_ids():
    """What ``hlviz.sequences.occlusion_over_time`` did: log p(next character) at the last
    step minus its value with character t replaced by a fill character."""
    torch.manual_seed(1)
    model = _NextChar().eval()
    ids = torch.randint(1, 7, (3, 9))
    targets, fill = [4, 0, 2], 0
    scorer = nn.Sequential(model, nn.LogSoftmax(dim=-1))
    a = attribute(scorer, ids, target=targets, method="occlusion", output=lambda out: out[:, -1],
                  baseline=fill, special_ids=[], perturbations_per_eval=9)  # fmt: skip

    def logp(v):
        return torch.log_softmax(model(v)[:, -1].float(), -1)[torch.arange(3), targets]

    torch.testing.assert_close(a.values, _occlude_by_hand(logp, ids, fill), atol=1e-6, rtol=1e-5)
    with pytest.raises(BaselineError, match=r"no PAD token id is known for the token baseline"):
        attribute(model, ids, target=targets, method="occlusion", output=lambda out: out[:, -1])
    with pytest.raises(OptionError, match=r"perturbations_per_eval must be an int >= 1"):
        attribute(scorer, ids, target=targets, method="occlusion", output=lambda out: out[:, -1],
                  baseline=fill, special_ids=[], perturbations_per_eval=0)  # fmt: skip


def test_attribute_leaves_the_random_state_alone_and_smoothgrad_repeats_for_a_seed(x):
    model = Blocks().eval()
    state = torch.random.get_rng_state()
    first = attribute(model, x, target=0, method="smoothgrad", nt_samples=3, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(5)
    assert torch.equal(
        attribute(model, x, target=0, method="smoothgrad", nt_samples=3, seed=2).values,
        first.values,
    )
    other = attribute(model, x, target=0, method="smoothgrad", nt_samples=3, seed=3)
    assert not torch.equal(other.values, first.values)
    with pytest.raises(OptionError, match=r"seed must be an int \(the noise's random seed\)"):
        attribute(model, x, target=0, method="smoothgrad", seed="a")


def test_every_method_is_one_registry_record():
    from hlviz.attribution import METHODS, Method, register

    assert all(isinstance(m, Method) and m.name == name for name, m in METHODS.items())
    assert {m.name for m in METHODS.values() if m.token_ids} == {
        "occlusion", "feature_ablation", "grad_cam", "layer_integrated_gradients"
    }  # fmt: skip
    assert all(m.token_ids for m in METHODS.values() if not m.gradients)
    with pytest.raises(OptionError, match=r"'saliency' is already registered"):
        register(METHODS["saliency"])


def test_baseline_errors():
    model, xs = mlp(), torch.randn(3, 4)
    xs[1] = 0.0
    with pytest.raises(BaselineError, match=r"example\(s\) \[1\] equal their baseline"):
        attribute(model, xs, target=0, method="integrated_gradients")
    with pytest.raises(BaselineError, match=r"example\(s\) \[0, 1, 2\] equal their baseline"):
        attribute(model, xs, target=0, method="occlusion", baseline=xs)
    with pytest.raises(BaselineError, match=r"baseline of shape \(2, 4\) does not broadcast"):
        attribute(model, xs, target=0, method="integrated_gradients", baseline=torch.ones(2, 4))
    with pytest.raises(BaselineError, match=r"baseline must be None \(zeros\), a number or a"):
        attribute(model, xs, target=0, method="integrated_gradients", baseline="pad")
    with pytest.raises(OptionError, match=r"method 'saliency' uses no baseline"):
        attribute(model, xs, target=0, method="saliency", baseline=1.0)
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(BaselineError, match=r"no PAD token id is known for the token baseline"):
        attribute(TokenLSTM(), ids, target=0, method="layer_integrated_gradients", layer="emb")
    with pytest.raises(BaselineError, match=r"baseline for token ids must be None or 'pad'"):
        attribute(TokenLSTM(), ids, target=0, method="layer_integrated_gradients", layer="emb",
                  baseline="blank")  # fmt: skip
    with pytest.raises(BaselineError, match=r"example\(s\) \[0\] equal their baseline"):
        attribute(TokenLSTM(), ids, target=0, method="layer_integrated_gradients", layer="emb",
                  pad_id=0, special_ids=[1, 5, 6])  # fmt: skip
    with pytest.raises(BaselineError, match=r"pad_id must be an int token id, got 'x'"):
        token_baseline(ids, "x")


# --- convergence delta, batching --------------------------------------------------------------


def test_a_large_convergence_delta_warns():
    model, xs = mlp(), torch.randn(2, 4) * 3
    with pytest.warns(ConvergenceWarning, match=r"integrated_gradients: the convergence delta "
                      r"exceeds 5% of \|F\(x\) - F\(baseline\)\| for \d of 2 example\(s\).*"
                      r"Raise n_steps \(now 2\)"):  # fmt: skip
        attribute(model, xs, target=0, method="integrated_gradients", n_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attribute(model, xs, target=0, method="integrated_gradients", n_steps=300)


def test_auto_internal_batch_follows_the_memory_budget(monkeypatch):
    model, xs = mlp(), torch.randn(2, 4)
    prep = af.prepare(model, xs, output=None)
    per_row = af.probe(prep.forward, prep.main, prep.extra, measure=True).bytes_per_row
    assert per_row > 0
    seen = []
    real = ca.IntegratedGradients.attribute

    def spy(self, *args, **kwargs):
        seen.append(kwargs["internal_batch_size"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ca.IntegratedGradients, "attribute", spy)
    small = attribute(model, xs, target=0, method="integrated_gradients", n_steps=20,
                      memory_budget=7 * per_row)  # fmt: skip
    large = attribute(model, xs, target=0, method="integrated_gradients", n_steps=20,
                      memory_budget="1GB")  # fmt: skip
    assert seen == [7, None]  # 7 rows fit; with room for all 40 rows, Captum's default
    torch.testing.assert_close(small.values, large.values, **TOL)
    with pytest.warns(HlvizWarning, match=r"fits about 0 rows .* Captum needs at least 2"):
        attribute(model, xs, target=0, method="integrated_gradients", memory_budget=1)
    assert seen[-1] is None or seen[-1] >= 2


def test_parse_budget_and_batch_errors():
    cpu = torch.device("cpu")
    assert af.parse_budget("512MB", cpu) == 512_000_000
    assert af.parse_budget("2 GiB", cpu) == 2 * 2**30 and af.parse_budget(1000, cpu) == 1000
    assert 0 < af.parse_budget(None, cpu) <= 4 * 2**30
    with pytest.raises(OptionError, match=r"memory_budget='lots' is not a size"):
        af.parse_budget("lots", cpu)
    with pytest.raises(OptionError, match=r"memory_budget must be a positive size in bytes"):
        af.parse_budget(-5, cpu)
    model, xs = mlp(), torch.randn(2, 4)
    with pytest.raises(OptionError, match=r"internal_batch_size=1: give 'auto' .* an int >= 2"):
        attribute(model, xs, target=0, method="integrated_gradients", internal_batch_size=1)
    with pytest.raises(OptionError, match=r"an int >= 4 \(the batch of 2 examples, twice over"):
        attribute(model, xs, target=0, method="layer_conductance", layer="1",
                  internal_batch_size=3)  # fmt: skip
    with pytest.raises(OptionError, match=r"method 'saliency' does no internal batching; drop "):
        attribute(model, xs, target=0, method="saliency", internal_batch_size=8)
    a = quiet(attribute, model, xs, target=0, method="integrated_gradients", internal_batch_size=8)
    b = quiet(
        attribute, model, xs, target=0, method="integrated_gradients", internal_batch_size=None
    )
    torch.testing.assert_close(a.values, b.values, **TOL)


# --- argument errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "salency"}, OptionError, r"method='salency' is not an attribution method; "
         r"did you mean 'saliency'\? Choose one of saliency, "),
        ({"method": "saliency", "window": 3}, OptionError,
         r"method 'saliency' does not take window; its options are: abs"),
        ({"method": "saliency", "layer": "0"}, OptionError, r"takes no layer \(got layer='0'\)"),
        ({"method": "grad_cam"}, OptionError, r"method 'grad_cam' needs layer="),
        ({"method": "grad_cam", "layer": "feature.4"}, LayerNotFoundError,
         r"no layer 'feature.4' in Blocks; did you mean 'features.4'"),
        ({"method": "layer_conductance", "layer": "features.*"}, OptionError,
         r"layer='features.\*' selects 6 layers"),
        ({"method": "integrated_gradients", "n_steps": 1}, OptionError,
         r"n_steps must be an int >= 2"),
        ({"method": "neuron_conductance", "layer": "features.2", "neuron": 3}, OptionError,
         r"neuron=3 does not index one unit of layer 'features.2', whose output is \(1, 6, 8, 8\)"),
    ],
)  # fmt: skip
def test_argument_errors(kwargs, error, message, x):
    with pytest.raises(error, match=message):
        attribute(Blocks().eval(), x, target=0, **kwargs)


def test_input_errors():
    with pytest.raises(OptionTypeError, match=r"inputs must be a tensor, a non-empty tuple"):
        attribute(mlp(), [1, 2], target=0, method="saliency")
    with pytest.raises(OptionError, match=r"inputs is a mapping with keys \['x'\]; name the"):
        attribute(mlp(), {"x": torch.randn(2, 4)}, target=0, method="saliency")
    with pytest.raises(hlviz.errors.NotAModuleError, match="must be a torch.nn.Module"):
        attribute(lambda v: v, torch.randn(2, 4), target=0, method="saliency")
    with pytest.raises(
        OptionTypeError, match=r"inputs\[0\] must be a tensor to attribute, got list"
    ):
        attribute(mlp(), ([1.0], 2), target=0, method="saliency")
    tuple_in = attribute(_TwoArgs(), (torch.randn(2, 4), torch.ones(2, 1)), target=0,
                         method="input_x_gradient")  # fmt: skip
    assert tuple_in.values.shape == (2, 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "saliency"},
        {"method": "integrated_gradients", "n_steps": 4, "baseline": float("nan")},
        {"method": "integrated_gradients", "n_steps": 4, "baseline": torch.zeros(3, 3)},
    ],
)
def test_an_empty_batch_is_refused_up_front(kwargs):
    """fuzz attribute[eval, empty, baseline nan|baseline wrong shape]: was 'cannot reshape
    tensor of 0 elements' (from the baseline or the finite check)."""
    model = Blocks().eval()
    with pytest.raises(ShapeMismatchError, match=r"inputs hold 0 examples \(the attributed "
                       r"input has shape \(0, 1, 8, 8\)\): there is nothing to attribute"):  # fmt: skip
        attribute(model, torch.rand(0, 1, 8, 8), target=0, **kwargs)
    with pytest.raises(ShapeMismatchError, match=r"a 0-d tensor \(1\.5\): give a batch"):
        attribute(mlp(), torch.tensor(1.5), target=0, method="saliency")
    hlviz.testing.assert_no_hooks(model)


def test_n_steps_past_the_bound_is_refused_before_captum_allocates(x):
    """fuzz attribute[*, *, ig n_steps=huge]: n_steps=10**12 was a bare MemoryError from
    Captum's Gauss-Legendre weights (numpy builds an n_steps x n_steps matrix)."""
    for n_steps in (10**12, MAX_STEPS + 1):
        with pytest.raises(OptionError, match=rf"n_steps={n_steps} is more than the {MAX_STEPS} "
                           rf"steps.*Give n_steps <= {MAX_STEPS}"):  # fmt: skip
            attribute(Blocks().eval(), x, target=0, method="integrated_gradients",
                      n_steps=n_steps)  # fmt: skip
    with pytest.raises(OptionError, match=rf"n_steps={10**9} is more than"):
        attribute(mlp(), torch.randn(2, 4), target=0, method="layer_integrated_gradients",
                  layer="0", n_steps=10**9)  # fmt: skip


class _NeedsTwo(nn.Module):
    def forward(self, v):
        if len(v) < 2:
            raise ValueError("Expected more than 1 value per channel when training")
        return v * 2


def test_an_input_without_a_batch_axis_is_named():
    """fuzz sanity_check[eval, drop_dim]: the model takes an unbatched (5,) input, attribution
    probes its first 'row' (1,) and the model failed with 'mat1 and mat2 shapes'."""
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    assert model(torch.randn(5)).shape == (3,)
    with pytest.raises(ShapeMismatchError, match=r"runs on the whole input \(5,\) \(giving "
                       r"\(3,\), not 5 rows\) but fails on its first row \(1,\) \(RuntimeError: "
                       r"mat1 and mat2.*x\.unsqueeze\(0\) \(shape \(1, 5\)\)"):  # fmt: skip
        attribute(model, torch.randn(5), target=0, method="saliency")
    with pytest.raises(OptionError, match=r"runs on the whole batch \(3, 4\) but fails on one "
                       r"example alone \(ValueError: Expected more.*model\.eval\(\)"):  # fmt: skip
        attribute(_NeedsTwo(), torch.randn(3, 4), target=0, method="saliency")
    with pytest.raises(RuntimeError, match="mat1 and mat2") as err:  # the model's own error
        attribute(model, torch.randn(2, 4), target=0, method="saliency")
    assert not isinstance(err.value, hlviz.HlvizError)
    hlviz.testing.assert_no_hooks(model)


class _TwoArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x, scale):
        return self.lin(x) * scale


# --- result object ----------------------------------------------------------------------------


def test_attribution_summary_plot_and_html(x):
    import matplotlib.pyplot as plt

    model = Blocks().eval()
    ig = quiet(attribute, model, x, target=0, method="integrated_gradients", n_steps=8)
    assert "integrated_gradients target=0: values (2, 1, 8, 8)" in ig.describe()
    assert "|delta| <=" in ig.describe()
    table = ig.summary()
    assert list(table.columns) == ["example", "target", "min", "max", "sum", "delta",
                                   "output_change", "relative_delta"]  # fmt: skip
    flat = ig.values.reshape(2, -1).double()
    assert table["sum"].tolist() == pytest.approx(flat.sum(1).tolist())
    assert table["relative_delta"].tolist() == pytest.approx(
        (ig.delta.double().abs() / ig.output_change.double().abs()).tolist()
    )
    assert list(attribute(model, x, target=[0, 1], method="saliency").summary().columns) == [
        "example", "target", "min", "max", "sum"
    ]  # fmt: skip
    fig = ig.plot()
    assert len(fig.axes) == 2 * 2 + 1
    with pytest.raises(OptionError, match=r"pass fig= \(a Figure\), not ax="):
        ig.plot(ax=fig.axes[0])
    plt.close(fig)
    with pytest.raises(LayerShapeError, match=r"integrated_gradients values have shape \(2, 1, 8, "
                       r"8\), not one value per token or time step .* use .plot\(\)"):  # fmt: skip
        ig.to_html()
    seq = quiet(attribute, SeqModel(nn.GRU).eval(), torch.randn(2, 5, 3), target=0,
                method="integrated_gradients", n_steps=8)  # fmt: skip
    page = seq.to_html()
    assert page.count('class="hlviz-token"') == 10 and "integrated_gradients, target 0" in page
    _, ax = plt.subplots()
    assert seq.plot(ax=ax) is ax and ax.get_xlabel() == "position"
    with pytest.raises(OptionError, match=r"draw on one Axes: pass ax=, not fig="):
        seq.plot(fig=ax.figure)
    plt.close(ax.figure)
    ids = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 2]])
    cam = attribute(TokenLSTM().eval(), ids, target=0, method="grad_cam", layer="rnn",
                    channel_dim=-1)  # fmt: skip
    assert cam.values.shape == (2, 1, 4) and cam.per_position().shape == (2, 4)
    assert cam.to_html().count('class="hlviz-token"') == 8
    ax = cam.plot(examples=[1])
    assert len(ax.lines) == 2  # example 1 and the zero line
    plt.close(ax.figure)
    with pytest.raises(Exception, match="frozen|cannot assign"):
        ig.method = "other"  # type: ignore[misc]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible")
@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_cudnn_rnn_backward_in_eval_mode_on_cuda(kind):
    torch.manual_seed(0)
    model = SeqModel(kind).cuda().eval()
    xs = torch.randn(2, 5, 3)  # on the CPU: hlviz moves it to the model's device
    a = quiet(attribute, model, xs, target=1, method="integrated_gradients", n_steps=8)
    assert a.values.shape == (2, 5, 3) and not model.training and torch.backends.cudnn.enabled
    cpu = quiet(attribute, model.cpu(), xs, target=1, method="integrated_gradients", n_steps=8)
    torch.testing.assert_close(a.values, cpu.values, atol=1e-4, rtol=1e-4)


def test_image_overlays_share_one_colour_scale_across_methods(x):
    import matplotlib.pyplot as plt

    from hlviz.attribution.plots import plot_attribution_images, plot_over_time

    model = Blocks().eval()
    sal = attribute(model, x, target=0, method="saliency")
    cam = attribute(model, x, target=0, method="grad_cam", layer="features.4")
    top = max(sal.values.sum(1).abs().max(), cam.values.sum(1).abs().max()).item()
    fig = plot_attribution_images([sal, cam])
    overlays = [im for ax in fig.axes[:-1] for im in ax.get_images()[1:]]
    assert len(overlays) == 2 * 2
    assert all(im.norm.vmin == pytest.approx(-top) and im.norm.vmax == pytest.approx(top)
               for im in overlays)  # fmt: skip
    assert fig.axes[-1].get_ylabel() == "attribution (shared scale)"
    plt.close(fig)
    fig = plot_attribution_images({"s": sal, "c": cam}, per_image=True, max_examples=1)
    assert fig.axes[-1].get_ylabel() == "per-image scale (not comparable)"
    assert [ax.get_title() for ax in fig.axes[:3]] == ["input", "s", "c"]
    plt.close(fig)
    small = attribute(model, x, target=0, method="grad_cam", layer="features.4", upsample=False)
    small = Attribution(small.values[:, :, :4, :4], "grad_cam", 0, "features.4", None, None, x)
    with pytest.raises(hlviz.errors.ShapeMismatchError, match=r"differ in size: give Grad-CAM"):
        plot_attribution_images([sal, small])
    with pytest.raises(OptionTypeError, match=r"attributions must be an Attribution"):
        plot_attribution_images("saliency")
    with pytest.raises(OptionError, match=r"max_examples must be a positive int"):
        plot_attribution_images(sal, max_examples=0)
    with pytest.raises(OptionTypeError, match=r"give at least one Attribution"):
        plot_attribution_images([])
    with pytest.raises(hlviz.errors.ShapeMismatchError, match=r"images must be \(N, C, H, W\)"):
        plot_attribution_images(sal, images=torch.zeros(2, 8, 8))
    seq = Attribution(torch.randn(2, 5), "saliency", 0, None, None, None, torch.randn(2, 5))
    with pytest.raises(hlviz.errors.ShapeMismatchError, match=r"saliency values have shape "
                       r"\(2, 5\), not images \(N, C, H, W\): use plot_over_time"):  # fmt: skip
        plot_attribution_images(seq)
    with pytest.raises(OptionError, match=r"examples must be indices below 2, got \[5\]"):
        plot_over_time(seq, examples=[5])
    with pytest.raises(LayerShapeError, match=r"saliency values have shape \(2, 1, 8, 8\)"):
        plot_over_time(sal)


class _NaNForSecond(nn.Module):
    """Finite for example 0, NaN scores for every other example."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        out = self.lin(x)
        scale = torch.ones_like(out)
        scale[1:] = float("nan")
        return out * scale


def test_nan_and_inf_name_the_examples():
    bad = torch.randn(3, 4)
    bad[1, 2] = float("nan")
    bad[2, 0] = float("inf")
    with pytest.raises(OptionError, match=r"the attributed input holds NaN or inf in 2 of 3 rows "
                       r"\(examples 1, 2\): drop those examples"):  # fmt: skip
        attribute(mlp(), bad, target=0, method="saliency")
    with pytest.raises(OptionError, match=r"the saliency attribution holds NaN or inf in 2 of 3 "
                       r"rows \(examples 1, 2\): the model's score or its gradient is not finite"):  # fmt: skip
        attribute(_NaNForSecond(), torch.randn(3, 4), target=0, method="saliency")
