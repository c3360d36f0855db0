"""hlviz.transformer.attention.capture: own pattern layers, nn.MultiheadAttention, Hugging Face models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import EmptySelectionError, OptionError, ShapeMismatchError
from hlviz.models.gpt import CharGPT
from hlviz.transformer import attention

from .zoo import tiny_bert, tiny_gpt2


def _gpt(layers=2):
    torch.manual_seed(0)
    return CharGPT(vocab_size=12, d_model=16, n_heads=2, n_layers=layers, context=16).eval()


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def test_own_pattern_layers_are_the_default_and_match_a_recording():
    model, ids = _gpt(), torch.randint(0, 12, (3, 6))
    maps = attention.capture(model, ids)
    assert maps.layers == ("blocks.0.attn.pattern", "blocks.1.attn.pattern")
    with hlviz.record(model, "blocks.*.attn.pattern") as rec:
        model(ids)
    for i, name in enumerate(maps.layers):
        assert torch.equal(maps.patterns[i], rec[name])
    assert torch.allclose(maps.patterns.sum(-1), torch.ones(2, 3, 2, 6))
    assert torch.equal(maps.patterns.triu(1), torch.zeros_like(maps.patterns))  # causal
    hlviz.testing.assert_no_hooks(model)


def test_maps_feed_head_scores_like_a_hugging_face_tuple():
    model, ids = _gpt(), torch.randint(0, 12, (3, 6))
    maps = attention.capture(model, ids)
    mask = torch.ones(3, 6, dtype=torch.bool)
    direct = attention.head_scores(maps, attention.previous_token(mask), mask)
    stacked = attention.head_scores(
        maps.patterns.transpose(0, 1), attention.previous_token(mask), mask
    )
    assert direct.shape == (2, 2)
    np.testing.assert_array_equal(direct, stacked)
    assert len(maps) == 2 and torch.equal(maps[1], maps.patterns[1])


def test_multihead_attention_gives_per_head_weights_and_the_caller_what_it_asked():
    model, x = _encoder(), torch.randn(3, 5, 8)
    expected = model(x)
    maps = attention.capture(model, x)
    assert maps.layers == ("layers.0.self_attn", "layers.1.self_attn")
    assert tuple(maps.patterns.shape) == (2, 3, 2, 5, 5)
    # layer 0's weights recomputed by hand from its input
    mha = model.layers[0].self_attn
    _, weights = mha(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(maps.patterns[0], weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
    hlviz.testing.assert_no_hooks(model)


def test_a_direct_caller_of_multihead_attention_keeps_its_averaged_weights():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()

    class Caller(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha
            self.seen = []

        def forward(self, x):
            out, w = self.mha(x, x, x)  # need_weights=True, averaged by default
            self.seen.append(w)
            _, none = self.mha(x, x, x, None, False)  # positional need_weights=False
            self.seen.append(none)
            return out

    model, x = Caller(), torch.randn(2, 4, 8)
    with pytest.raises(ShapeMismatchError, match="ran 2 times"):
        attention.capture(model, x)
    assert tuple(model.seen[0].shape) == (2, 4, 4) and model.seen[1] is None
    hlviz.testing.assert_no_hooks(model)


def test_hugging_face_eager_attentions_match_the_model_output():
    model = tiny_gpt2()
    ids = torch.randint(0, 30, (2, 5))
    maps = attention.capture(model, {"input_ids": ids, "attention_mask": torch.ones(2, 5)})
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    assert maps.layers == ("attentions.0", "attentions.1")
    for i in range(2):
        assert torch.equal(maps.patterns[i], out.attentions[i])
    one = attention.capture(model, ids, layers=[1])
    assert one.layers == ("attentions.1",) and torch.equal(one.patterns[0], out.attentions[1])
    with pytest.raises(OptionError, match=r"layers \[5\] are out of range: the model returned 2"):
        attention.capture(model, ids, layers=[5])


def test_sdpa_attention_is_refused_with_the_fix():
    model = tiny_gpt2(eager=False)
    with pytest.raises(OptionError, match=r"attn_implementation=\"eager\""):
        attention.capture(model, torch.randint(0, 30, (1, 4)))
    bert = tiny_bert()
    bert.set_attn_implementation("eager")
    maps = attention.capture(bert, {"input_ids": torch.randint(0, 50, (2, 6))})
    assert tuple(maps.patterns.shape) == (2, 2, 2, 6, 6)


def test_summary_and_plot():
    model, ids = _gpt(), torch.randint(0, 12, (2, 5))
    maps = attention.capture(model, ids)
    frame = maps.summary()
    assert list(frame.columns) == [
        "layer",
        "head",
        "entropy",
        "max_weight",
        "self",
        "previous",
        "first",
    ]
    assert len(frame) == 4 and (frame["max_weight"] <= 1 + 1e-6).all()
    # position 0 attends only to itself in a causal model; "first" is at least its share
    assert (frame["first"] >= 1 / 5 - 1e-6).all()
    ax = maps.plot("blocks.1.attn.pattern", head=1, example=1, tokens=list("abcde"))
    assert ax.get_title() == "blocks.1.attn.pattern, head 1"
    assert [t.get_text() for t in ax.get_yticklabels()] == list("abcde")
    with pytest.raises(
        OptionError, match=r"layer='blocks.9' is not one of 'blocks.0.*Give a captured layer"
    ):
        maps.plot("blocks.9")
    with pytest.raises(OptionError, match="the maps hold 2 heads and 2 examples"):
        maps.plot(0, head=5)
    with pytest.raises(OptionError, match="tokens has 2 labels for 5 positions"):
        maps.plot(0, tokens=["a", "b"])


def test_capture_errors():
    with pytest.raises(EmptySelectionError, match="has no layer named 'pattern'"):
        attention.capture(nn.Sequential(nn.Linear(2, 2)), torch.zeros(1, 2))
    model = _gpt()
    with pytest.raises(ShapeMismatchError, match=r"not an attention pattern \(N, heads, T, T\)"):
        attention.capture(model, torch.zeros(1, 4, dtype=torch.long), layers="blocks.0.ln1")


class _FragileGPT(CharGPT):
    """Raises after its first block on a batch of more than one sequence."""

    def forward(self, ids):
        self._check_ids(ids)
        x = self.blocks[0](self.resid(self.embed(ids) + self.pos(torch.arange(ids.shape[1]))))
        if ids.shape[0] > 1:
            self.seen = len(self.blocks[0].attn.pattern._forward_hooks)
            raise RuntimeError("boom inside forward")
        for block in self.blocks[1:]:
            x = block(x)
        return self.unembed(self.ln_f(x))


class _FragileEncoder(nn.TransformerEncoder):
    """Raises after its first layer on a batch of more than one sequence."""

    def forward(self, x):
        x = self.layers[0](x)
        if x.shape[0] > 1:
            self.seen = len(self.layers[0].self_attn._forward_hooks)
            raise RuntimeError("boom inside forward")
        for layer in self.layers[1:]:
            x = layer(x)
        return x


@pytest.mark.parametrize("kind", ["pattern", "mha"])
def test_hooks_never_leak_and_a_user_hook_survives(kind):
    torch.manual_seed(0)
    if kind == "pattern":
        model = _FragileGPT(vocab_size=12, d_model=16, n_heads=2, n_layers=2, context=16).eval()
        x, target = torch.randint(0, 12, (1, 4)), "blocks.0.attn.pattern"
        fragile = torch.randint(0, 12, (2, 4))
        bad, error, message = torch.randint(0, 12, (1, 40)), ShapeMismatchError, "at most 16"
    else:
        layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
        model = _FragileEncoder(layer, 2, enable_nested_tensor=False).eval()
        x, target = torch.randn(1, 4, 8), "layers.0.self_attn"
        fragile = torch.randn(2, 4, 8)
        # with the fast path off, torch's own MultiheadAttention checks the width by assert
        bad, error = torch.randn(1, 4, 5), AssertionError
        message = "was expecting embedding dimension of 8, but got 5"
    fired = []
    module = model.get_submodule(target)
    user = module.register_forward_hook(lambda *a: fired.append(1))
    try:
        attention.capture(model, x)
        with pytest.raises(RuntimeError, match="boom inside forward"):
            attention.capture(model, fragile)
        assert model.seen == 2  # capture's hook was on the layer (beside the user's) when it raised
        with pytest.raises(error, match=message):
            attention.capture(model, bad)
        with pytest.raises(hlviz.errors.LayerNotFoundError):
            attention.capture(model, x, layers="nope")
        hlviz.testing.assert_no_hooks(model, ignore=[user])
        before = len(fired)
        with torch.no_grad():
            model(x)
        assert len(fired) == before + 1
    finally:
        user.remove()
    hlviz.testing.assert_no_hooks(model)
    assert torch.backends.mha.get_fastpath_enabled()


class _DirectMHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.seen = None

    def forward(self, x):
        out, w = self.mha(x, x, x)  # averaged weights, as the caller asked
        self.seen = w
        return out


def test_an_unbatched_multihead_attention_call_is_refused_and_left_unchanged():
    torch.manual_seed(0)
    model = _DirectMHA().eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        expected = model.mha(x, x, x)[1]  # (L, S): averaged over the heads
    with pytest.raises(
        ShapeMismatchError,
        match=r"layer 'mha' was called without a batch \(its per-head weights are \(2, 5, 5\)"
        r".*needs batched inputs: \(N, T, E\) with batch_first=True, or \(T, N, E\)",
    ):
        attention.capture(model, x)
    assert tuple(model.seen.shape) == (5, 5)  # what the model asked for, not (2, 5)
    torch.testing.assert_close(model.seen, expected, rtol=0, atol=1e-6)
    batched = attention.capture(model, x[None])
    assert tuple(batched.patterns.shape) == (1, 1, 2, 5, 5)
    torch.testing.assert_close(batched.patterns[0, 0].mean(0), expected, rtol=0, atol=1e-6)
    assert tuple(model.seen.shape) == (1, 5, 5)
    hlviz.testing.assert_no_hooks(model)


def test_module_names_on_a_hugging_face_model_point_to_integer_layers():
    model = tiny_gpt2()
    with pytest.raises(
        ShapeMismatchError,
        match=r"not an attention pattern.*This is a Hugging Face model: its layers= are integer "
        r"indices into outputs.attentions",
    ):
        attention.capture(model, torch.randint(0, 30, (1, 4)), "transformer.h.*.attn")
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)


def test_repro_vit_capture_tensor() -> None:
    """A tensor goes to the model's main input (pixel_values for a ViT), not input_ids."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
        attn_implementation="eager",
    )
    model = transformers.ViTForImageClassification(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = hlviz.attention.capture(model, x)
    assert maps.patterns.shape == (2, 2, 4, 17, 17)
    truth = model(pixel_values=x, output_attentions=True).attentions
    torch.testing.assert_close(maps.patterns[1], truth[1])


def test_repro_t5_capture_misleading() -> None:
    """An eager encoder-decoder returns encoder/decoder/cross attentions: captured, not refused
    with advice to load the eager attention it already has."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=100,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        attn_implementation="eager",
    )
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    batch = {
        "input_ids": torch.randint(2, 100, (2, 7)),
        "decoder_input_ids": torch.randint(2, 100, (2, 5)),
    }
    with pytest.warns(hlviz.errors.HlvizWarning, match="capturing 'encoder_attentions' only"):
        maps = hlviz.attention.capture(model, batch)
    assert maps.patterns.shape == (2, 2, 4, 7, 7)
    truth = model(**batch, output_attentions=True).encoder_attentions
    torch.testing.assert_close(maps.patterns[0], truth[0])
    assert maps.layers[0] == "encoder_attentions.0"
