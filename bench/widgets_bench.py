"""Benchmark the LayerInspector: time from a control change to the updated view, per view type.

    python bench/widgets_bench.py            # full: 15 rounds per view
    python bench/widgets_bench.py --quick    # smoke: 3 rounds per view (seconds)

One inspector per view type on CPU: feature maps (the shipped Fashion-MNIST CNN), a unit
over a sequence (the shipped code LSTM), attention heads (a CharGPT, the shipped one when
data/code_gpt.safetensors exists, else random weights of the same size; and MiniLM), bars
(the digits CNN's hidden fc layer). Each round sets the unit slider to a new value (what a
user does) and, interleaved, draws the same view with the pure function alone into a fresh
figure; the ratio update / draw says what the wiring (PNG encoding, swapping the Output)
adds to the drawing. A redraw is synchronous, so the time of ``.value = ...`` is the time
until the new image is in the Output widget.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure
from timing import interleaved

import hlviz
from hlviz.models import DigitsCNN, load_char_lstm, load_small_cnn
from hlviz.models.gpt import CharGPT
from hlviz.widgets.views import render_layer_view


def _gpt(vocab: int) -> tuple[CharGPT, str]:
    if (Path(hlviz.datasets.data_dir()) / "code_gpt.safetensors").exists():
        from hlviz.models.gpt import load_char_gpt

        return load_char_gpt(), "shipped CharGPT"
    torch.manual_seed(0)
    return CharGPT(vocab).eval(), "CharGPT (random weights)"


def cases() -> list[tuple[str, str, object, str]]:
    """(view, model, inspector, layer) for each view type."""
    test = hlviz.datasets.fashion_mnist("test")
    corpus = hlviz.datasets.code_corpus("test")
    windows = corpus.windows(96, 4)
    out = []
    cnn = load_small_cnn()
    out.append(
        (
            "feature maps",
            "Fashion-MNIST CNN, 8 images",
            hlviz.inspect(cnn, test.X[:8]),
            "features.block2.relu",
        )
    )
    lstm = load_char_lstm()
    out.append(
        ("sequence", "code LSTM, 4 x 96 chars", hlviz.inspect(lstm, windows, decode=corpus), "lstm")
    )
    gpt, name = _gpt(len(corpus.vocab))
    out.append(
        (
            "attention",
            f"{name}, 4 x 96 chars",
            hlviz.inspect(gpt, windows, decode=corpus),
            "blocks.1.attn.pattern",
        )
    )
    from hlviz.models import minilm

    mini = minilm.load()
    sentences = [
        "A dog chased the cat across the garden.",
        "The stock market fell on Monday.",
        "She reads a book every night.",
        "Rain is expected later today.",
    ]
    out.append(
        (
            "attention",
            "MiniLM, 4 sentences",
            hlviz.inspect(mini.model, mini.encode(sentences), decode=mini.tokenizer),
            "encoder.layer.2.attention.self (attention)",
        )
    )
    digits = hlviz.datasets.load_digits("test")
    torch.manual_seed(0)
    out.append(
        (
            "bars",
            "digits CNN, 32 images",
            hlviz.inspect(DigitsCNN().eval(), digits.X[:32]),
            "classifier.fc1",
        )
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per view, for a smoke test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rounds = 3 if args.quick else 15
    print(f"### LayerInspector: control change -> updated view ({rounds} rounds, CPU, 1 thread)\n")
    print("| view | model | layer | update (median ms) | pure draw (median ms) | update / draw |")
    print("|---|---|---|---|---|---|")
    for view, model, inspector, layer in cases():
        inspector.controls["layer"].value = layer
        slider = inspector.controls["unit"]
        values = itertools.cycle(range(min(slider.max + 1, 6)))
        spare = Figure()

        def update(slider=slider, values=values):
            value = next(values)
            slider.value = value if value != slider.value else next(values)

        def draw(inspector=inspector, spare=spare):
            render_layer_view(inspector.layer_view(), fig=spare)

        t = interleaved({"update": update, "draw": draw}, rounds=rounds, warmup=1)
        assert inspector.outputs["activations"].outputs[0]["data"].get("image/png"), "no view"
        print(
            f"| {view} | {model} | {layer} | {t.median_ms('update'):.0f} | "
            f"{t.median_ms('draw'):.0f} | {t.ratio('update', 'draw'):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
