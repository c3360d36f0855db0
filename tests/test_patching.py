"""Activation patching and head ablation on CharGPT and tiny Hugging Face models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hlviz
from hlviz.errors import OptionError, OptionTypeError, ShapeMismatchError, UnitIndexError
from hlviz.models.gpt import CharGPT
from hlviz.transformer.heads import ablating_heads

from .zoo import tiny_bert, tiny_gpt2

LAYERS = ["resid", "blocks.*"]


def _gpt(layers=2, cls=CharGPT):
    torch.manual_seed(0)
    return cls(vocab_size=12, d_model=16, n_heads=2, n_layers=layers, context=16).eval()


def _pair():
    torch.manual_seed(3)
    clean = torch.randint(0, 12, (2, 6))
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 5) % 12
    return clean, corrupted


def _metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 7]


# ------------------------------------------------------------------ activation patching
def test_patching_a_layer_everywhere_with_its_own_clean_activations_restores_the_clean_output():
    model = _gpt(3)
    clean, corrupted = _pair()
    result = hlviz.activation_patching(
        model, clean, corrupted, LAYERS, metric=_metric, positions="all"
    )
    assert result.layers == ("resid", "blocks.0", "blocks.1", "blocks.2")
    assert result.positions == ("all",) and result.effect.shape == (4, 1)
    np.testing.assert_allclose(result.effect, 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.raw, result.clean_score, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert result.clean_score == pytest.approx(float(_metric(model(clean)).mean()))
        assert result.corrupted_score == pytest.approx(float(_metric(model(corrupted)).mean()))


def test_each_position_effects_are_exact_where_causality_says_so():
    model = _gpt(2)
    clean, corrupted = _pair()
    scored = 3  # the metric reads position 3 only

    def metric(logits):
        return logits[:, scored, 3] - logits[:, scored, 7]

    result = hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=metric)
    assert result.effect.shape == (3, 6) and result.positions == tuple(range(6))
    assert (result.effect[:, scored + 1 :] == 0.0).all()  # later positions cannot matter
    assert (result.effect[1:, : scored + 1] != 0.0).any()  # earlier ones do
    # the stream differs only at position 1 before any attention: elsewhere resid changes nothing
    assert (result.effect[0, [0, 2, 3, 4, 5]] == 0.0).all()
    assert result.effect[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert result.effect[-1, scored] == pytest.approx(
        1.0, abs=1e-6
    )  # the last block at the scored position


def test_batched_patching_equals_one_patch_per_forward_pass():
    model = _gpt(2)
    clean, corrupted = _pair()
    batched = hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=_metric)
    looped = hlviz.activation_patching(
        model, clean, corrupted, LAYERS, metric=_metric, batch_size=1
    )
    everything = hlviz.activation_patching(
        model, clean, corrupted, LAYERS, metric=_metric, batch_size=100
    )
    np.testing.assert_allclose(batched.effect, looped.effect, rtol=0, atol=1e-5)
    np.testing.assert_allclose(everything.effect, looped.effect, rtol=0, atol=1e-5)
    # one patch by hand with hlviz.patch
    rec = hlviz.activations(model, clean, "blocks.0")
    with torch.no_grad(), hlviz.edit(model, {"blocks.0": hlviz.patch(rec, positions=[2])}):
        by_hand = float(_metric(model(corrupted)).mean())
    assert looped.raw[1, 2] == pytest.approx(by_hand, abs=1e-6)


def test_hugging_face_inputs_with_an_attention_mask():
    model = tiny_gpt2()
    torch.manual_seed(1)
    ids = torch.randint(0, 30, (2, 5))
    other = ids.clone()
    other[:, 0] = (ids[:, 0] + 3) % 30
    mask = torch.ones(2, 5, dtype=torch.long)
    result = hlviz.activation_patching(
        model,
        {"input_ids": ids, "attention_mask": mask},
        {"input_ids": other, "attention_mask": mask},
        "transformer.h.*",
        metric=lambda logits: logits[:, -1, 1] - logits[:, -1, 2],
    )
    assert result.effect.shape == (2, 5)
    assert result.effect[-1, -1] == pytest.approx(1.0, abs=1e-5)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)


def test_inputs_with_different_attention_masks_are_refused():
    model = tiny_gpt2()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    other = torch.tensor([[1, 2, 3, 0], [5, 9, 7, 8]])
    full = torch.ones(2, 4, dtype=torch.long)
    padded = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(
        ShapeMismatchError,
        match=r"different attention masks \(first in row 1: clean \[1, 1, 1, 1\], corrupted "
        r"\[1, 1, 0, 0\]\).*would not line up; pad both to the same length and on the same side",
    ):
        hlviz.activation_patching(
            model,
            {"input_ids": ids, "attention_mask": full},
            {"input_ids": other, "attention_mask": padded},
            "transformer.h.*",
            metric=lambda logits: logits[:, 1, 1] - logits[:, 1, 2],
        )
    same = hlviz.activation_patching(  # equal masks, padded the same way: accepted
        model,
        {"input_ids": ids, "attention_mask": padded},
        {"input_ids": other, "attention_mask": padded.clone()},
        "transformer.h.*",
        metric=lambda logits: logits[:, 1, 1] - logits[:, 1, 2],
    )
    assert same.effect.shape == (2, 4)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)


def test_summary_and_plot():
    model = _gpt(2)
    clean, corrupted = _pair()
    result = hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=_metric)
    frame = result.summary()
    assert list(frame.columns) == ["layer", "position", "effect", "raw"] and len(frame) == 18
    row = frame[(frame.layer == "blocks.1") & (frame.position == 4)].iloc[0]
    assert row.effect == result.effect[2, 4]
    ax = result.plot(tokens=list("abcdef"))
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcdef")
    image = ax.images[0]
    low, high = image.get_clim()
    assert low == -high and high >= 1.0  # centred at zero
    assert image.get_cmap().name == "RdBu_r"


def test_patching_errors_say_what_to_do():
    model = _gpt(2)
    clean, corrupted = _pair()
    torch.manual_seed(0)
    noisy = CharGPT(vocab_size=12, d_model=16, n_heads=2, n_layers=1, dropout=0.5)
    with pytest.warns(hlviz.HlvizWarning, match=r"training mode \('drop'.*Call model.eval"):
        hlviz.activation_patching(noisy, clean, corrupted, "blocks.0", metric=_metric)
    with pytest.raises(hlviz.errors.OptionTypeError, match="inputs must be a tensor"):
        hlviz.activation_patching(model, "abc", "abd", LAYERS, metric=_metric)
    with pytest.raises(
        ShapeMismatchError, match=r"clean \(2, 6\) and corrupted \(2, 5\).*aligned inputs"
    ):
        hlviz.activation_patching(model, clean, corrupted[:, :5], LAYERS, metric=_metric)
    with pytest.raises(
        OptionError, match=r"one value per example \(shape \(2,\)\), got shape \(2, 12\)"
    ):
        hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=lambda lg: lg[:, -1])
    with pytest.raises(OptionError, match="got float"):
        hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=lambda lg: 1.0)
    with pytest.raises(OptionError, match="same score.*would divide by zero"):
        hlviz.activation_patching(model, clean, clean.clone(), LAYERS, metric=_metric)
    with pytest.raises(OptionTypeError, match="positions must be one of 'each', 'all', got 3"):
        hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=_metric, positions=3)
    with pytest.raises(OptionError, match="positions='al' is not one of .*did you mean 'all'"):
        hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=_metric, positions="al")
    with pytest.raises(OptionError, match="batch_size must be a positive int or None, got 0"):
        hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=_metric, batch_size=0)
    with pytest.raises(ShapeMismatchError, match="use positions='all' for it"):
        hlviz.activation_patching(model, clean, corrupted, "blocks.0.attn.pattern", metric=_metric)
    heads = hlviz.activation_patching(
        model, clean, corrupted, "blocks.0.attn.pattern", metric=_metric, positions="all"
    )
    assert heads.effect.shape == (1, 1)
    hlviz.testing.assert_no_hooks(model)


class _Fragile(CharGPT):
    """Raises in the middle of a forward pass over a batch of more than two sequences."""

    def forward(self, ids):
        x = self.blocks[0](self.resid(self.embed(ids) + self.pos(torch.arange(ids.shape[1]))))
        if ids.shape[0] > 2:
            raise RuntimeError("boom inside forward")
        for block in self.blocks[1:]:
            x = block(x)
        return self.unembed(self.ln_f(x))


@pytest.mark.parametrize("api", ["patching", "heads"])
def test_hook_hygiene(api):
    model = _gpt(2, cls=_Fragile)
    clean, corrupted = _pair()
    fired = []
    user = model.blocks[0].register_forward_hook(lambda *a: fired.append(1))

    def run(layers, **kw):
        if api == "patching":
            return hlviz.activation_patching(model, clean, corrupted, layers, metric=_metric, **kw)
        return hlviz.ablate_heads(model, clean, layers, metric=_metric, **kw)

    good = LAYERS if api == "patching" else "blocks.*.attn.heads"
    try:
        with pytest.raises(RuntimeError, match="boom inside forward"):
            run(good)
        with pytest.raises(hlviz.errors.LayerNotFoundError):
            run("blocks.9")
        with pytest.raises(OptionError):
            run(good, **({"positions": "some"} if api == "patching" else {"value": "median"}))
        with pytest.raises(OptionError, match="one value per example"):
            hlviz.ablate_heads(model, clean, "blocks.0.attn.heads", metric=lambda lg: lg)
        hlviz.testing.assert_no_hooks(model, ignore=[user])
        before = len(fired)
        model(clean)
        assert len(fired) == before + 1
    finally:
        user.remove()
    model = _gpt(2)
    if api == "patching":
        hlviz.activation_patching(model, clean, corrupted, LAYERS, metric=_metric)
    else:
        hlviz.ablate_heads(model, clean, "blocks.*.attn.heads", metric=_metric)
    hlviz.testing.assert_no_hooks(model)


# ------------------------------------------------------------------ head ablation
def test_ablating_a_char_gpt_head_equals_zeroing_its_slice_by_hand():
    model = _gpt(2)
    ids, _ = _pair()
    result = hlviz.ablate_heads(model, ids, "blocks.*.attn.heads", metric=_metric)
    assert result.layers == ("blocks.0.attn.heads", "blocks.1.attn.heads")
    assert result.effect.shape == (2, 2)
    with torch.no_grad():
        base = float(_metric(model(ids)).mean())
        for i, layer in enumerate(result.layers):
            for h in range(2):

                def zero(t, h=h):
                    t = t.clone()
                    t[:, h] = 0.0
                    return t

                with hlviz.edit(model, {layer: zero}):
                    by_hand = float(_metric(model(ids)).mean())
                assert result.effect[i, h] == pytest.approx(by_hand - base, abs=1e-5)
    assert result.base_score == pytest.approx(base)
    mean = hlviz.ablate_heads(model, ids, "blocks.1.attn.heads", metric=_metric, value="mean")
    with torch.no_grad():
        rec = hlviz.activations(model, ids, "blocks.1.attn.heads")
        fill = rec["blocks.1.attn.heads"][:, 0].mean((0, 1))  # (Dh,)

        def to_mean(t):
            t = t.clone()
            t[:, 0] = fill
            return t

        with hlviz.edit(model, {"blocks.1.attn.heads": to_mean}):
            by_hand = float(_metric(model(ids)).mean())
    assert mean.effect[0, 0] == pytest.approx(by_hand - base, abs=1e-5)


def test_ablating_a_gpt2_head_in_the_projection_input_equals_zeroing_by_hand():
    model = tiny_gpt2()
    ids = torch.randint(0, 30, (2, 5))
    result = hlviz.ablate_heads(model, ids, "transformer.h.*.attn.c_proj", metric=_metric)
    assert result.effect.shape == (2, 2)
    base = result.base_score
    proj = model.transformer.h[1].attn.c_proj

    def zero_head_1(module, args):
        x = args[0].clone()
        x[..., 8:16] = 0.0  # head 1 of 2, Dh = 8
        return (x,)

    handle = proj.register_forward_pre_hook(zero_head_1)
    try:
        with torch.no_grad():
            by_hand = float(_metric(model(ids).logits).mean())
    finally:
        handle.remove()
    assert result.effect[1, 1] == pytest.approx(by_hand - base, abs=1e-5)
    assert np.abs(result.effect).max() > 0
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)


def test_bert_heads_in_the_attention_output_dense():
    model = tiny_bert()
    ids = torch.randint(0, 50, (2, 6))
    result = hlviz.ablate_heads(
        model,
        {"input_ids": ids},
        "encoder.layer.*.attention.output.dense",
        metric=lambda hidden: hidden[:, 0, 0],
    )
    assert result.effect.shape == (2, 2) and np.isfinite(result.effect).all()
    assert np.abs(result.effect).max() > 0
    dense = model.encoder.layer[1].attention.output.dense

    def zero_head_0(module, args):
        x = args[0].clone()
        x[..., 0:8] = 0.0  # head 0 of 2, Dh = 8
        return (x,)

    handle = dense.register_forward_pre_hook(zero_head_0)
    try:
        with torch.no_grad():
            by_hand = float(model(input_ids=ids).last_hidden_state[:, 0, 0].mean())
    finally:
        handle.remove()
    assert result.effect[1, 0] == pytest.approx(by_hand - result.base_score, abs=1e-5)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)


def test_ablating_nothing_changes_nothing_and_the_model_is_left_unchanged():
    model = _gpt(2)
    ids, _ = _pair()
    with torch.no_grad():
        before = model(ids)
        with ablating_heads(model, {"blocks.*.attn.heads": []}):
            assert torch.equal(model(ids), before)
        with ablating_heads(model, {"blocks.0.attn.heads": [0, 1]}):
            assert not torch.allclose(model(ids), before)
        hlviz.ablate_heads(model, ids, "blocks.*.attn.heads", metric=_metric)
        assert torch.equal(model(ids), before)
    hlviz.testing.assert_no_hooks(model)


def test_head_ablation_summary_plot_and_errors():
    model = _gpt(2)
    ids, _ = _pair()
    result = hlviz.ablate_heads(model, ids, "blocks.*.attn.heads", metric=_metric)
    frame = result.summary()
    assert list(frame.columns) == ["layer", "head", "effect", "ablated"] and len(frame) == 4
    assert frame["effect"].abs().is_monotonic_decreasing
    ax = result.plot()
    assert ax.get_xlabel() == "head" and ax.images[0].get_cmap().name == "RdBu_r"
    with pytest.raises(OptionError, match="value must be a number or 'mean'"):
        hlviz.ablate_heads(model, ids, "blocks.0.attn.heads", metric=_metric, value="max")
    with pytest.raises(ShapeMismatchError, match=r"outputs \(2, 6, 16\): give layers whose output"):
        hlviz.ablate_heads(model, ids, "blocks.0.mid", metric=_metric)
    by_count = hlviz.ablate_heads(model, ids, "blocks.1.attn.out", metric=_metric, n_heads=2)
    np.testing.assert_allclose(by_count.effect, result.effect[1:], rtol=0, atol=1e-5)
    # without n_heads=, CharGPT's own n_heads says how the projection's input splits
    by_model = hlviz.ablate_heads(model, ids, "blocks.*.attn.out", metric=_metric)
    np.testing.assert_allclose(by_model.effect, result.effect, rtol=0, atol=1e-5)
    with pytest.raises(
        UnitIndexError,
        match=r"head 5 is out of range for 2 heads in layer 'blocks.0.attn.heads'; give heads 0..1",
    ):
        with ablating_heads(model, {"blocks.0.attn.heads": [5]}):
            model(ids)
    with pytest.raises(
        UnitIndexError, match="out of range for 2 heads in layer 'blocks.1.attn.out'"
    ):
        with ablating_heads(model, {"blocks.1.attn.out": [2]}):
            model(ids)
    plain = _Plain().eval()  # no config, no n_heads attribute
    with pytest.raises(OptionError, match="the model's number of heads is unknown; pass n_heads="):
        hlviz.ablate_heads(plain, ids, "proj", metric=_metric)
    with pytest.raises(OptionError, match="pass n_heads="):
        with ablating_heads(plain, {"proj": [0]}):
            plain(ids)
    with pytest.raises(ShapeMismatchError, match="not a multiple of 3 heads"):
        with ablating_heads(model, {"blocks.0.attn.out": [0]}, n_heads=3):
            model(ids)
    hlviz.testing.assert_no_hooks(model)


class _Plain(torch.nn.Module):
    """A model with a linear layer and neither a config nor an ``n_heads`` attribute."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 16)
        self.proj = torch.nn.Linear(16, 16)
        self.unembed = torch.nn.Linear(16, 12)

    def forward(self, ids):
        return self.unembed(self.proj(self.embed(ids)))


