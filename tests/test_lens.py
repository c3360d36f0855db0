"""hlviz.logit_lens: the last layer is the model, per-layer reads agree with hand computation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import OptionError, ShapeMismatchError
from hlviz.models.gpt import CharGPT

from .zoo import tiny_gpt2


def _gpt(layers=2):
    torch.manual_seed(0)
    return CharGPT(vocab_size=12, d_model=16, n_heads=2, n_layers=layers, context=16).eval()


def test_char_gpt_last_layer_is_the_model_output():
    model = _gpt(3)
    ids = torch.randint(0, 12, (2, 7))
    lens = hlviz.logit_lens(model, ids)
    assert lens.layers == ("resid", "blocks.0", "blocks.1", "blocks.2")
    assert tuple(lens.logits.shape) == (4, 2, 7, 12)
    with torch.no_grad():
        expected = model(ids)
        first = model.unembed(model.ln_f(model.embed(ids) + model.pos(torch.arange(7))))
    torch.testing.assert_close(lens.logits[-1], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(lens.logits[0], first, rtol=0, atol=1e-5)
    assert torch.equal(lens.final, expected)
    hlviz.testing.assert_no_hooks(model)


def test_hugging_face_gpt2_last_layer_is_the_model_output():
    model = tiny_gpt2(3)
    ids = torch.randint(0, 30, (2, 6))
    lens = hlviz.logit_lens(model, {"input_ids": ids, "attention_mask": torch.ones(2, 6)})
    assert lens.layers == ("embeddings", "transformer.h.0", "transformer.h.1", "transformer.h.2")
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        embedded = model.lm_head(model.transformer.ln_f(out.hidden_states[0]))
        middle = model.lm_head(model.transformer.ln_f(out.hidden_states[1]))
    torch.testing.assert_close(lens.logits[-1], out.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(lens.logits[0], embedded, rtol=0, atol=1e-5)
    torch.testing.assert_close(lens.logits[1], middle, rtol=0, atol=1e-5)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)  # transformers adds hooks of its own


def test_next_token_targets_prob_rank_and_kl_agree_with_hand_computation():
    model = _gpt()
    ids = torch.randint(0, 12, (3, 6))
    lens = hlviz.logit_lens(model, ids, targets="next")
    assert torch.equal(lens.targets[:, :-1], ids[:, 1:]) and (lens.targets[:, -1] == -1).all()
    prob, rank = lens.prob(), lens.rank()
    assert prob.shape == rank.shape == (3, 3, 6)
    assert np.isnan(prob[:, :, -1]).all() and np.isnan(rank[:, :, -1]).all()
    probs = lens.logits.softmax(-1)
    layer, n, t = 1, 2, 3
    assert prob[layer, n, t] == pytest.approx(float(probs[layer, n, t, ids[n, t + 1]]), rel=1e-6)
    order = probs[layer, n, t].argsort(descending=True).tolist()
    assert rank[layer, n, t] == order.index(int(ids[n, t + 1]))
    kl = lens.kl_to_final()
    assert kl.shape == (3, 3, 6) and (kl > -1e-6).all()
    np.testing.assert_allclose(kl[-1], 0.0, atol=1e-5)
    assert kl[0].mean() > kl[-1].mean()
    # the top-1 token of each layer has rank 0 when it is the target
    top = lens.logits.argmax(-1)
    forced = hlviz.logit_lens(model, ids, targets=top[-1])
    assert (forced.rank()[-1] == 0).all()
    np.testing.assert_allclose(lens.rank(top[0])[0], 0.0)


def test_summary_top_k_and_plot():
    model = _gpt()
    ids = torch.randint(0, 12, (2, 5))
    lens = hlviz.logit_lens(model, ids, targets="next")
    frame = lens.summary()
    assert list(frame.columns) == [
        "layer",
        "kl_to_final",
        "agrees_with_final",
        "target_prob",
        "target_rank",
        "top1_accuracy",
    ]
    assert frame["agrees_with_final"].iloc[-1] == 1.0
    assert frame["kl_to_final"].iloc[-1] == pytest.approx(0.0, abs=1e-5)
    chars = "abcdefghijkl"
    decode = lambda ids: "".join(chars[i] for i in ids)  # noqa: E731
    top = lens.top_k(3, example=1, decode=decode)
    assert len(top) == 3 * 5 * 3 and set(top["rank"]) == {0, 1, 2}
    first = top[(top.layer == "blocks.1") & (top.position == 2) & (top["rank"] == 0)].iloc[0]
    best = lens.logits[-1, 1, 2].softmax(-1).max(-1)
    assert first.text == chars[int(best.indices)] and first.prob == pytest.approx(
        float(best.values)
    )
    ax = lens.plot(1, decode=decode)
    assert [t.get_text() for t in ax.get_xticklabels()] == [chars[i] for i in ids[1]]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(lens.layers)
    ax = lens.plot(0, what="top", decode=decode)
    assert len(ax.texts) == 3 * 5
    with pytest.raises(OptionError, match=r"what='bottom' is not one of 'target', 'top'.* Or None"):
        lens.plot(what="bottom")
    plain = hlviz.logit_lens(model, ids)
    assert "target_prob" not in plain.summary()
    with pytest.raises(OptionError, match="no targets: pass targets="):
        plain.prob()
    with pytest.raises(ShapeMismatchError, match=r"targets must be \(N, T\) = \(2, 5\)"):
        plain.rank(torch.zeros(2, 4, dtype=torch.long))


class _Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.body = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, ids):
        return self.head(self.body(self.emb(ids)))


def test_explicit_norm_and_unembed_and_errors():
    torch.manual_seed(0)
    model = _Plain().eval()
    ids = torch.randint(0, 10, (2, 4))
    with pytest.raises(OptionError, match=r"could not find the norm and unembed of _Plain"):
        hlviz.logit_lens(model, ids, ["emb", "body"])
    lens = hlviz.logit_lens(model, ids, ["emb", "body"], norm=nn.Identity(), unembed=model.head)
    torch.testing.assert_close(lens.logits[1], model(ids), rtol=0, atol=1e-6)
    with pytest.raises(OptionError, match="has no nn.ModuleList of blocks"):
        hlviz.logit_lens(model, ids, norm=nn.Identity(), unembed=model.head)
    gpt = _gpt()
    with pytest.raises(ShapeMismatchError, match=r"not a residual stream \(N, T, D\)"):
        hlviz.logit_lens(gpt, ids, "blocks.0.attn.pattern")
    with pytest.raises(ShapeMismatchError, match=r"could not decode layer 'blocks.0.mlp.fc'"):
        hlviz.logit_lens(gpt, ids, "blocks.0.mlp.fc")
    with pytest.raises(ShapeMismatchError, match="the model's logits are"):
        hlviz.logit_lens(gpt, ids, "blocks.0", unembed=lambda h: h)
    with pytest.raises(OptionError, match="targets='next' needs integer input ids"):
        hlviz.logit_lens(
            model, (ids,), ["emb"], norm=nn.Identity(), unembed=model.head, targets="next"
        )
    with pytest.raises(OptionError, match="targets must be 'next'"):
        hlviz.logit_lens(gpt, ids, targets="previous")
    with pytest.raises(ShapeMismatchError, match=r"shape of the input ids \(2, 4\)"):
        hlviz.logit_lens(gpt, ids, targets=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(
        hlviz.errors.OptionTypeError, match="unembed must be a module or a callable"
    ):
        hlviz.logit_lens(gpt, ids, unembed=3)
    hlviz.testing.assert_no_hooks(gpt)
    hlviz.testing.assert_no_hooks(model)


class _RaisesInBlock(CharGPT):
    """Raises before its second block on a batch of more than one sequence, after the
    hooks on resid and blocks.0 have fired."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def forward(self, ids):
        x = self.resid(self.embed(ids) + self.pos(torch.arange(ids.shape[1])))
        for i, block in enumerate(self.blocks):
            if i == 1 and ids.shape[0] > 1:
                self.seen = [len(m._forward_hooks) for m in (self.resid, self.blocks[0])]
                raise RuntimeError("boom inside block 1")
            x = block(x)
        return self.unembed(self.ln_f(x))


