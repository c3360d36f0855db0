"""A character LSTM whose gates and per-layer, per-step states can be seen (and edited).

>>> model = CharLSTM(vocab_size=10, hidden_size=8)
>>> ids = torch.randint(0, 10, (2, 5))
>>> torch.allclose(model(ids), model(ids, unroll=True), atol=1e-6)   # same numbers both ways
True
>>> out = model.run(ids, unroll=True)
>>> tuple(out.states["c"].shape), out.states.names
((2, 2, 5, 8), ('h', 'c', 'i', 'f', 'g', 'o'))

Layers (a batch of ``N`` sequences of ``T`` characters, ``H`` = ``hidden_size``)::

    embed            Embedding vocab->E                      (N, T, E)
    lstm             nn.LSTM, 2 layers, batch_first          (N, T, H), (h_n, c_n)   default path
    cells.{l}.h      identity: layer l's hidden states       (N, T, H)     unrolled path only
    cells.{l}.c      identity: layer l's cell states         (N, T, H)     unrolled path only
    cells.{l}.gates  identity: gates i|f|g|o, activated      (N, T, 4H)    unrolled path only
    cells.{l}.h_step identity, called at every step          (N, H)        edit it to change the
    cells.{l}.c_step identity, called at every step          (N, H)        recurrence itself
    head             Linear H->vocab                          (N, T, vocab) next-character logits

The default path runs ``nn.LSTM`` (fast). ``unroll=True`` replays the same weights one step at
a time in PyTorch's own formulas (``i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)``,
``c' = f c + i g``, ``h' = o tanh(c')``), calling the ``cells.*`` identity modules so that
:func:`hlviz.record` sees every layer's states and :func:`hlviz.edit` on ``h_step``/``c_step``
changes what later steps compute (an edit of ``cells.{l}.h`` only changes what the next layer
and the head read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, ShapeMismatchError
from ._checkpoint import load_float16, save_float16

__all__ = [
    "CHECKPOINT",
    "CharLSTM",
    "CharLSTMOutput",
    "RNNStates",
    "load_char_lstm",
    "lstm_layer_steps",
    "ngram_bits_per_char",
    "save_char_lstm",
]

CHECKPOINT = "code_lstm.safetensors"
_REBUILD = "python scripts/train_lstm.py"
LSTM_GATES = ("i", "f", "g", "o")


@dataclass(frozen=True, eq=False)
class RNNStates:
    """Per-layer, per-step states of a recurrent network: name -> ``(L, N, T, H)`` tensor.

    LSTM names: ``h``, ``c`` and the activated gates ``i``, ``f``, ``g`` (tanh), ``o``; GRU
    names: ``h`` and ``r``, ``z``, ``n`` (tanh). ``states["h"][l]`` is layer ``l``'s hidden
    state after each step, ``(N, T, H)``. :meth:`flat` gives ``(N * T, H)`` rows for probes.
    """

    values: dict[str, torch.Tensor]
    kind: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def gates(self) -> tuple[str, ...]:
        """The gate names (``i f g o`` or ``r z n``)."""
        return tuple(n for n in self.values if n not in ("h", "c"))

    @property
    def num_layers(self) -> int:
        return int(next(iter(self.values.values())).shape[0])

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.values:
            raise OptionError(
                f"no state {name!r} in these {self.kind.upper()} states; choose from "
                f"{', '.join(map(repr, self.values))}."
            )
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def steps(self, start: int, stop: int | None = None) -> RNNStates:
        """Only steps ``start:stop`` of every sequence (drop a warm-up: states that start from
        zero know nothing of the text before the sequence)."""
        T = self.values["h"].shape[2]
        if not isinstance(start, int) or not 0 <= start < (T if stop is None else stop) <= T:
            raise OptionError(
                f"steps {start}:{stop} is empty or outside the {T} steps of these states."
            )
        return RNNStates({k: v[:, :, start:stop] for k, v in self.values.items()}, self.kind)

    def detached(self) -> RNNStates:
        """The same states as detached CPU tensors (for analysis, holding no graph)."""
        return RNNStates({k: v.detach().cpu() for k, v in self.values.items()}, self.kind)

    def flat(self, name: str, layer: int) -> np.ndarray:
        """Layer ``layer``'s ``name`` states as a float32 array ``(N * T, H)`` (row ``n * T + t``)."""
        values = self[name]
        if not isinstance(layer, int) or not -values.shape[0] <= layer < values.shape[0]:
            raise OptionError(f"layer must be an int in 0..{values.shape[0] - 1}, got {layer!r}.")
        return values[layer].detach().cpu().reshape(-1, values.shape[-1]).float().numpy()

    def __repr__(self) -> str:
        L, N, T, H = self.values["h"].shape
        return (
            f"RNNStates({self.kind}: {L} layers, {N} sequences x {T} steps x {H} units; "
            f"{', '.join(self.values)})"
        )