def test_layers_that_are_not_attention_output_projections_are_refused():
    model = tiny_gpt2()
    ids = torch.randint(0, 30, (2, 5))
    with pytest.raises(
        ShapeMismatchError,
        match=r"'transformer.h.0.mlp.c_proj' is not an attention output projection: its input "
        r"is 64 features wide, but the 2 heads together are 16 .*GPT-2 "
        r"'transformer.h.\*.attn.c_proj', BERT 'encoder.layer.\*.attention.output.dense'.*"
        r"CharGPT 'blocks.\*.attn.heads'",
    ):
        hlviz.ablate_heads(model, ids, "transformer.h.*.mlp.c_proj", metric=_metric)
    with pytest.raises(
        ShapeMismatchError,
        match=r"'transformer.h.0.attn.c_attn' is not an attention output projection: it maps "
        r"16 features to 48, not back to the hidden size 16",
    ):
        hlviz.ablate_heads(model, ids, "transformer.h.0.attn.c_attn", metric=_metric)
    with pytest.raises(ShapeMismatchError, match="'transformer.h.1.mlp.c_fc' is not an attention"):
        with ablating_heads(model, {"transformer.h.1.mlp.c_fc": [0]}):
            model(ids)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)
    bert = tiny_bert()
    with pytest.raises(
        ShapeMismatchError,
        match=r"'encoder.layer.0.output.dense' is not an attention output projection: its "
        r"input is 20 features wide",
    ):
        hlviz.ablate_heads(
            bert,
            {"input_ids": torch.randint(0, 50, (1, 4))},
            "encoder.layer.0.output.dense",
            metric=lambda hidden: hidden[:, 0, 0],
        )
    gpt = _gpt(2)
    with pytest.raises(
        ShapeMismatchError, match=r"'blocks.0.mlp.fc' is not an attention output projection"
    ):
        hlviz.ablate_heads(gpt, ids % 12, "blocks.0.mlp.fc", metric=_metric)
    hlviz.testing.assert_no_hooks(gpt)


