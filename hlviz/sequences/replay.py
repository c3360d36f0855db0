"""Replay a recurrent module step by step: every layer's per-step states and gates.

>>> lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
>>> states = rnn_states(lstm, torch.randn(4, 7, 3))
>>> tuple(states["h"].shape), states.gates        # (layers, N, T, H)
((2, 4, 7, 5), ('i', 'f', 'g', 'o'))

``nn.LSTM`` and ``nn.GRU`` return only the top layer's outputs and the final states; the other
layers' steps and the gates never leave the cuDNN/ATen kernel. :func:`rnn_states` therefore
records the input the recurrent module received (with :func:`hlviz.record`, so no hook is
left behind) and replays its weights one step at a time with PyTorch's own formulas, then
checks that the replayed top layer equals what the module returned. A float16/bfloat16
module is replayed in float32 from its own weights and compared within its dtype's rounding
(:func:`replay_tolerance`); an input of another dtype than the weights, or holding NaN/inf,
is refused. A :class:`~hlviz.models.rnn.CharLSTM` is run through its own unrolled path instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import LayerNotFoundError, OptionError, OptionTypeError, ShapeMismatchError
from ..hooks.layers import resolve, unwrap
from ..models.rnn import CharLSTM, RNNStates, lstm_layer_steps

__all__ = ["gru_layer_steps", "replay_dtype", "replay_tolerance", "rnn_states"]


def gru_layer_steps(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    h: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Run one GRU layer step by step, as ``nn.GRU`` computes it: ``h``, ``r``, ``z``, ``n``.

    >>> gru = nn.GRU(3, 4, batch_first=True)
    >>> x = torch.randn(2, 6, 3)
    >>> w = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    >>> torch.allclose(gru_layer_steps(x, w, torch.zeros(2, 4))["h"], gru(x)[0], atol=1e-6)
    True

    ``x`` ``(N, T, D)``, ``h`` ``(N, H)``; each result is ``(N, T, H)``:
    ``r = sigmoid(.)``, ``z = sigmoid(.)``, ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``,
    ``h' = (1 - z) n + z h``.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    xproj = x @ w_ih.T
    if b_ih is not None:
        xproj = xproj + b_ih
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("h", "r", "z", "n")}
    for t in range(x.shape[1]):
        hproj = h @ w_hh.T
        if b_hh is not None:
            hproj = hproj + b_hh
        xr, xz, xn = xproj[:, t].chunk(3, dim=-1)
        hr, hz, hn = hproj.chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        for key, value in zip(("h", "r", "z", "n"), (h, r, z, n), strict=True):
            out[key].append(value)
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def _find_rnn(model: nn.Module, layer: Any) -> tuple[str, nn.Module]:
    if isinstance(model, (nn.LSTM, nn.GRU)) and layer is None:
        return "", model
    if layer is not None:
        found = resolve(model, layer)
        if len(found) != 1:
            raise OptionError(
                f"layer={layer!r} matches {len(found)} modules ({', '.join(found)[:200]}); "
                "name one nn.LSTM or nn.GRU."
            )
        name = found[0]
        module = unwrap(model).get_submodule(name)
        if not isinstance(module, (nn.LSTM, nn.GRU)):
            raise OptionError(
                f"layer {name!r} is a {type(module).__name__}, not an nn.LSTM or nn.GRU; "
                "rnn_states replays recurrent layers only."
            )
        return name, module
    found = [(n, m) for n, m in unwrap(model).named_modules() if isinstance(m, (nn.LSTM, nn.GRU))]
    if len(found) != 1:
        raise LayerNotFoundError(
            f"{type(model).__name__} has {len(found)} nn.LSTM/nn.GRU modules "
            f"({', '.join(n for n, _ in found) or 'none'}); pass layer= the name of one."
        )
    return found[0]


def _weight(rnn: nn.Module) -> torch.Tensor:
    return rnn.weight_ih_l0


def replay_dtype(rnn: nn.Module) -> torch.dtype:
    """The dtype :func:`rnn_states` replays ``rnn`` in: its weights' dtype, raised to at
    least float32 (a float16/bfloat16 module is replayed from its own weights in float32,
    so the states are exact for those weights and can go to NumPy).

    >>> replay_dtype(nn.GRU(2, 3).half()), replay_dtype(nn.GRU(2, 3).double())
    (torch.float32, torch.float64)
    """
    return torch.promote_types(_weight(rnn).dtype, torch.float32)


def replay_tolerance(rnn: nn.Module) -> float:
    """How far (relative to the output's largest value, at least 1) the module's own output
    may be from the replay: ``1e-4`` for float32/float64 modules, four rounding steps of the
    module's dtype for float16 (~0.004) and bfloat16 (~0.03), whose kernels round every step.

    >>> replay_tolerance(nn.LSTM(2, 3)), replay_tolerance(nn.LSTM(2, 3).bfloat16())
    (0.0001, 0.03125)
    """
    return max(1e-4, 4 * torch.finfo(_weight(rnn).dtype).eps)


def _check_dtype(rnn: nn.Module, x: torch.Tensor) -> None:
    """Refuse an input the module would refuse (its dtype differs from the weights')."""
    want = _weight(rnn).dtype
    if x.dtype != want:
        raise OptionTypeError(
            f"the input to {type(rnn).__name__} is {x.dtype} but its weights are {want} (the "
            f"module itself would refuse it): give a {want} input, e.g. x.to({want})"
            + (
                f", or convert the model with model.to({x.dtype})."
                if x.is_floating_point()
                else "."
            )
        )


def _check_finite(
    values: torch.Tensor,
    what: str,
    rnn: nn.Module,
    rows: int = 0,
    fix: str = "Drop or fix those sequences first (~torch.isfinite(x) shows where).",
) -> None:
    """Refuse NaN/inf, saying in how many of the rows (sequences, axis ``rows``) they are."""
    bad = ~torch.isfinite(values)
    if not bad.any():
        return
    axis = rows if rows else (0 if rnn.batch_first else 1)
    per_row = bad.movedim(axis, 0).reshape(values.shape[axis], -1).any(1)
    which = per_row.nonzero().flatten().tolist()
    shown = ", ".join(map(str, which[:10])) + (", ..." if len(which) > 10 else "")
    raise OptionError(
        f"{what} of {type(rnn).__name__} holds NaN or inf in {len(which)} of "
        f"{values.shape[axis]} sequences (sequences {shown}; {int(bad.sum())} values): the "
        "states would be NaN from there on and cannot be checked against the module. " + fix
    )


def _replay(rnn: nn.Module, x: torch.Tensor, hx: Any) -> RNNStates:
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise OptionError(
            f"{type(rnn).__name__} with bidirectional={rnn.bidirectional} and proj_size="
            f"{getattr(rnn, 'proj_size', 0)} is not supported: rnn_states replays "
            "unidirectional layers without projections."
        )
    _check_dtype(rnn, x)
    _check_finite(x, "the input", rnn)
    if not rnn.batch_first:
        x = x.transpose(0, 1)
    kind = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
    shape = (rnn.num_layers, x.shape[0], rnn.hidden_size)
    work = replay_dtype(rnn)
    x = x.to(work)
    if hx is None:
        zeros = x.new_zeros(shape)
        hx = (zeros, zeros) if kind == "lstm" else zeros
    parts = tuple(hx) if kind == "lstm" and isinstance(hx, (tuple, list)) else (hx,)
    if len(parts) != (2 if kind == "lstm" else 1) or any(
        not isinstance(p, torch.Tensor) or tuple(p.shape) != shape for p in parts
    ):
        raise ShapeMismatchError(
            f"hx must be {'a pair (h_0, c_0) of tensors' if kind == 'lstm' else 'a tensor'} of "
            f"shape {shape} (layers, batch, hidden), got {hx!r:.120}."
        )
    for name, part in zip(("h_0", "c_0"), parts):
        if not part.is_floating_point():
            raise OptionTypeError(
                f"hx's {name} is {part.dtype}, not a floating-point tensor: give it in the "
                f"module's dtype, e.g. {name}.to({_weight(rnn).dtype})."
            )
        _check_finite(part, f"hx's {name}", rnn, 1, f"Give a finite {name} (zeros: hx=None).")
    parts = tuple(p.to(work) for p in parts)
    hx = parts if kind == "lstm" else parts[0]
    collected: dict[str, list[torch.Tensor]] = {}
    for layer in range(rnn.num_layers):
        weights = tuple(
            None if w is None else w.to(work)
            for w in (
                getattr(rnn, f"{k}_l{layer}", None)
                for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
        )
        if kind == "lstm":
            out = lstm_layer_steps(x, weights, hx[0][layer], hx[1][layer])
        else:
            out = gru_layer_steps(x, weights, hx[layer])
        for key, value in out.items():
            collected.setdefault(key, []).append(value)
        x = out["h"]
    return RNNStates({k: torch.stack(v).detach().cpu() for k, v in collected.items()}, kind)


def rnn_states(model: nn.Module, inputs: Any, layer: Any = None, *, hx: Any = None) -> RNNStates:
    """Every layer's hidden state (and cell state and gates) at every step: :class:`RNNStates`.

    >>> model = hlviz.models.CharLSTM(vocab_size=10, hidden_size=6)
    >>> rnn_states(model, torch.randint(0, 10, (2, 9)))["c"].shape   # (layers, N, T, H)
    torch.Size([2, 2, 9, 6])

    ``model``: an ``nn.LSTM``/``nn.GRU`` (``inputs`` is then its input), a
    :class:`~hlviz.models.rnn.CharLSTM` (run through its unrolled path), or any model holding
    one ``nn.LSTM``/``nn.GRU`` (or name it with ``layer=``): the model is run on ``inputs``
    once, the recurrent module's input is recorded and its weights are replayed step by step
    (from ``hx``, default zeros: the initial state the module was given is not seen, and a
    replay that does not reproduce the module's own output raises). Values are detached CPU
    tensors ``(L, N, T, H)``. No gradients are kept.
    """
    from ..hooks.checks import once
    from ..hooks.recording import record
    from ..runtime import run_model

    with torch.no_grad():
        if isinstance(unwrap(model), CharLSTM) and layer is None:
            return unwrap(model).run(inputs, hx, unroll=True).states.detached()
        name, rnn = _find_rnn(model, layer)
        if name == "" and rnn is unwrap(model):
            x = inputs
            if not isinstance(x, torch.Tensor) or x.dim() != 3:
                raise ShapeMismatchError(
                    f"an {type(rnn).__name__}'s input must be a (N, T, D) or (T, N, D) tensor, "
                    f"got {type(x).__name__}{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}."
                )
            states = _replay(rnn, x, hx)  # checks hx before the module sees it
            expected = rnn(x, hx)[0]
        else:
            with record(model, name, inputs=True, to=None) as rec:
                run_model(model, inputs)
            x = once(name, rec.inputs[name], "rnn_states replays one call of the module")
            expected = rec[name]
            states = _replay(rnn, x, hx)
        top = states["h"][-1] if rnn.batch_first else states["h"][-1].transpose(0, 1)
        expected = expected.detach().cpu().to(top.dtype)
        if not torch.isfinite(expected).all():
            raise OptionError(
                f"{type(rnn).__name__} {name or ''} returned NaN or inf from finite inputs "
                f"(its weights are {_weight(rnn).dtype}; a float16 module overflows past "
                "65504): its states cannot be checked. Run the model in float32 "
                "(model.float()) and pass float32 inputs."
            )
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        atol = replay_tolerance(rnn) * max(scale, 1.0)
        if tuple(top.shape) != tuple(expected.shape) or not torch.allclose(
            top, expected, atol=atol
        ):
            raise OptionError(
                f"replaying {type(rnn).__name__} {name or ''} does not reproduce its output: it "
                "was probably called with an initial state (pass the same hx=) or a "
                "PackedSequence (pass padded sequences of one length)."
            )
        return states
