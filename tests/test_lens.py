"""hlviz.logit_lens: the last layer is the model, per-layer reads agree with hand computation."""

from __future__ import annotations

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
    with pytest.raises(OptionError, match="what must be 'target' or 'top'"):
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


def test_hooks_never_leak_when_the_model_raises_and_a_user_hook_survives():
    model = _gpt()
    fired = []
    user = model.blocks[0].register_forward_hook(lambda *a: fired.append(1))
    try:
        with pytest.raises(ShapeMismatchError, match="CharGPT sees at most 16"):
            hlviz.logit_lens(model, torch.zeros(1, 20, dtype=torch.long))
        with pytest.raises(hlviz.errors.LayerNotFoundError):
            hlviz.logit_lens(model, torch.zeros(1, 4, dtype=torch.long), "blocks.7")
        hlviz.logit_lens(model, torch.zeros(1, 4, dtype=torch.long))
        hlviz.testing.assert_no_hooks(model, ignore=[user])
        before = len(fired)
        model(torch.zeros(1, 3, dtype=torch.long))
        assert len(fired) == before + 1
    finally:
        user.remove()