def test_repro_dict_output_logits() -> None:
    """A model returning a plain dict: the metric sees its "logits" entry, as attribute does."""

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(20, 8)
            self.mix = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 5)

        def forward(self, *, input_ids):
            h = torch.tanh(self.mix(self.emb(input_ids)).cumsum(1))
            return {"hidden": h, "logits": self.head(h)}

    torch.manual_seed(0)
    model = Tagger().eval()
    clean = {"input_ids": torch.tensor([[1, 2, 3, 4]])}
    corrupted = {"input_ids": torch.tensor([[9, 2, 3, 4]])}
    seen = set()

    def metric(logits):
        seen.add(tuple(logits.shape))
        return logits[:, -1, 3] - logits[:, -1, 4]

    result = hlviz.activation_patching(model, clean, corrupted, ["emb", "mix"], metric=metric)
    assert seen == {(1, 4, 5)}
    with torch.no_grad():
        truth = float(metric(model(**clean)["logits"]))
    assert result.clean_score == pytest.approx(truth)
    assert hlviz.hooks.logits_of(model(**clean)).shape == (1, 4, 5)


def test_repro_mha_out_proj_heads() -> None:
    """nn.MultiheadAttention's out_proj never runs as a module: refused, with the manual fix."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(
        torch.nn.Embedding(30, 16),
        torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
    ).eval()
    ids = torch.randint(0, 30, (3, 7))
    with pytest.raises(OptionError, match=r"out_proj of an nn.MultiheadAttention.*zeroing its"):
        hlviz.ablate_heads(model, ids, "1.layers.*.self_attn.out_proj", metric=_metric, n_heads=4)
    with pytest.raises(OptionError, match="never runs as a module"):
        with ablating_heads(model, {"1.layers.0.self_attn.out_proj": [0]}, n_heads=4):
            model(ids)
    hlviz.testing.assert_no_hooks(model)
