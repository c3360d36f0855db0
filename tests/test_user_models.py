"""The model zoo: small random-config models users bring (Hugging Face GPT-2, Llama, BERT,
T5, ViT, Wav2Vec2; nn.MultiheadAttention stacks; a compiled model; a multi-input model) and
data as tensors, tuples, lists, dicts and DataLoaders. Each verb is checked against a
hand-written reference: a plain forward hook, a manual ablation, a manual patch.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hlviz

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=30, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(cfg), torch.randint(0, 30, (2, 6)), "transformer.h.1", 16


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=30,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    return transformers.LlamaForCausalLM(cfg), torch.randint(0, 30, (2, 6)), "model.layers.0", 16


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=16,
    )
    ids = torch.randint(1, 30, (2, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return transformers.BertModel(cfg), batch, "encoder.layer.1.output", 16


def _t5():
    cfg = transformers.T5Config(
        vocab_size=30,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
    )
    batch = {
        "input_ids": torch.randint(2, 30, (2, 6)),
        "decoder_input_ids": torch.zeros(2, 3).long(),
    }
    return transformers.T5ForConditionalGeneration(cfg), batch, "encoder.block.0", 16


def _vit():
    cfg = transformers.ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=16,
        patch_size=8,
        num_labels=3,
    )
    return (
        transformers.ViTForImageClassification(cfg),
        torch.randn(2, 3, 16, 16),
        "vit.embeddings",
        16,
    )


def _wav2vec2():
    cfg = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    return transformers.Wav2Vec2Model(cfg), torch.randn(2, 400), "feature_extractor", 8


def _mha_stack():
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    model = nn.Sequential(
        nn.Linear(5, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    )
    return model, torch.randn(2, 7, 5), "1.layers.0", 16


def _compiled():
    net = nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.Conv1d(8, 4, 3))
    model = torch.compile(net, backend="eager")
    x = torch.randn(2, 3, 12)
    model(x)  # warmed up before hlviz sees it
    return model, x, "1", 8


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(3, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x, z):
        return self.out(torch.tanh(self.a(x) + self.b(z)))


def _two_inputs():
    return TwoInputs(), (torch.randn(2, 4), torch.randn(2, 3)), "a", 6


ZOO = {
    "gpt2": _gpt2,
    "llama": _llama,
    "bert": _bert,
    "t5": _t5,
    "vit": _vit,
    "wav2vec2": _wav2vec2,
    "mha_stack": _mha_stack,
    "compiled": _compiled,
    "two_inputs": _two_inputs,
}


def _run(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def _reference(model, inputs, name, edit=None):
    """The layer's output through a plain forward hook (optionally editing it)."""
    module = hlviz.hooks.unwrap(model).get_submodule(name)
    seen = []

    def hook(mod, args, output):
        out = output[0] if isinstance(output, tuple) else output
        if edit is not None:
            out = edit(out.clone())
        seen.append(out.detach().clone())
        if edit is not None:
            return (out, *output[1:]) if isinstance(output, tuple) else out

    target = getattr(model, "_orig_mod", model)
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            result = _run(target, inputs)
    finally:
        handle.remove()
    return seen[0], result


@pytest.fixture(params=sorted(ZOO))
def zoo(request):
    torch.manual_seed(0)
    model, inputs, layer, units = ZOO[request.param]()
    return request.param, model.eval(), inputs, layer, units


