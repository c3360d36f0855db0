"""Head scores against attention patterns: hand-made heads, a real model's output, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hlviz.errors import OptionError, ShapeMismatchError
from hlviz.transformer import attention


def _heads(t=5):
    attn = torch.zeros(2, 1, 3, t, t)
    attn[:, 0, 0] = torch.eye(t).roll(-1, 1)  # previous token (row 0 wraps to the last key)
    attn[:, 0, 1, :, -1] = 1.0  # everything to the last position
    attn[:, 0, 2] = 1.0 / t  # uniform
    return attn


def test_hand_made_heads_score_as_expected():
    t = 5
    attn, mask = _heads(t), torch.ones(2, t, dtype=torch.bool)
    ids = torch.tensor([[1, 7, 7, 3, 9]] * 2)
    previous = attention.head_scores(attn, attention.previous_token(mask), mask)
    np.testing.assert_allclose(previous[0], [(t - 1) / t, 0.0, (t - 1) / t / t], rtol=1e-6)
    last = attention.head_scores(attn, attention.to_token(ids, 9), mask)
    np.testing.assert_allclose(last[0], [1 / t, 1.0, 1 / t], rtol=1e-6)
    word_of = torch.tensor([[-1, 0, 0, -1, -1]] * 2)
    queries = word_of >= 0
    same = attention.head_scores(attn, attention.same_word(word_of), queries)
    # query 1's other piece is 2 (head 0 looks at 0 from 1, at 1 from 2), so 0.5 over two queries
    np.testing.assert_allclose(same[0], [0.5, 0.0, 1 / t], rtol=1e-6)


def test_a_tuple_of_layers_equals_the_stacked_tensor_and_padding_is_not_a_previous_token():
    attn = _heads()
    layers = (attn[:, 0], attn[:, 0] * 0.5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pattern = attention.previous_token(mask)
    assert not pattern[0, 3:].any() and not pattern[0, :, 3:].any()
    scores = attention.head_scores(layers, pattern, mask)
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores[1], scores[0] * 0.5, rtol=1e-6)


def test_shape_errors_say_what_was_given():
    attn, mask = _heads(), torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ShapeMismatchError, match=r"\(N, layers, heads, T, T\).*got shape \(2, 5\)"):
        attention.head_scores(torch.zeros(2, 5), attention.previous_token(mask), mask)
    with pytest.raises(ShapeMismatchError, match=r"pattern must be \(2, 5, 5\)"):
        attention.head_scores(attn, torch.zeros(2, 4, 4, dtype=torch.bool), mask)
    with pytest.raises(ShapeMismatchError, match="queries selects no position"):
        attention.head_scores(attn, attention.previous_token(mask), torch.zeros(2, 5, dtype=bool))


def test_matching_bracket_pairs_nested_kinds_and_drops_mismatches():
    code = {c: i for i, c in enumerate("([{)]}x")}
    ids = torch.tensor([[code[c] for c in "(x[x{}](x)"], [code[c] for c in "(]x)xxxxxx"]])
    pattern = attention.matching_bracket(ids, [code[c] for c in "([{"], [code[c] for c in ")]}"])
    assert pattern.shape == (2, 10, 10)
    assert pattern[0].nonzero().tolist() == [[5, 4], [6, 2], [9, 7]]
    # "(]": the wrong kind closes nothing, and the count is lost rather than guessed
    assert not pattern[1].any()
    assert pattern.sum(-1).max() == 1  # one key per closing bracket at most
    with pytest.raises(OptionError, match="pair up one to one; got 2 opening and 1 closing"):
        attention.matching_bracket(ids, [0, 1], [3])


def test_induction_keys_follow_an_earlier_copy_of_the_prefix():
    ids = torch.tensor([[1, 2, 3, 9, 2, 3, 4, 1, 2]])
    one = attention.induction(ids)[0]
    # query 4 holds 2: the earlier 2 at position 1 was followed by position 2
    assert one[4].nonzero().flatten().tolist() == [2]
    # query 8 holds 2 (earlier 2s at 1 and 4): keys 2 and 5
    assert one[8].nonzero().flatten().tolist() == [2, 5]
    two = attention.induction(ids, prefix=2)[0]
    # "1 2" ends at 8 and occurred at 0-1: the key is 2; "3 9 2" does not make "x 2" at 4 match
    assert two[8].nonzero().flatten().tolist() == [2]
    assert two[5].nonzero().flatten().tolist() == [3]  # "2 3" at 4-5 repeats 1-2: key 3
    assert not two.triu().any()  # keys strictly before the query
    with pytest.raises(OptionError, match="prefix must be a positive int, got 0"):
        attention.induction(ids, prefix=0)
