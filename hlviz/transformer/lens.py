"""The logit lens: read the residual stream after every layer as if it were the last.

>>> from hlviz.models.gpt import CharGPT
>>> _ = torch.manual_seed(0)
>>> model = CharGPT(vocab_size=10, d_model=16, n_heads=2, n_layers=2).eval()
>>> ids = torch.randint(0, 10, (3, 6))
>>> lens = hlviz.logit_lens(model, ids, targets="next")
>>> lens.layers, tuple(lens.logits.shape)           # (layers, N, T, vocab)
(('resid', 'blocks.0', 'blocks.1'), (3, 3, 6, 10))
>>> torch.allclose(lens.logits[-1], model(ids), atol=1e-5)   # the last layer is the model itself
True
>>> lens.rank().shape                                # rank of each next token, per layer
(3, 3, 6)

Each layer's activation ``h`` (``(N, T, D)``) is decoded as ``unembed(norm(h))`` with the
model's own final norm and unembedding. For :class:`~hlviz.models.gpt.CharGPT` and
Hugging Face causal language models (GPT-2, Llama, ...) both are found by themselves, and
the layers default to the start of the residual stream and the output of every block.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._checks import choice, positive_int
from ..errors import HlvizWarning, OptionError, OptionTypeError, ShapeMismatchError
from ..hooks.checks import once, refuse_meta, warn_if_training
from ..hooks.layers import LayerSpec, check_module, resolve, unwrap
from ..hooks.outputs import logits_of
from ..hooks.recording import record
from ..runtime import run_model

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["LogitLens", "logit_lens", "model_logits"]

_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "final_norm", "ln_out")
_UNEMBED_NAMES = ("unembed", "lm_head")
_EMBEDDINGS = "embeddings"  # the row for the input of the first block


def model_logits(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, the ``"logits"`` entry of a dict or
    ``ModelOutput``, else the first tensor (:func:`hlviz.hooks.outputs.logits_of`, the one
    rule every metric follows).

    >>> model_logits({"hidden": torch.zeros(1, 8), "logits": torch.ones(1, 5)}).shape
    torch.Size([1, 5])
    """
    return logits_of(output)


