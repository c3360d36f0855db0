"""What each attention head looks at: score every head against a pattern of keys.

>>> import torch
>>> from hlviz.transformer import patterns as attention
>>> mask = torch.ones(1, 4, dtype=torch.bool)
>>> attn = torch.zeros(1, 1, 2, 4, 4)          # (N, layers, heads, queries, keys)
>>> attn[0, 0, 0] = torch.eye(4).roll(-1, 1)   # head 0 looks at the previous token
>>> attn[0, 0, 1] = torch.eye(4)               # head 1 looks at itself
>>> attention.head_scores(attn, attention.previous_token(mask), mask).round(2).tolist()
[[0.75, 0.0]]

A pattern is a boolean ``(N, T, T)`` tensor (query x key) marking the keys a head of that
kind attends to; a head's score is the attention mass it puts on those keys, averaged over
the query positions that count (``queries``). A score of 1 means the head attends only
there; the mean over all heads is the baseline to compare with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._checks import positive_int
from ..errors import OptionError, ShapeMismatchError

__all__ = [
    "head_scores",
    "induction",
    "matching_bracket",
    "previous_token",
    "same_word",
    "to_token",
]


def _stack(attentions: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """``(N, layers, heads, T, T)`` from a tensor or from a model's per-layer tuple."""
    if isinstance(attentions, torch.Tensor):
        attn = attentions
    else:
        attn = torch.stack([torch.as_tensor(a) for a in attentions], 1)
    if attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ShapeMismatchError(
            "attentions must be (N, layers, heads, T, T), or a sequence of (N, heads, T, T) per "
            f"layer as in a Hugging Face output's .attentions; got shape {tuple(attn.shape)}."
        )
    return attn.detach().float().cpu()


def head_scores(
    attentions: torch.Tensor | Sequence[torch.Tensor],
    pattern: torch.Tensor,
    queries: torch.Tensor,
) -> np.ndarray:
    """Attention mass each head puts on ``pattern``'s keys, averaged over ``queries``.

    Args:
        attentions: ``(N, layers, heads, T, T)``, or the per-layer ``(N, heads, T, T)``
            tuple a Hugging Face model returns with ``output_attentions=True``.
        pattern: ``(N, T, T)`` bool, query x key: the keys that count for each query.
        queries: ``(N, T)`` bool: the query positions to average over (e.g. real tokens).

    Returns ``(layers, heads)`` scores in [0, 1].
    """
    attn = _stack(attentions)
    n, _, _, t, _ = attn.shape
    pattern, queries = torch.as_tensor(pattern).bool().cpu(), torch.as_tensor(queries).bool().cpu()
    if pattern.shape != (n, t, t) or queries.shape != (n, t):
        raise ShapeMismatchError(
            f"for attentions of {n} sequences of {t} positions, pattern must be {(n, t, t)} and "
            f"queries {(n, t)}; got {tuple(pattern.shape)} and {tuple(queries.shape)}."
        )
    if not queries.any():
        raise ShapeMismatchError("queries selects no position; mark at least one query as True.")
    mass = (attn * pattern[:, None, None].float()).sum(-1)  # (N, layers, heads, T)
    weight = queries[:, None, None].float()
    return ((mass * weight).sum((0, 3)) / weight.sum((0, 3))).numpy()


def previous_token(mask: torch.Tensor) -> torch.Tensor:
    """``(N, T, T)``: each query's key is the position just before it (within ``mask``)."""
    mask = torch.as_tensor(mask).bool()
    t = mask.shape[-1]
    before = torch.diag_embed(torch.ones(t - 1), offset=-1).bool()
    return before[None] & mask[:, :, None] & mask[:, None, :]


def to_token(ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """``(N, T, T)``: every query's keys are the positions holding ``token_id`` (e.g. [SEP])."""
    ids = torch.as_tensor(ids)
    return (ids == token_id)[:, None, :].expand(-1, ids.shape[1], -1)


def same_word(word_of: torch.Tensor) -> torch.Tensor:
    """``(N, T, T)``: the other pieces of the same word (``word_of``: word id per piece, -1 none)."""
    word_of = torch.as_tensor(word_of)
    same = (word_of[:, :, None] == word_of[:, None, :]) & (word_of[:, :, None] >= 0)
    return same & ~torch.eye(word_of.shape[1], dtype=torch.bool)


def matching_bracket(
    ids: torch.Tensor, opening: Sequence[int], closing: Sequence[int]
) -> torch.Tensor:
    """``(N, T, T)``: a closing bracket's key is its opening bracket; other queries have none.

    >>> ids = torch.tensor([[0, 1, 0, 2, 2]])   # "( x ( ) )" with 0 = "(", 2 = ")"
    >>> matching_bracket(ids, [0], [2])[0].nonzero().tolist()
    [[3, 2], [4, 0]]

    ``opening[i]`` pairs with ``closing[i]`` (token ids, e.g. ``corpus.encode("([{")``); a
    closing bracket that matches no open one (or the wrong kind) gets no key. Use the rows
    that have a key as ``queries`` of :func:`head_scores` (``pattern.any(-1)``).
    """
    ids = torch.as_tensor(ids)
    opening, closing = [int(i) for i in opening], [int(i) for i in closing]
    if len(opening) != len(closing) or not opening:
        raise OptionError(
            f"opening and closing must pair up one to one; got {len(opening)} opening and "
            f"{len(closing)} closing ids."
        )
    pair = dict(zip(closing, opening, strict=True))
    n, t = ids.shape
    pattern = torch.zeros(n, t, t, dtype=torch.bool)
    rows = ids.tolist()
    for i, row in enumerate(rows):
        stack: list[int] = []
        for pos, token in enumerate(row):
            if token in opening:
                stack.append(pos)
            elif token in pair and stack:
                start = stack.pop()
                if row[start] == pair[token]:
                    pattern[i, pos, start] = True
                else:
                    stack.clear()  # mismatched brackets: lose track rather than guess
    return pattern


def induction(ids: torch.Tensor, *, prefix: int = 1) -> torch.Tensor:
    """``(N, T, T)``: keys that follow an earlier copy of the ``prefix`` tokens ending at the query.

    >>> ids = torch.tensor([[5, 6, 7, 5, 6]])
    >>> induction(ids)[0].nonzero().tolist()   # at the second 5, look at what followed the first: 6
    [[3, 1], [4, 2]]

    An induction or copying head attends there: having seen ``A B ... A``, it looks at the
    ``B`` that followed the earlier ``A`` (to predict ``B`` again). With characters a
    single-token prefix repeats constantly; ``prefix=3`` asks for the last three characters
    to repeat.
    """
    ids = torch.as_tensor(ids)
    prefix = positive_int("prefix", prefix)
    n, t = ids.shape
    same = torch.ones(n, t, t, dtype=torch.bool)
    for k in range(prefix):
        # query q and key s match when ids[q - k] == ids[s - 1 - k]
        q = ids[:, None, :].new_full((n, t), -1)
        q[:, k:] = ids[:, : t - k]
        s = ids.new_full((n, t), -2)
        s[:, k + 1 :] = ids[:, : t - k - 1]
        same &= q[:, :, None] == s[:, None, :]
    causal = torch.ones(t, t, dtype=torch.bool).tril(-1)  # keys strictly before the query
    return same & causal
