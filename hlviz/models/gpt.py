"""A tiny character GPT (pre-LayerNorm decoder) whose heads, patterns and residual stream are layers.

>>> model = CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=2, context=8)
>>> ids = torch.randint(0, 10, (3, 5))
>>> model(ids).shape
torch.Size([3, 5, 10])
>>> with hlviz.record(model, ["blocks.1.attn.pattern", "blocks.1.attn.heads"]) as rec:
...     _ = model(ids)
>>> tuple(rec["blocks.1.attn.pattern"].shape), tuple(rec["blocks.1.attn.heads"].shape)
((3, 2, 5, 5), (3, 2, 5, 8))

Layers (a batch of ``N`` sequences of ``T`` characters, width ``D = d_model``, ``H`` heads of
``Dh = D / H``; every name is a module, so :func:`hlviz.record`, :func:`hlviz.edit` and
:func:`hlviz.collect` reach it)::

    embed                   Embedding vocab->D                         (N, T, D)
    pos                     Embedding context->D (learned positions)   (T, D)
    resid                   identity: embed + pos, the stream's start  (N, T, D)
    blocks.{l}              one block; its output is the residual      (N, T, D)
                            stream after layer l
    blocks.{l}.ln1          LayerNorm before attention                 (N, T, D)
    blocks.{l}.attn         causal self-attention, written to stream   (N, T, D)
    blocks.{l}.attn.qkv     Linear D->3D                               (N, T, 3D)
    blocks.{l}.attn.scores  identity: scaled, masked q.k scores        (N, H, T, T)
    blocks.{l}.attn.pattern identity: softmax attention (rows sum 1)   (N, H, T, T)
    blocks.{l}.attn.heads   identity: each head's output before out    (N, H, T, Dh)
    blocks.{l}.attn.out     Linear D->D (mixes the heads)              (N, T, D)
    blocks.{l}.mid          identity: stream between attn and MLP      (N, T, D)
    blocks.{l}.ln2          LayerNorm before the MLP                   (N, T, D)
    blocks.{l}.mlp          fc D->4D, GELU (mlp.act), proj 4D->D       (N, T, D)
    ln_f                    final LayerNorm                            (N, T, D)
    unembed                 Linear D->vocab: next-character logits     (N, T, vocab)

Four-dimensional layers put heads on axis 1, where hlviz looks for units: so
``hlviz.ablate(units=[2])`` on ``blocks.1.attn.heads`` silences head 2 of layer 1, and
``hlviz.record(..., reduce=None)`` on ``attn.pattern`` gives every head's pattern. Attention
is written out (no fused kernel), so an edit of ``scores`` or ``pattern`` changes what the
model computes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import OptionError, ShapeMismatchError
from ._checkpoint import load_float16, save_float16

__all__ = ["CHECKPOINT", "CharGPT", "load_char_gpt", "save_char_gpt"]

CHECKPOINT = "code_gpt.safetensors"
_REBUILD = "python scripts/train_gpt.py"


def _check_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive int, got {value!r}.")


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with its scores, pattern and head outputs as layers."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.scores, self.pattern, self.heads = nn.Identity(), nn.Identity(), nn.Identity()
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (
            part.view(n, t, self.n_heads, self.head_dim).transpose(1, 2)
            for part in self.qkv(x).split(d, dim=-1)
        )  # each (N, H, T, Dh)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = self.scores(scores.masked_fill(future, float("-inf")))
        pattern = self.pattern(scores.softmax(dim=-1))
        heads = self.heads(self.drop(pattern) @ v)  # (N, H, T, Dh)
        return self.drop(self.out(heads.transpose(1, 2).reshape(n, t, d)))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(.))``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.mid = nn.Identity()
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc", nn.Linear(d_model, 4 * d_model))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("proj", nn.Linear(4 * d_model, d_model))
        self.mlp.add_module("drop", nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid(x + self.attn(self.ln1(x)))
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    """Token and position embeddings, ``n_layers`` pre-LN blocks, a final LayerNorm and an unembedding.

    >>> model = CharGPT(vocab_size=96)
    >>> model(torch.zeros(2, 7, dtype=torch.long)).shape
    torch.Size([2, 7, 96])

    ``forward(ids)`` takes int64 ids ``(N, T)`` with ``T <= context`` and returns next-character
    logits ``(N, T, vocab)``; position ``t`` sees characters ``0..t`` only. The unembedding is
    ``model.unembed`` after ``model.ln_f`` (what :func:`hlviz.logit_lens` reads).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        context: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        for value, name in (
            (vocab_size, "vocab_size"),
            (d_model, "d_model"),
            (n_heads, "n_heads"),
            (n_layers, "n_layers"),
            (context, "context"),
        ):
            _check_positive(value, name)
        if d_model % n_heads:
            raise OptionError(
                f"d_model ({d_model}) must be a multiple of n_heads ({n_heads}); "
                f"try d_model={n_heads * max(1, round(d_model / n_heads))}."
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise OptionError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.vocab_size, self.d_model, self.n_heads = vocab_size, d_model, n_heads
        self.n_layers, self.context, self.dropout = n_layers, context, float(dropout)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.resid = nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale the residual writes by depth
            if name.endswith(("attn.out.weight", "mlp.proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check_ids(self, ids: Any) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
            what = (
                f"a {tuple(ids.shape)} {ids.dtype} tensor"
                if isinstance(ids, torch.Tensor)
                else type(ids).__name__
            )
            raise ShapeMismatchError(
                f"CharGPT takes int64 character ids of shape (N, T), got {what}; encode text "
                "with corpus.encode(text) and add a batch axis with .unsqueeze(0)."
            )
        if ids.shape[1] > self.context:
            raise ShapeMismatchError(
                f"CharGPT sees at most {self.context} characters at once, got T={ids.shape[1]}; "
                f"cut the input into windows, e.g. ids[:, -{self.context}:]."
            )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self._check_ids(ids)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.resid(self.embed(ids) + self.pos(positions)))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))

    def bits_per_char(
        self, ids: Any, *, context: int | None = None, stride: int | None = None, batch: int = 64
    ) -> float:
        """Mean bits per character of this model predicting ``ids`` ``(T,)`` (its cross-entropy / ln 2).

        >>> _ = torch.manual_seed(0)
        >>> model = CharGPT(vocab_size=4, d_model=8, n_heads=2, n_layers=1, context=16)
        >>> bits = model.bits_per_char(torch.randint(0, 4, (300,)))
        >>> 1.9 < bits < 2.1   # an untrained model on 4 random symbols: about log2(4) = 2
        True

        A GPT sees at most ``context`` characters (default ``self.context``), so the text is read
        in windows of ``context`` characters that start every ``stride`` characters (default
        ``context // 2``). Every character but the first is scored exactly once: the first
        window scores all its predictions, each later window only the last ``stride`` of them,
        so every character after the first window is predicted from at least
        ``context - stride + 1`` (by default ``context / 2 + 1``) and at most ``context``
        characters of history. The LSTM's :meth:`hlviz.models.CharLSTM.bits_per_char` instead carries its state
        along 16 long contiguous streams (an unbounded history), so the two figures cover the
        same characters (up to the first one of each LSTM stream) but not the same information.
        ``stride=context`` gives non-overlapping windows (cheaper, less history on average).
        """
        return _bits_per_char(self, ids, context=context, stride=stride, batch=batch)

    def extra_repr(self) -> str:
        return (
            f"vocab={self.vocab_size}, d_model={self.d_model}, heads={self.n_heads}, "
            f"layers={self.n_layers}, context={self.context}"
        )