def lstm_layer_steps(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    h: torch.Tensor,
    c: torch.Tensor,
    *,
    on_h: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_c: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Run one LSTM layer step by step, as ``nn.LSTM`` computes it; every state and gate.

    >>> lstm = nn.LSTM(3, 4, batch_first=True)
    >>> x = torch.randn(2, 6, 3)
    >>> w = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    >>> out = lstm_layer_steps(x, w, torch.zeros(2, 4), torch.zeros(2, 4))
    >>> torch.allclose(out["h"], lstm(x)[0], atol=1e-6)
    True

    ``x`` ``(N, T, D)``; ``weights`` ``(W_ih (4H, D), W_hh (4H, H), b_ih, b_hh)`` (biases may
    be ``None``); ``h``, ``c`` ``(N, H)``. Returns ``h``, ``c``, ``i``, ``f``, ``g``, ``o``,
    each ``(N, T, H)``. ``on_h``/``on_c`` are called on each step's new state and may
    replace it (the replacement is what the next step uses).
    """
    w_ih, w_hh, b_ih, b_hh = weights
    xproj = x @ w_ih.T
    if b_ih is not None:
        xproj = xproj + b_ih
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("h", "c", *LSTM_GATES)}
    for t in range(x.shape[1]):
        hproj = h @ w_hh.T
        if b_hh is not None:
            hproj = hproj + b_hh
        i, f, g, o = (xproj[:, t] + hproj).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        if on_c is not None:
            c = on_c(c)
        h = o * torch.tanh(c)
        if on_h is not None:
            h = on_h(h)
        for key, value in zip(("h", "c", *LSTM_GATES), (h, c, i, f, g, o), strict=True):
            out[key].append(value)
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


class _LayerTrace(nn.Module):
    """Named identity modules of one layer, called by the unrolled path (hook points)."""

    def __init__(self):
        super().__init__()
        self.h, self.c, self.gates = nn.Identity(), nn.Identity(), nn.Identity()
        self.h_step, self.c_step = nn.Identity(), nn.Identity()


@dataclass(frozen=True, eq=False)
class CharLSTMOutput:
    """What :meth:`CharLSTM.run` returns: ``logits`` ``(N, T, vocab)``, final ``h_n`` and
    ``c_n`` ``(L, N, H)``, and (unrolled only) every layer's per-step ``states``."""

    logits: torch.Tensor
    h_n: torch.Tensor
    c_n: torch.Tensor
    states: RNNStates | None = None


def _check_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive int, got {value!r}.")


class CharLSTM(nn.Module):
    """Embedding, a multi-layer LSTM and a linear head: next-character logits ``(N, T, vocab)``.

    >>> model = CharLSTM(vocab_size=96)
    >>> model(torch.zeros(1, 7, dtype=torch.long)).shape
    torch.Size([1, 7, 96])

    ``forward(ids, hx=None, unroll=False)`` takes int64 ids ``(N, T)`` and an optional
    ``(h_0, c_0)``, each ``(L, N, H)``; :meth:`run` also returns the final states and, with
    ``unroll=True``, every layer's per-step states and gates (see the module doc).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 256,
        num_layers: int = 2,
        embed_dim: int = 64,
    ):
        super().__init__()
        for value, name in (
            (vocab_size, "vocab_size"),
            (hidden_size, "hidden_size"),
            (num_layers, "num_layers"),
            (embed_dim, "embed_dim"),
        ):
            _check_positive(value, name)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.num_layers, self.embed_dim = num_layers, embed_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True)
        self.cells = nn.ModuleList(_LayerTrace() for _ in range(num_layers))
        self.head = nn.Linear(hidden_size, vocab_size)

    def _check_ids(self, ids: Any) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
            what = (
                f"a {tuple(ids.shape)} {ids.dtype} tensor"
                if isinstance(ids, torch.Tensor)
                else type(ids).__name__
            )
            raise ShapeMismatchError(
                f"CharLSTM takes int64 character ids of shape (N, T), got {what}; encode text "
                "with corpus.encode(text) and add a batch axis with .unsqueeze(0)."
            )

    def _initial(self, hx: Any, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.num_layers, n, self.hidden_size)
        if hx is None:
            zeros = like.new_zeros(shape)
            return zeros, zeros
        if (
            not isinstance(hx, (tuple, list))
            or len(hx) != 2
            or any(not isinstance(s, torch.Tensor) or tuple(s.shape) != shape for s in hx)
        ):
            raise ShapeMismatchError(
                f"hx must be a pair (h_0, c_0) of tensors of shape {shape}; got "
                f"{[tuple(s.shape) if isinstance(s, torch.Tensor) else s for s in hx] if isinstance(hx, (tuple, list)) else type(hx).__name__}."
            )
        return hx[0], hx[1]

    def run(self, ids: torch.Tensor, hx: Any = None, *, unroll: bool = False) -> CharLSTMOutput:
        """Logits, final states and (``unroll=True``) all per-step states: a :class:`CharLSTMOutput`."""
        self._check_ids(ids)
        x = self.embed(ids)
        h0, c0 = self._initial(hx, ids.shape[0], x)
        if not unroll:
            y, (h_n, c_n) = self.lstm(x, (h0, c0))
            return CharLSTMOutput(self.head(y), h_n, c_n)
        collected: dict[str, list[torch.Tensor]] = {}
        for layer, trace in enumerate(self.cells):
            weights = tuple(
                getattr(self.lstm, f"{kind}_l{layer}")
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            out = lstm_layer_steps(
                x, weights, h0[layer], c0[layer], on_h=trace.h_step, on_c=trace.c_step
            )
            out["h"], out["c"] = trace.h(out["h"]), trace.c(out["c"])
            gates = trace.gates(torch.cat([out[g] for g in LSTM_GATES], dim=-1))
            for k, g in zip(LSTM_GATES, gates.chunk(4, dim=-1), strict=True):
                out[k] = g
            for key, value in out.items():
                collected.setdefault(key, []).append(value)
            x = out["h"]
            if self.training and self.lstm.dropout and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.lstm.dropout, training=True)
        states = RNNStates({k: torch.stack(v) for k, v in collected.items()}, "lstm")
        h_n, c_n = states["h"][:, :, -1], states["c"][:, :, -1]
        return CharLSTMOutput(self.head(states["h"][-1]), h_n, c_n, states)

    def forward(self, ids: torch.Tensor, hx: Any = None, *, unroll: bool = False) -> torch.Tensor:
        return self.run(ids, hx, unroll=unroll).logits

    def bits_per_char(self, ids: torch.Tensor, *, streams: int = 16) -> float:
        """Mean bits per character of this model predicting ``ids`` ``(T,)`` (its own cross-entropy / ln 2).

        >>> _ = torch.manual_seed(0)
        >>> model = CharLSTM(vocab_size=4, hidden_size=4)
        >>> bits = model.bits_per_char(torch.randint(0, 4, (200,)), streams=2)
        >>> 1.9 < bits < 2.3   # an untrained model on 4 random symbols: about log2(4) = 2
        True

        The text is cut into ``streams`` contiguous pieces run side by side; each piece starts
        from a zero state, and every character but the first of each piece is predicted.
        """
        return _bits_per_char(self, ids, streams=streams)

    def extra_repr(self) -> str:
        return f"vocab={self.vocab_size}, hidden={self.hidden_size}, layers={self.num_layers}"


@torch.no_grad()
def _bits_per_char(model: CharLSTM, ids: torch.Tensor, *, streams: int = 16) -> float:
    """The body of :meth:`CharLSTM.bits_per_char`."""
    _check_positive(streams, "streams")
    ids = torch.as_tensor(ids).reshape(-1)
    length = len(ids) // streams
    if length < 2:
        raise OptionError(f"{len(ids)} characters are too few for {streams} streams.")
    device = next(model.parameters()).device
    batch = ids[: streams * length].view(streams, length).to(device)
    logits = model(batch[:, :-1])
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
    )
    return float(loss) / float(np.log(2))


def ngram_bits_per_char(
    train: Any, test: Any, *, order: int, vocab_size: int, alpha: float = 1.0
) -> float:
    """Bits per character of an add-``alpha`` smoothed unigram (``order=1``) or bigram (2) model.

    >>> round(ngram_bits_per_char([0, 1, 0, 1], [0, 1], order=1, vocab_size=2), 3)
    1.0
    >>> round(ngram_bits_per_char([0, 1, 0, 1, 0], [0, 1, 0], order=2, vocab_size=2), 3)
    0.415

    Counts come from ``train``; ``test`` is scored from its second character on (so the
    unigram and bigram numbers cover the same characters as :meth:`CharLSTM.bits_per_char` does).
    """
    if order not in (1, 2):
        raise OptionError(f"order must be 1 (unigram) or 2 (bigram), got {order!r}.")
    train = np.asarray(train, dtype=np.int64).reshape(-1)
    test = np.asarray(test, dtype=np.int64).reshape(-1)
    if order == 1:
        counts = np.bincount(train, minlength=vocab_size) + alpha
        probs = counts / counts.sum()
        p = probs[test[1:]]
    else:
        counts = np.zeros((vocab_size, vocab_size)) + alpha
        np.add.at(counts, (train[:-1], train[1:]), 1)
        probs = counts / counts.sum(axis=1, keepdims=True)
        p = probs[test[:-1], test[1:]]
    return float(-np.log2(p).mean())


def save_char_lstm(model: CharLSTM, path: Any, metadata: dict[str, str]) -> None:
    """Write ``model`` to a safetensors file as float16 (sizes and ``metadata`` in its header)."""
    config = {
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "embed_dim": model.embed_dim,
    }
    save_float16(model, path, config, metadata)


def load_char_lstm(path: Any = None, *, device: str | torch.device | None = None) -> CharLSTM:
    """The shipped :class:`CharLSTM` (``data/code_lstm.safetensors``), float32, in eval mode.

    >>> model = load_char_lstm()
    >>> model.hidden_size, model.num_layers, model.meta["vocab"] == hlviz.datasets.code_corpus("test").vocab
    (256, 2, True)

    Read with ``safetensors`` (no pickle) after checking its sha256 against
    ``data/SHA256SUMS``; a missing or damaged file raises
    :class:`~hlviz.errors.DataFileError` naming the command that rebuilds it. ``path``
    loads another checkpoint written by ``scripts/train_lstm.py --out`` (not checked).
    ``model.meta`` holds the file's metadata (vocabulary, test bits per character, ...).
    """
    return load_float16(CharLSTM, path, checkpoint=CHECKPOINT, rebuild=_REBUILD, device=device)