def test_hooks_never_leak_when_the_model_raises_and_a_user_hook_survives():
    torch.manual_seed(0)
    model = _RaisesInBlock(vocab_size=12, d_model=16, n_heads=2, n_layers=2, context=16).eval()
    fired = []
    user = model.blocks[0].register_forward_hook(lambda *a: fired.append(1))
    try:
        with pytest.raises(RuntimeError, match="boom inside block 1"):
            hlviz.logit_lens(model, torch.zeros(2, 4, dtype=torch.long))
        assert model.seen == [1, 2]  # the lens's hooks were attached when it raised
        with pytest.raises(hlviz.errors.LayerNotFoundError):
            hlviz.logit_lens(model, torch.zeros(1, 4, dtype=torch.long), "blocks.7")
        hlviz.logit_lens(model, torch.zeros(1, 4, dtype=torch.long))
        hlviz.testing.assert_no_hooks(model, ignore=[user])
        before = len(fired)
        model.blocks[0](torch.zeros(1, 3, 16))
        assert len(fired) == before + 1
    finally:
        user.remove()
    hlviz.testing.assert_no_hooks(model)


def test_next_targets_are_none_at_padding_on_either_side():
    model = tiny_gpt2()
    ids = torch.tensor([[1, 2, 3, 0, 0], [0, 0, 4, 5, 6], [7, 8, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    lens = hlviz.logit_lens(model, {"input_ids": ids, "attention_mask": mask}, targets="next")
    assert lens.targets.tolist() == [
        [2, 3, -1, -1, -1],  # right padding: position 2 predicts padding, 3 and 4 are padding
        [-1, -1, 5, 6, -1],  # left padding: position 1 is padding even though 2 is real
        [8, 9, 10, 11, -1],
    ]
    assert np.isnan(lens.prob()[:, 0, 2:]).all() and np.isnan(lens.rank()[:, 1, :2]).all()
    assert not np.isnan(lens.prob()[:, 1, 2:4]).any()
    plain = hlviz.logit_lens(model, ids, targets="next")  # no mask: every next token counts
    assert plain.targets[:, :-1].tolist() == ids[:, 1:].tolist()
    with pytest.raises(ShapeMismatchError, match=r"attention_mask has shape \(3, 4\)"):
        hlviz.logit_lens(model, {"input_ids": ids, "attention_mask": mask[:, :4]}, targets="next")
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)


class _MoE(nn.Module):
    def __init__(self, d, experts):
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(d, d) for _ in range(experts))
        self.router = nn.Linear(d, experts)

    def forward(self, x):
        w = self.router(x).softmax(-1)
        return x + sum(w[..., i : i + 1] * e(x) for i, e in enumerate(self.experts))


class _MoEModel(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList(_MoE(8, 4) for _ in range(2))
        self.norm = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 10)
        self.scale = scale

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x)) * self.scale