def test_record_reduce_and_ablate_agree_with_hand_written_hooks(zoo) -> None:
    kind, model, inputs, layer, units = zoo
    truth, _ = _reference(model, inputs, layer)
    got = hlviz.activations(model, inputs, layer)[layer]
    torch.testing.assert_close(got, truth)
    unit_axis = 1 if kind in ("wav2vec2", "compiled") else truth.dim() - 1
    assert truth.shape[unit_axis] == units
    mean = hlviz.activations(model, inputs, layer, reduce="mean")[layer]
    pooled = truth if truth.dim() == 2 else truth.mean(3 - unit_axis)
    torch.testing.assert_close(mean, pooled)

    def zero_unit(out):
        out.select(unit_axis, 1).zero_()
        return out

    _, manual = _reference(model, inputs, layer, edit=zero_unit)
    with torch.no_grad(), hlviz.edit(model, {layer: hlviz.ablate(units=[1])}):
        edited = _run(model, inputs)
    torch.testing.assert_close(hlviz.hooks.logits_of(edited), hlviz.hooks.logits_of(manual))
    hlviz.testing.assert_no_hooks(hlviz.hooks.unwrap(model), hlviz_only=True)


@pytest.mark.parametrize("form", ["tensor", "tuple", "list", "dict", "loader", "loader_x"])
def test_collect_takes_every_data_form(form) -> None:
    torch.manual_seed(0)
    model = TwoInputs().eval()
    x, z = torch.randn(6, 4), torch.randn(6, 3)
    truth = model.a(x).detach()
    if form == "tensor":
        single = nn.Sequential(nn.Linear(4, 6)).eval()
        store = hlviz.collect(single, x, "0", progress=False)
        torch.testing.assert_close(torch.as_tensor(store["0"][:]), single(x).detach())
        return
    data = {
        "tuple": [(x[:3], z[:3]), (x[3:], z[3:])],
        "list": [[x[:3], z[:3]], [x[3:], z[3:]]],
        "dict": [{"x": x[:3], "z": z[:3]}, {"x": x[3:], "z": z[3:]}],
        "loader": DataLoader(TensorDataset(x, z), batch_size=4),
        "loader_x": DataLoader(TensorDataset(x, z), batch_size=2),
    }[form]
    store = hlviz.collect(model, data, "a", progress=False)
    torch.testing.assert_close(torch.as_tensor(store["a"][:]), truth)


@pytest.mark.parametrize("build", [_gpt2, _llama])
def test_patching_lens_and_heads_on_decoders(build) -> None:
    torch.manual_seed(0)
    model, ids, _, _ = build()
    model.eval()
    corrupted = ids.clone()
    corrupted[:, 1] = (ids[:, 1] + 7) % 30
    blocks = "transformer.h.*" if "GPT2" in type(model).__name__ else "model.layers.*"
    metric = lambda logits: logits[:, -1, 3] - logits[:, -1, 4]  # noqa: E731
    result = hlviz.activation_patching(
        model, ids, corrupted, blocks, metric=metric, positions="all"
    )
    # the reference: patch the last block's clean output by hand
    last = hlviz.hooks.resolve(model, blocks)[-1]
    clean, _ = _reference(model, ids, last)
    _, patched = _reference(model, corrupted, last, edit=lambda out: clean)
    assert result.raw[-1, 0] == pytest.approx(float(metric(patched.logits).mean()), abs=1e-5)
    lens = hlviz.logit_lens(model, ids)
    torch.testing.assert_close(lens.logits[-1], model(ids).logits.detach(), atol=1e-4, rtol=1e-4)
    # head ablation against zeroing head 0's slice of the output projection's input by hand
    proj = "transformer.h.0.attn.c_proj" if "GPT2" in type(model).__name__ else None
    proj = proj or "model.layers.0.self_attn.o_proj"
    heads = hlviz.ablate_heads(model, ids, proj, metric=metric)

    def zero_head(module, args):
        x = args[0].clone()
        x[..., :8] = 0
        return (x,)

    handle = model.get_submodule(proj).register_forward_pre_hook(zero_head)
    try:
        with torch.no_grad():
            manual = float(metric(model(ids).logits).mean())
    finally:
        handle.remove()
    assert heads.effect[0, 0] == pytest.approx(manual - heads.base_score, abs=1e-5)
    hlviz.testing.assert_no_hooks(model, hlviz_only=True)
