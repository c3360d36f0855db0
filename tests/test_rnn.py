"""CharLSTM: the unrolled path equals nn.LSTM; hook points; baselines; the shipped checkpoint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import DataFileError, OptionError, ShapeMismatchError
from hlviz.models.rnn import (
    CHECKPOINT,
    CharLSTM,
    RNNStates,
    load_char_lstm,
    lstm_layer_steps,
    ngram_bits_per_char,
    save_char_lstm,
)
from hlviz.testing import assert_no_hooks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small():
    torch.manual_seed(0)
    return CharLSTM(vocab_size=11, hidden_size=6, num_layers=3, embed_dim=5).double().eval()


def test_unrolled_path_equals_nn_lstm_outputs_and_final_states(small):
    ids = torch.randint(0, 11, (3, 17))
    hx = (torch.randn(3, 3, 6, dtype=torch.double), torch.randn(3, 3, 6, dtype=torch.double))
    fast, slow = small.run(ids, hx), small.run(ids, hx, unroll=True)
    assert fast.states is None and slow.states is not None
    for a, b in ((fast.logits, slow.logits), (fast.h_n, slow.h_n), (fast.c_n, slow.c_n)):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    # the top layer's per-step h is what nn.LSTM returns as its output
    out, _ = small.lstm(small.embed(ids), hx)
    assert torch.allclose(slow.states["h"][-1], out, atol=1e-12, rtol=0)
    assert torch.equal(small(ids, hx), fast.logits)


def test_unrolled_gates_follow_the_lstm_equations(small):
    ids = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        s = small.run(ids, unroll=True).states
    assert s.names == ("h", "c", "i", "f", "g", "o") and s.num_layers == 3
    assert tuple(s["i"].shape) == (3, 2, 9, 6)
    c_prev = torch.cat([torch.zeros(3, 2, 1, 6, dtype=torch.double), s["c"][:, :, :-1]], 2)
    assert torch.allclose(s["c"], s["f"] * c_prev + s["i"] * s["g"], atol=1e-12)
    assert torch.allclose(s["h"], s["o"] * torch.tanh(s["c"]), atol=1e-12)
    assert float(s["i"].min()) >= 0 and float(s["g"].min()) < 0  # sigmoid vs tanh
    assert s.flat("h", 1).shape == (18, 6) and s.flat("h", 1).dtype == np.float32
    assert "RNNStates(lstm: 3 layers, 2 sequences x 9 steps x 6 units" in repr(s)
    with pytest.raises(OptionError, match="no state 'x' in these LSTM states; choose from 'h'"):
        s["x"]
    with pytest.raises(OptionError, match="layer must be an int in 0..2, got 3"):
        s.flat("h", 3)


def test_lstm_layer_steps_equals_a_one_layer_lstm():
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 5, batch_first=True, bias=False).double()
    x = torch.randn(2, 8, 4, dtype=torch.double)
    out = lstm_layer_steps(
        x, (lstm.weight_ih_l0, lstm.weight_hh_l0, None, None), *torch.zeros(2, 2, 5).double()
    )
    assert torch.allclose(out["h"], lstm(x)[0], atol=1e-12)


def test_record_sees_every_layer_in_the_unrolled_path(small):
    ids = torch.randint(0, 11, (2, 7))
    names = ["cells.0.h", "cells.1.c", "cells.2.gates", "lstm"]
    with hlviz.record(small, names[:3]) as rec:
        states = small.run(ids, unroll=True).states  # run(): the root hooks do not fire
    assert torch.equal(rec["cells.0.h"], states["h"][0])
    assert torch.equal(rec["cells.1.c"], states["c"][1])
    gates = torch.cat([states[g][2] for g in "ifgo"], dim=-1)
    assert torch.equal(rec["cells.2.gates"], gates)
    with hlviz.record(small, "lstm") as rec:
        small(ids)
    assert tuple(rec["lstm"].shape) == (2, 7, 6)
    assert_no_hooks(small)


def test_edit_at_every_step_changes_the_recurrence_but_an_edit_of_h_does_not(small):
    ids = torch.randint(0, 11, (1, 12))
    base = small.run(ids, unroll=True).states
    with hlviz.edit(small, {"cells.0.h": hlviz.ablate(units=[2])}):
        after_h = small.run(ids, unroll=True).states
    with hlviz.edit(small, {"cells.0.h_step": hlviz.ablate(units=[2])}):
        after_step = small.run(ids, unroll=True).states
    # editing the stacked output leaves layer 0's own recurrence (its c) unchanged ...
    assert torch.equal(after_h["c"][0], base["c"][0])
    assert not torch.allclose(after_h["h"][1], base["h"][1])
    # ... editing every step feeds the zero back: layer 0's later cell states change
    assert float(after_step["h"][0, :, :, 2].detach().abs().max()) == 0.0
    assert not torch.allclose(after_step["c"][0, :, 1:], base["c"][0, :, 1:])
    assert_no_hooks(small)


def test_charlstm_checks_its_arguments(small):
    with pytest.raises(ShapeMismatchError, match=r"int64 character ids of shape \(N, T\), got a"):
        small(torch.zeros(2, 3))
    with pytest.raises(ShapeMismatchError, match="got list; encode text with corpus.encode"):
        small([1, 2])
    with pytest.raises(ShapeMismatchError, match=r"hx must be a pair \(h_0, c_0\) of tensors"):
        small(torch.zeros(1, 3, dtype=torch.long), (torch.zeros(1, 1, 6),))
    with pytest.raises(OptionError, match="hidden_size must be a positive int, got 0"):
        CharLSTM(5, hidden_size=0)


def test_ngram_baselines_by_hand():
    # unigram: p(0) = (2+1)/(4+2) = 0.5, p(1) = 0.5 -> 1 bit
    assert ngram_bits_per_char([0, 1, 0, 1], [0, 1, 1], order=1, vocab_size=2) == pytest.approx(1)
    # bigram counts (add-one): 0->1 three times, 1->0 twice: p(1|0) = 4/5, p(0|1) = 3/4
    bits = ngram_bits_per_char([0, 1, 0, 1, 0, 1], [0, 1, 0], order=2, vocab_size=2)
    assert bits == pytest.approx(-(np.log2(0.8) + np.log2(0.75)) / 2)
    with pytest.raises(OptionError, match="order must be 1 \\(unigram\\) or 2 \\(bigram\\), got 3"):
        ngram_bits_per_char([0], [0, 1], order=3, vocab_size=2)


def test_bits_per_char_of_a_uniform_model_is_log2_vocab():
    model = CharLSTM(vocab_size=8, hidden_size=3)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    assert model.bits_per_char(torch.randint(0, 8, (100,)), streams=3) == pytest.approx(3.0)
    with pytest.raises(OptionError, match="5 characters are too few for 4 streams"):
        model.bits_per_char(torch.arange(5) % 8, streams=4)


def test_save_and_load_round_trip_in_float16(tmp_path, small):
    model = small.float()
    path = tmp_path / "m.safetensors"
    save_char_lstm(model, path, {"note": "x"})
    again = load_char_lstm(path)
    assert again.meta["note"] == "x" and not again.training
    assert again.hidden_size == 6 and again.num_layers == 3
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert b.dtype == torch.float32 and torch.equal(a.half().float(), b), k
    with pytest.raises(DataFileError, match="no checkpoint at .*train_lstm.py --out"):
        load_char_lstm(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def shipped():
    return load_char_lstm()


def test_checkpoint_loads_without_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = load_char_lstm()
    assert isinstance(model, CharLSTM) and model.vocab_size == 96
    raw = (ROOT / "data" / CHECKPOINT).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors layout
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}


def test_checkpoint_reaches_its_stated_bits_per_char(shipped):
    test = hlviz.datasets.code_corpus("test")
    train = hlviz.datasets.code_corpus("train")
    assert shipped.meta["vocab"] == test.vocab
    bpc = shipped.bits_per_char(test.encode())
    assert bpc == pytest.approx(float(shipped.meta["test_bits_per_char"]), abs=2e-3)
    unigram = ngram_bits_per_char(train.encode(), test.encode(), order=1, vocab_size=96)
    bigram = ngram_bits_per_char(train.encode(), test.encode(), order=2, vocab_size=96)
    assert unigram == pytest.approx(float(shipped.meta["unigram_test_bits_per_char"]), abs=1e-4)
    assert bigram == pytest.approx(float(shipped.meta["bigram_test_bits_per_char"]), abs=1e-4)
    assert bpc < bigram - 1.0 < unigram - 1.0  # clearly better than both baselines
    # float16 storage costs (almost) nothing
    assert bpc == pytest.approx(float(shipped.meta["test_bits_per_char_float32"]), abs=0.01)


def test_a_damaged_checkpoint_says_how_to_rebuild(tmp_path, monkeypatch):
    from hlviz.datasets import sha256_of

    digest = sha256_of(ROOT / "data" / CHECKPOINT)
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  {CHECKPOINT}\n")
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    monkeypatch.setattr("hlviz.datasets.files.data_dir", lambda: tmp_path)
    with pytest.raises(DataFileError, match=r"damaged or stale.*scripts/train_lstm\.py"):
        load_char_lstm()


def test_rnnstates_detached_is_a_copy_without_graph(small):
    states = small.float().run(torch.randint(0, 11, (1, 4)), unroll=True).states
    assert states["h"].requires_grad
    plain = states.detached()
    assert isinstance(plain, RNNStates) and not plain["h"].requires_grad
    assert plain.gates == ("i", "f", "g", "o")