@torch.no_grad()
def _bits_per_char(
    model: CharGPT,
    ids: Any,
    *,
    context: int | None = None,
    stride: int | None = None,
    batch: int = 64,
) -> float:
    """The body of :meth:`CharGPT.bits_per_char`."""
    context = model.context if context is None else context
    _check_positive(context, "context")
    if context > model.context:
        raise OptionError(
            f"context must be at most the model's {model.context} characters, got {context}."
        )
    stride = context // 2 if stride is None else stride
    _check_positive(stride, "stride")
    _check_positive(batch, "batch")
    if stride > context:
        raise OptionError(
            f"stride ({stride}) must not exceed context ({context}): characters between "
            "windows would never be scored."
        )
    ids = torch.as_tensor(ids).reshape(-1)
    if ids.is_floating_point() or len(ids) < 2:
        raise OptionError(
            f"ids must be at least 2 integer character ids, got {len(ids)} {ids.dtype} values."
        )
    n = len(ids)
    # window s reads ids[s : s + width] and predicts ids[s + 1 : s + width + 1]
    width = min(context, n - 1)
    starts = [*range(0, n - 1 - width, stride), n - 1 - width]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout while scoring
    try:
        total, count = _score_windows(model, ids, starts, width, batch, device)
    finally:
        model.train(was_training)
    return total / count / math.log(2)


def _score_windows(
    model: CharGPT, ids: torch.Tensor, starts: list[int], width: int, batch: int, device: Any
) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) and count of the characters ``bits_per_char`` scores."""
    total, count, scored_to = 0.0, 0, 0  # targets 1..scored_to are already scored
    for first in range(0, len(starts), batch):
        chunk = starts[first : first + batch]
        index = torch.tensor(chunk).unsqueeze(1) + torch.arange(width + 1)
        windows = ids[index].to(device)
        logits = model(windows[:, :-1])
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        nll = nn.functional.cross_entropy(
            logits.transpose(1, 2), windows[:, 1:], reduction="none"
        )  # (W, width): nll[w, j] is for target index chunk[w] + j + 1
        for row, start in enumerate(chunk):
            skip = max(0, scored_to - start)
            total += float(nll[row, skip:].sum(dtype=torch.float64))
            count += width - skip
            scored_to = start + width
    return total, count


def save_char_gpt(model: CharGPT, path: Any, metadata: dict[str, str]) -> None:
    """Write ``model`` to a safetensors file as float16 (sizes and ``metadata`` in its header)."""
    config = {
        "vocab_size": model.vocab_size,
        "d_model": model.d_model,
        "n_heads": model.n_heads,
        "n_layers": model.n_layers,
        "context": model.context,
    }
    save_float16(model, path, config, metadata)


def load_char_gpt(path: Any = None, *, device: str | torch.device | None = None) -> CharGPT:
    """The shipped :class:`CharGPT` (``data/code_gpt.safetensors``), float32, in eval mode.

    >>> model = load_char_gpt()
    >>> model.n_layers, model.n_heads, model.meta["vocab"] == hlviz.datasets.code_corpus("test").vocab
    (4, 4, True)

    Read with ``safetensors`` (no pickle) after checking its sha256 against
    ``data/SHA256SUMS``; a missing or damaged file raises
    :class:`~hlviz.errors.DataFileError` naming the command that rebuilds it. ``path``
    loads another checkpoint written by ``scripts/train_gpt.py --out`` (not checked).
    ``model.meta`` holds the file's metadata (vocabulary, test bits per character, ...).
    """
    return load_float16(CharGPT, path, checkpoint=CHECKPOINT, rebuild=_REBUILD, device=device)