@dataclass(frozen=True)
class LogitLens:
    """Decoded residual streams: ``logits`` is ``(L, N, T, V)`` (float32, CPU), one row per layer.

    ``final`` is the model's own output logits ``(N, T, V)``; ``targets`` the ``(N, T)``
    token each position should predict (negative where none), or ``None``.
    """

    logits: torch.Tensor
    layers: tuple[str, ...]
    final: torch.Tensor
    targets: torch.Tensor | None = None
    inputs: torch.Tensor | None = None

    @property
    def log_probs(self) -> torch.Tensor:
        """``(L, N, T, V)`` log-softmax of :attr:`logits`."""
        return self.logits.log_softmax(-1)

    def _targets(self, targets: Any) -> torch.Tensor:
        chosen = self.targets if targets is None else torch.as_tensor(targets)
        if chosen is None:
            raise OptionError(
                "no targets: pass targets= here (an (N, T) tensor of token ids) or to "
                "hlviz.logit_lens(..., targets='next')."
            )
        if tuple(chosen.shape) != tuple(self.logits.shape[1:3]):
            raise ShapeMismatchError(
                f"targets must be (N, T) = {tuple(self.logits.shape[1:3])}, got "
                f"{tuple(chosen.shape)}."
            )
        return chosen.long().cpu()

    def _per_layer(self, stat: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``(L, N, T)``: ``stat`` of each layer's ``(N, T, V)`` logits, one layer at a time, so
        the temporaries are one layer's size, never ``(L, N, T, V)``."""
        return torch.stack([stat(layer) for layer in self.logits])

    def _masked(self, values: torch.Tensor, chosen: torch.Tensor) -> np.ndarray:
        return torch.where((chosen >= 0)[None], values.double(), torch.nan).numpy()

    def prob(self, targets: Any = None) -> np.ndarray:
        """``(L, N, T)`` probability each layer gives the target token (NaN where none)."""
        chosen = self._targets(targets)
        index = chosen.clamp_min(0)[..., None]  # (N, T, 1)
        picked = self._per_layer(lambda lg: lg.softmax(-1).gather(-1, index)[..., 0])
        return self._masked(picked, chosen)

    def rank(self, targets: Any = None) -> np.ndarray:
        """``(L, N, T)`` rank of the target token in each layer (0 = top; NaN where none)."""
        chosen = self._targets(targets)
        index = chosen.clamp_min(0)[..., None]  # (N, T, 1)
        ranks = self._per_layer(lambda lg: (lg > lg.gather(-1, index)).sum(-1).float())
        return self._masked(ranks, chosen)

    def kl_to_final(self) -> np.ndarray:
        """``(L, N, T)`` KL divergence (nats) from the model's final distribution to each layer's."""
        final = self.final.log_softmax(-1)
        p_final = final.exp()

        def kl(logits: torch.Tensor) -> torch.Tensor:  # p * (log p - log q), in place
            return logits.log_softmax(-1).neg_().add_(final).mul_(p_final).sum(-1)

        return self._per_layer(kl).double().numpy()

    def top_k(self, k: int = 5, *, example: int = 0, decode: Callable | None = None):
        """A ``pandas.DataFrame`` of the ``k`` most likely tokens per layer and position."""
        import pandas as pd

        k = positive_int("k", k)
        probs, ids = self.logits[:, example].softmax(-1).topk(min(k, self.logits.shape[-1]))
        rows = []
        for li, layer in enumerate(self.layers):
            for t in range(ids.shape[1]):
                for r in range(ids.shape[2]):
                    token = int(ids[li, t, r])
                    rows.append(
                        {
                            "layer": layer,
                            "position": t,
                            "rank": r,
                            "token": token,
                            "text": decode([token]) if decode is not None else str(token),
                            "prob": float(probs[li, t, r]),
                        }
                    )
        return pd.DataFrame(rows)

    def summary(self):
        """A ``pandas.DataFrame`` per layer: KL to the final distribution, agreement of the top
        token with the model's, and (with targets) mean probability, mean rank, top-1 accuracy."""
        import pandas as pd

        kl = self.kl_to_final().mean((1, 2))
        agree = (self.logits.argmax(-1) == self.final.argmax(-1)[None]).float().mean((1, 2))
        frame = pd.DataFrame(
            {"layer": list(self.layers), "kl_to_final": kl, "agrees_with_final": agree.numpy()}
        )
        if self.targets is not None:
            ranks = self.rank()
            frame["target_prob"] = np.nanmean(self.prob(), axis=(1, 2))
            frame["target_rank"] = np.nanmean(ranks, axis=(1, 2))
            frame["top1_accuracy"] = np.nanmean(
                np.where(np.isnan(ranks), np.nan, ranks == 0), (1, 2)
            )
        return frame

    def plot(
        self,
        example: int = 0,
        *,
        what: str | None = None,
        tokens: Sequence[str] | None = None,
        decode: Callable | None = None,
        ax: Axes | None = None,
    ) -> Axes:
        """Heat map layer x position for one example; returns the ``Axes``.

        ``what="target"`` (the default when targets are known) shows the probability of the
        correct next token; ``what="top"`` (the default without targets) the probability of
        each layer's top token, with
        that token written in the cell when ``decode`` (ids -> text) is given. Positions are
        labelled with ``tokens``, or with the decoded input ids.
        """
        from .plots import plot_grid

        if what is None:
            what = "target" if self.targets is not None else "top"
        choice("what", what, ("target", "top"), hint="Or None: 'target' when there are targets.")
        if what == "target" and self.targets is None:
            raise OptionError(
                "what='target' needs targets, and this lens has none: use what='top' (the "
                "probability of each layer's top token), or build the lens with "
                "hlviz.logit_lens(..., targets='next') or targets= an (N, T) tensor of ids."
            )
        probs = self.logits[:, example].softmax(-1)  # (L, T, V)
        notes = None
        if what == "target":
            values = self.prob()[:, example]
            label = "p(next token)"
        else:
            top, ids = probs.max(-1)
            values = top.numpy()
            label = "p(top token)"
            if decode is not None:
                notes = np.vectorize(lambda i: decode([int(i)]))(ids.numpy())
        if tokens is None and decode is not None and self.inputs is not None:
            tokens = [decode([int(i)]) for i in self.inputs[example]]
        return plot_grid(
            values,
            rows=self.layers,
            columns=tokens,
            title=f"logit lens, example {example}",
            colorbar=label,
            vmin=0.0,
            vmax=1.0,
            annotations=notes,
            ax=ax,
        )


def _find_named(model: nn.Module, names: Sequence[str]) -> tuple[str, nn.Module] | None:
    found = None
    for name, module in model.named_modules():
        if name.rpartition(".")[2] in names:
            found = (name, module)  # the last one: the final norm comes after the blocks
    return found


def _blocks(model: nn.Module) -> str | None:
    """The name of the stack of blocks: the shallowest non-empty ``nn.ModuleList`` (fewest
    dots in its name, so not the experts list inside a mixture-of-experts block), the
    longest of those on a tie."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and name:
            key = (-name.count("."), len(module))
            if best is None or key > best[0]:
                best = (key, name)
    return best[1] if best else None


def _next_targets(ids: torch.Tensor, inputs: Any) -> torch.Tensor:
    """``(N, T)``: the next input token, -1 at the last position and wherever the position or
    the next one is padding (``attention_mask`` 0, right or left padding)."""
    targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1)
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if mask is None:
        return targets
    mask = torch.as_tensor(mask).detach().cpu()
    if tuple(mask.shape) != tuple(ids.shape):
        raise ShapeMismatchError(
            f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}; "
            "pass the tokenizer's output unchanged (both (N, T))."
        )
    real = mask.bool()
    both = real & torch.cat([real[:, 1:], torch.zeros_like(real[:, :1])], 1)
    return torch.where(both, targets, torch.full_like(targets, -1))


def _check_last_row(
    last: torch.Tensor, final: torch.Tensor, names: Sequence[str], dtype: torch.dtype
) -> None:
    """Warn when the last decoded layer is not the model's own output, beyond the rounding
    of ``dtype`` (the activations' dtype; 1e-4 relative for float32)."""
    scale = max(1.0, float(final.abs().max())) if final.numel() else 1.0
    gap = float((last - final).abs().max()) if final.numel() else 0.0
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    if gap > max(1e-4, 8 * eps) * scale:
        warnings.warn(
            f"the logit lens's last row ({names[-1]!r}) differs from the model's final logits "
            f"by up to {gap:.3g}: the chosen layers {_short(names)} (or the norm/unembedding "
            "found) may not be the residual stream. Pass layers= (the blocks' outputs), "
            "norm= and unembed= explicitly.",
            HlvizWarning,
            stacklevel=3,
        )


def _short(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:4])
    return f"({shown}{', ...' if len(names) > 4 else ''})"


def _decoder(model: nn.Module, norm: Any, unembed: Any) -> tuple[Callable, Callable]:
    if unembed is None:
        getter = getattr(model, "get_output_embeddings", None)
        unembed = getter() if callable(getter) else None
        if unembed is None:
            hit = _find_named(model, _UNEMBED_NAMES)
            unembed = hit[1] if hit else None
    if norm is None:
        hit = _find_named(model, _NORM_NAMES)
        norm = hit[1] if hit else None
    if unembed is None or norm is None:
        missing = " and ".join(w for w, v in (("norm", norm), ("unembed", unembed)) if v is None)
        raise OptionError(
            f"could not find the {missing} of {type(model).__name__} (looked for modules named "
            f"{_NORM_NAMES} and {_UNEMBED_NAMES}, and get_output_embeddings()). Pass norm= (the "
            "final norm; nn.Identity() if there is none) and unembed= (hidden -> logits)."
        )
    for what, fn in (("norm", norm), ("unembed", unembed)):
        if not callable(fn):
            raise OptionTypeError(
                f"{what} must be a module or a callable, got {type(fn).__name__}."
            )
    return norm, unembed


def _input_ids(inputs: Any) -> torch.Tensor | None:
    if isinstance(inputs, Mapping):
        inputs = inputs.get("input_ids")
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 2 and not inputs.is_floating_point():
        return inputs.detach().cpu()
    return None


def logit_lens(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec | None = None,
    *,
    norm: Callable | None = None,
    unembed: Callable | None = None,
    targets: torch.Tensor | str | None = None,
) -> LogitLens:
    """Decode the residual stream after each of ``layers`` through the model's final norm and unembedding.

    Example::

        lens = hlviz.logit_lens(gpt2, batch, targets="next")
        lens.summary()          # per layer: KL to the final layer, p(next token), rank
        lens.plot(decode=tokenizer.decode)

    Args:
        inputs: token ids ``(N, T)``, or a tokenizer's output (a dict with ``input_ids``).
        layers: modules whose output is the residual stream ``(N, T, D)``. Default: ``resid``
            (when the model has one) or the input of the first block, then the output of
            each block (the shallowest ``nn.ModuleList``, the longest on a tie: ``blocks``,
            ``transformer.h``, ``model.layers``; not an experts list inside a block). When
            the last of these does not reproduce the model's logits, an
            :class:`~hlviz.errors.HlvizWarning` says to pass ``layers=``/``norm=``/``unembed=``.
        norm, unembed: the final norm and the unembedding (modules or callables). Default:
            the module named ``ln_f``/``norm``/``final_layer_norm`` and
            ``get_output_embeddings()`` or the module named ``unembed``/``lm_head``.
        targets: ``(N, T)`` ids each position should predict (negative: none), or
            ``"next"``: the next input token (none at the last position, nor where the
            ``attention_mask`` of ``inputs`` marks the position or the next one as padding).

    Runs without gradients; the activations stay on the model's device while decoded.
    """
    check_module(model)
    refuse_meta(model, "logit_lens")
    inner = unwrap(model)
    norm, unembed = _decoder(inner, norm, unembed)
    modules = dict(inner.named_modules())
    first_input = None
    if layers is None:
        blocks = _blocks(inner)
        if blocks is None:
            raise OptionError(
                f"{type(inner).__name__} has no nn.ModuleList of blocks; pass layers= the modules "
                "whose output is the residual stream (N, T, D)."
            )
        names = resolve(inner, f"{blocks}.*")
        if "resid" in modules:
            names = ["resid", *names]
        else:
            first_input = names[0]
    else:
        names = resolve(inner, layers)
    ids = _input_ids(inputs)
    if isinstance(targets, str):
        if targets != "next":
            raise OptionError(f"targets must be 'next', a tensor of ids or None, got {targets!r}.")
        if ids is None:
            raise OptionError(
                "targets='next' needs integer input ids (N, T) (or a dict with 'input_ids')."
            )
        targets = _next_targets(ids, inputs)
    elif targets is not None:
        targets = torch.as_tensor(targets).long().cpu()
        if ids is not None and tuple(targets.shape) != tuple(ids.shape):
            raise ShapeMismatchError(
                f"targets must have the shape of the input ids {tuple(ids.shape)} (one token "
                f"per position, negative for none), got {tuple(targets.shape)}."
            )

    warn_if_training(model, "the decoded residual streams")
    rec = record(model, names, to=None)
    rec_in = record(model, first_input, to=None, inputs=True) if first_input else None
    with torch.no_grad():
        with rec:
            if rec_in is None:
                out = run_model(model, inputs)
            else:
                with rec_in:
                    out = run_model(model, inputs)
        streams = [(_EMBEDDINGS, rec_in.inputs[first_input])] if rec_in else []
        streams += [(name, rec[name]) for name in names]
        final = model_logits(out).detach().float().cpu()
        decoded = []
        for name, h in streams:
            h = once(name, h, "the logit lens decodes one residual stream per layer")
            if h.dim() != 3:
                raise ShapeMismatchError(
                    f"layer {name!r} outputs shape {tuple(h.shape)}, not a residual stream "
                    "(N, T, D); choose layers such as blocks.* or transformer.h.*."
                )
            try:
                decoded.append(model_logits(unembed(norm(h))).float().cpu())
            except RuntimeError as exc:
                raise ShapeMismatchError(
                    f"could not decode layer {name!r} (shape {tuple(h.shape)}) through the "
                    f"model's norm and unembedding ({exc}); the layers must be the residual "
                    "stream, of the width the final norm expects."
                ) from None
    shapes = {tuple(d.shape) for d in decoded}
    if len(shapes) > 1 or tuple(decoded[0].shape) != tuple(final.shape):
        raise ShapeMismatchError(
            f"the decoded layers have shapes {sorted(shapes)} but the model's logits are "
            f"{tuple(final.shape)}; the layers must be the residual stream, decoded by the "
            "model's own norm and unembedding."
        )
    labels = tuple(n for n, _ in streams)
    if layers is None:
        _check_last_row(decoded[-1], final, labels, streams[-1][1].dtype)
    return LogitLens(torch.stack(decoded), labels, final, targets, ids)
