"""Small models that exercise the hard cases of hooking."""

from __future__ import annotations

import torch
from torch import nn


class Blocks(nn.Module):
    """A small CNN with readable names: features.{0..5}, pool, classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class Exploding(nn.Module):
    """Raises in the middle of its forward pass, after some hooked layers ran."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        h = self.a(x)
        raise RuntimeError("boom inside forward")
        return self.b(h)  # pragma: no cover


class Shared(nn.Module):
    """Calls the same module three times in one forward pass."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(5, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        for _ in range(3):
            x = torch.tanh(self.block(x))
        return self.head(x)


class DictOut(nn.Module):
    """Returns a dict; its child returns a dict too."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 6)
        self.inner = _DictChild()

    def forward(self, x):
        h = self.enc(x)
        return {"hidden": self.inner(h)["z"], "logits": h.sum(-1)}


class _DictChild(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, h):
        return {"meta": "not a tensor", "z": self.lin(h)}


def tiny_bert(layers: int = 2, hidden: int = 16, vocab: int = 50):
    """A Hugging Face BertModel from a small random config (eval mode), or a skip."""
    import pytest

    transformers = pytest.importorskip(
        "transformers", reason="transformers is part of the dev extra"
    )
    cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden + 4,
        max_position_embeddings=32,
    )
    return transformers.BertModel(cfg).eval()


def tiny_gpt2(layers: int = 2, *, eager: bool = True):
    """A Hugging Face GPT2LMHeadModel from a small seeded config (eval mode), or a skip."""
    import pytest

    transformers = pytest.importorskip(
        "transformers", reason="transformers is part of the dev extra"
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=30,
        n_positions=16,
        n_embd=16,
        n_layer=layers,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    if eager:
        model.set_attn_implementation("eager")
    return model
