"""CharGPT: layers and shapes, causality, head ablation, bits per character, the shipped checkpoint."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import hlviz
from hlviz import datasets
from hlviz.errors import DataFileError, OptionError, ShapeMismatchError, UnitIndexError
from hlviz.models.gpt import CHECKPOINT, CharGPT, load_char_gpt, save_char_gpt
from hlviz.models.rnn import ngram_bits_per_char
from hlviz.testing import assert_no_hooks

ROOT = Path(__file__).resolve().parents[1]
REBUILD = "python scripts/train_gpt.py"


@pytest.fixture
def small():
    torch.manual_seed(0)
    return CharGPT(vocab_size=11, d_model=12, n_heads=3, n_layers=2, context=9).eval()


@pytest.fixture(scope="module")
def shipped():
    return load_char_gpt()


def _layer_shapes(N, T, D, H, V, L):
    shapes = {
        "embed": (N, T, D),
        "pos": (T, D),
        "resid": (N, T, D),
        "ln_f": (N, T, D),
        "unembed": (N, T, V),
    }
    for i in range(L):
        b = f"blocks.{i}"
        shapes |= {
            b: (N, T, D),
            f"{b}.ln1": (N, T, D),
            f"{b}.attn": (N, T, D),
            f"{b}.attn.qkv": (N, T, 3 * D),
            f"{b}.attn.scores": (N, H, T, T),
            f"{b}.attn.pattern": (N, H, T, T),
            f"{b}.attn.heads": (N, H, T, D // H),
            f"{b}.attn.out": (N, T, D),
            f"{b}.mid": (N, T, D),
            f"{b}.ln2": (N, T, D),
            f"{b}.mlp": (N, T, D),
            f"{b}.mlp.act": (N, T, 4 * D),
        }
    return shapes


def test_every_documented_layer_has_its_documented_shape(small):
    ids = torch.randint(0, 11, (2, 7))
    shapes = _layer_shapes(N=2, T=7, D=12, H=3, V=11, L=2)
    with hlviz.record(small, list(shapes)) as rec:
        logits = small(ids)
    for name, shape in shapes.items():
        assert tuple(rec[name].shape) == shape, name
    pattern = rec["blocks.1.attn.pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 3, 7), atol=1e-6)
    above = torch.ones(7, 7, dtype=torch.bool).triu(1)
    assert float(pattern[..., above].abs().max()) == 0.0
    assert bool(torch.isinf(rec["blocks.0.attn.scores"][..., above]).all())
    # the residual stream: embed + pos, then each block's output; the last one feeds ln_f
    assert torch.allclose(rec["resid"], rec["embed"] + rec["pos"], atol=0)
    assert torch.allclose(rec["blocks.0.mid"], rec["resid"] + rec["blocks.0.attn"], atol=1e-6)
    assert torch.allclose(rec["blocks.0"], rec["blocks.0.mid"] + rec["blocks.0.mlp"], atol=1e-6)
    assert torch.allclose(small.unembed(small.ln_f(rec["blocks.1"])), logits, atol=1e-6)
    # the heads are the out-projection's input, head h in columns h*Dh:(h+1)*Dh
    heads = rec["blocks.1.attn.heads"].transpose(1, 2).reshape(2, 7, 12)
    assert torch.allclose(small.blocks[1].attn.out(heads), rec["blocks.1.attn.out"], atol=1e-6)
    assert_no_hooks(small)


def test_changing_character_t_never_changes_earlier_logits(small):
    ids = torch.randint(0, 11, (1, 9))
    base = small(ids)
    for t in (0, 4, 8):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % 11
        out = small(changed)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6, rtol=0), t
        assert not torch.allclose(out[:, t], base[:, t]), t


def test_ablating_a_head_equals_zeroing_its_slice_of_the_out_projection_input(small):
    ids = torch.randint(0, 11, (2, 8))
    base = small(ids)
    for h in range(3):
        with hlviz.edit(small, {"blocks.0.attn.heads": hlviz.ablate(units=[h])}):
            edited = small(ids)

        def zero_slice(module, args, h=h):
            x = args[0].clone()
            x[..., 4 * h : 4 * (h + 1)] = 0
            return (x,)

        handle = small.blocks[0].attn.out.register_forward_pre_hook(zero_slice)
        try:
            by_hand = small(ids)
        finally:
            handle.remove()
        assert torch.allclose(edited, by_hand, atol=1e-6, rtol=0), h
        assert not torch.allclose(edited, base)
    assert_no_hooks(small)


def test_hooks_leave_after_good_and_bad_calls_and_a_users_hook_survives(small):
    mine = small.blocks[1].attn.pattern.register_forward_hook(lambda m, i, o: None)
    ids = torch.randint(0, 11, (1, 5))
    with hlviz.record(small, ["blocks.*.attn.pattern"]) as rec:
        small(ids)
    assert len(rec["blocks.0.attn.pattern"]) == 1
    with pytest.raises(UnitIndexError, match="units \\[3\\] are out of range"):
        with hlviz.edit(small, {"blocks.0.attn.heads": hlviz.ablate(units=[3])}):
            small(ids)
    with pytest.raises(ShapeMismatchError, match="at most 9 characters"):  # raises mid-run
        with hlviz.record(small, ["blocks.0.attn.heads", "unembed"]):
            small(torch.zeros(1, 10, dtype=torch.long))

    def fail(module, args, output):
        raise RuntimeError("boom in block 1")

    failing = small.blocks[1].mlp.register_forward_hook(fail)  # a model that raises mid-forward
    with pytest.raises(RuntimeError, match="boom in block 1"):
        with hlviz.record(small, ["blocks.0.attn.heads", "unembed"]):
            small(ids)
    with pytest.raises(RuntimeError, match="boom in block 1"):
        with hlviz.edit(small, {"blocks.0.attn.heads": hlviz.ablate(units=[1])}):
            small(ids)
    failing.remove()
    assert_no_hooks(small, ignore=[mine])
    mine.remove()
    assert_no_hooks(small)


def test_chargpt_checks_its_inputs(small):
    with pytest.raises(ShapeMismatchError, match=r"int64 character ids of shape \(N, T\), got a"):
        small(torch.zeros(2, 3))
    with pytest.raises(ShapeMismatchError, match=r"got a \(5,\) torch.int64 tensor; encode"):
        small(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ShapeMismatchError, match="got list; encode text with corpus.encode"):
        small([[1, 2]])
    with pytest.raises(
        ShapeMismatchError, match=r"at most 9 characters .* got T=12; .*ids\[:, -9:\]"
    ):
        small(torch.zeros(1, 12, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vocab_size": 0}, "vocab_size must be a positive int, got 0"),
        ({"d_model": 2.5}, "d_model must be a positive int, got 2.5"),
        ({"n_layers": True}, "n_layers must be a positive int, got True"),
        ({"context": -1}, "context must be a positive int, got -1"),
        ({"d_model": 30}, r"d_model \(30\) must be a multiple of n_heads \(4\); try d_model=32"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\), got -0.1"),
    ],
)
def test_chargpt_checks_its_arguments(kwargs, message):
    with pytest.raises(OptionError, match=message):
        CharGPT(**{"vocab_size": 5, **kwargs})


@torch.no_grad()
def _bits_by_brute_force(model, ids, context, stride):
    """Score target i with the window the docstring promises, one window at a time."""
    n = len(ids)
    width = min(context, n - 1)
    starts = [*range(0, n - 1 - width, stride), n - 1 - width]
    total = 0.0
    for i in range(1, n):
        s = next(s for s in starts if s + width >= i)  # the first window reaching target i
        logits = model(ids[s : s + width].unsqueeze(0))[0, i - s - 1]
        total -= float(logits.log_softmax(-1)[ids[i]])
        if s > 0:  # a later window predicts from context - stride + 1 characters or more
            assert width - stride + 1 <= i - s <= width
    return total / (n - 1) / math.log(2)


@pytest.mark.parametrize("context,stride,n", [(9, 4, 40), (9, 1, 25), (6, 6, 31), (9, 3, 7)])
def test_bits_per_char_scores_every_character_once_from_its_window(small, context, stride, n):
    small.double()
    ids = torch.randint(0, 11, (n,))
    bits = small.bits_per_char(ids, context=context, stride=stride, batch=3)
    assert bits == pytest.approx(_bits_by_brute_force(small, ids, context, stride), abs=1e-9)


def test_bits_per_char_default_window_is_the_context_with_half_overlap(small):
    ids = torch.randint(0, 11, (50,))
    assert small.bits_per_char(ids) == pytest.approx(
        small.bits_per_char(ids, context=9, stride=4), abs=1e-6
    )
    with torch.no_grad():
        small.unembed.weight.zero_()
        small.unembed.bias.zero_()
    assert small.bits_per_char(ids) == pytest.approx(math.log2(11), abs=1e-6)


def test_bits_per_char_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = CharGPT(vocab_size=7, d_model=8, n_heads=2, n_layers=1, context=8, dropout=0.5)
    ids = torch.randint(0, 7, (30,))
    model.train()
    first, second = model.bits_per_char(ids), model.bits_per_char(ids)
    assert first == second and model.training
    model.eval()
    assert model.bits_per_char(ids) == first


def test_bits_per_char_checks_its_arguments(small):
    ids = torch.arange(20) % 11
    with pytest.raises(
        OptionError, match="context must be at most the model's 9 characters, got 10"
    ):
        small.bits_per_char(ids, context=10)
    with pytest.raises(OptionError, match=r"stride \(6\) must not exceed context \(5\)"):
        small.bits_per_char(ids, context=5, stride=6)
    with pytest.raises(OptionError, match="stride must be a positive int, got 0"):
        small.bits_per_char(ids, stride=0)
    with pytest.raises(OptionError, match="batch must be a positive int, got 0"):
        small.bits_per_char(ids, batch=0)
    with pytest.raises(OptionError, match="at least 2 integer character ids, got 20 torch.float32"):
        small.bits_per_char(ids.float())
    with pytest.raises(OptionError, match="at least 2 integer character ids, got 1 torch.int64"):
        small.bits_per_char(torch.tensor([3]))


def test_save_and_load_round_trip_in_float16(tmp_path, small):
    path = tmp_path / "m.safetensors"
    save_char_gpt(small, path, {"note": "x"})
    again = load_char_gpt(path)
    assert again.meta["note"] == "x" and not again.training
    assert (again.d_model, again.n_heads, again.n_layers, again.context) == (12, 3, 2, 9)
    for (k, a), b in zip(small.state_dict().items(), again.state_dict().values(), strict=True):
        assert b.dtype == torch.float32 and torch.equal(a.half().float(), b), k
    with pytest.raises(DataFileError, match="no checkpoint at .*train_gpt.py --out"):
        load_char_gpt(tmp_path / "missing.safetensors")


def test_checkpoint_loads_without_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = load_char_gpt()
    assert isinstance(model, CharGPT) and not model.training
    raw = (ROOT / "data" / CHECKPOINT).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors layout
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}
    config = json.loads(header["__metadata__"]["config"])
    assert config == {
        "vocab_size": model.vocab_size,
        "d_model": model.d_model,
        "n_heads": model.n_heads,
        "n_layers": model.n_layers,
        "context": model.context,
    }


def test_checkpoint_config_and_vocabulary(shipped):
    train = datasets.code_corpus("train")
    assert shipped.meta["vocab"] == train.vocab and shipped.vocab_size == len(train.vocab) == 96
    assert (shipped.d_model, shipped.n_heads, shipped.n_layers) == (128, 4, 4)
    training = json.loads(shipped.meta["training"])
    assert training["context"] == shipped.context and training["seq"] <= shipped.context
    assert json.loads(shipped.meta["evaluation"]) == {
        "context": shipped.context,
        "stride": shipped.context // 2,
    }


def test_checkpoint_reaches_its_stated_bits_per_char(shipped):
    test, train = datasets.code_corpus("test"), datasets.code_corpus("train")
    bpc = shipped.bits_per_char(test.encode())
    assert bpc == pytest.approx(float(shipped.meta["test_bits_per_char"]), abs=1e-3)
    unigram = ngram_bits_per_char(train.encode(), test.encode(), order=1, vocab_size=96)
    bigram = ngram_bits_per_char(train.encode(), test.encode(), order=2, vocab_size=96)
    assert unigram == pytest.approx(float(shipped.meta["unigram_test_bits_per_char"]), abs=1e-4)
    assert bigram == pytest.approx(float(shipped.meta["bigram_test_bits_per_char"]), abs=1e-4)
    assert bpc < bigram - 1.0 < unigram - 1.0  # clearly better than both baselines
    # float16 storage costs (almost) nothing
    assert bpc == pytest.approx(float(shipped.meta["test_bits_per_char_float32"]), abs=0.01)


def test_missing_or_damaged_checkpoint_says_how_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr("hlviz.datasets.files.data_dir", lambda: tmp_path)
    shutil.copy(ROOT / "data" / "SHA256SUMS", tmp_path / "SHA256SUMS")
    with pytest.raises(DataFileError, match=rf"{CHECKPOINT}' is missing .*`{REBUILD}`"):
        load_char_gpt()
    data = bytearray((ROOT / "data" / CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / CHECKPOINT).write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=rf"{CHECKPOINT}' is damaged or stale.*`{REBUILD}`"):
        load_char_gpt()
    (tmp_path / "SHA256SUMS").write_text("")
    with pytest.raises(DataFileError, match=rf"{CHECKPOINT}' has no line in .*`{REBUILD}`"):
        load_char_gpt()


def test_a_checkpoint_without_config_or_with_other_tensors_is_refused(tmp_path, small):
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"note": "x"})
    with pytest.raises(DataFileError, match="has no CharGPT config in its metadata"):
        load_char_gpt(path)
    config = {"vocab_size": 11, "d_model": 12, "n_heads": 3, "n_layers": 2, "context": 9}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"config": json.dumps(config)})
    with pytest.raises(DataFileError, match=r"holds tensors \[.*\] that do not match CharGPT"):
        load_char_gpt(path)


def test_block_structure_is_pre_layernorm(small):
    block = small.blocks[0]
    assert isinstance(block.ln1, nn.LayerNorm) and isinstance(block.mlp.act, nn.GELU)
    assert "vocab=11, d_model=12, heads=3, layers=2, context=9" in repr(small)