def test_mixture_of_experts_blocks_are_the_layers_not_the_experts():
    torch.manual_seed(0)
    model = _MoEModel().eval()
    ids = torch.randint(0, 10, (2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lens = hlviz.logit_lens(model, ids)
    assert lens.layers == ("embeddings", "layers.0", "layers.1")
    torch.testing.assert_close(lens.logits[-1], model(ids), rtol=0, atol=1e-5)
    model.scale = 3.0  # the output is no longer unembed(norm(last block))
    with pytest.warns(
        hlviz.HlvizWarning,
        match=r"last row \('layers.1'\) differs from the model's final logits.*may not be "
        r"the residual stream\. Pass layers=.*norm= and unembed=",
    ):
        hlviz.logit_lens(model, ids)
    with warnings.catch_warnings():  # chosen layers: a last row that is not the output is fine
        warnings.simplefilter("error")
        hlviz.logit_lens(model, ids, "layers.0")
    hlviz.testing.assert_no_hooks(model)


def test_plot_without_targets_shows_the_top_token():
    model = _gpt()
    ids = torch.randint(0, 12, (2, 5))
    plain = hlviz.logit_lens(model, ids)
    ax = plain.plot(decode=lambda t: "abcdefghijkl"[t[0]])
    assert ax.get_images()[0].colorbar.ax.get_ylabel() == "p(top token)"
    assert len(ax.texts) == 3 * 5
    with pytest.raises(OptionError, match=r"what='target' needs targets.*targets='next'"):
        plain.plot(what="target")
    with pytest.raises(OptionError, match=r"what='bottom' is not one of 'target', 'top'.* Or None"):
        plain.plot(what="bottom")
    with_targets = hlviz.logit_lens(model, ids, targets="next")
    ax = with_targets.plot()
    assert ax.get_images()[0].colorbar.ax.get_ylabel() == "p(next token)"


def test_per_layer_statistics_equal_the_full_size_formulas():
    model = _gpt(3)
    ids = torch.randint(0, 12, (3, 7))
    lens = hlviz.logit_lens(model, ids, targets="next")
    logits, chosen = lens.logits, lens.targets
    valid = (chosen >= 0)[None]
    index = chosen.clamp_min(0)[None, :, :, None].expand(logits.shape[0], -1, -1, 1)
    prob = logits.softmax(-1).gather(-1, index)[..., 0].double()
    prob = torch.where(valid, prob, torch.nan).numpy()
    ranks = (logits > logits.gather(-1, index)).sum(-1).double()
    ranks = torch.where(valid, ranks, torch.nan).numpy()
    final = lens.final.log_softmax(-1)[None]
    kl = (final.exp() * (final - logits.log_softmax(-1))).sum(-1).double().numpy()
    np.testing.assert_allclose(lens.prob(), prob, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(lens.rank(), ranks)
    np.testing.assert_allclose(lens.kl_to_final(), kl, rtol=1e-5, atol=1e-7)
    frame = lens.summary()
    np.testing.assert_allclose(frame["kl_to_final"], kl.mean((1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(frame["target_prob"], np.nanmean(prob, (1, 2)), rtol=1e-6)
    np.testing.assert_allclose(frame["target_rank"], np.nanmean(ranks, (1, 2)), rtol=1e-12)
