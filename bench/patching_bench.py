"""Activation patching: batched patched runs vs one forward per patch, on CharGPT; prints a table.

    python bench/patching_bench.py           # 3 sizes, 5 rounds each
    python bench/patching_bench.py --quick   # one small size, 2 rounds (seconds)

``hlviz.activation_patching`` puts many patched copies of the corrupted input through one
forward pass (about 2,048 tokens per pass). The baseline is the same call with
``batch_size=1``: one forward pass per (layer, position) patch, which is what a hand-written
loop over ``hlviz.edit`` does. Both give the same effects (checked here). Random weights: the
cost of a forward pass does not depend on what the weights learned.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import interleaved

import hlviz
from hlviz.models.gpt import CharGPT


def case(n: int, t: int, rounds: int) -> str:
    torch.manual_seed(0)
    model = CharGPT(vocab_size=96, d_model=128, n_heads=4, n_layers=4, context=256).eval()
    clean = torch.randint(0, 96, (n, t))
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 7) % 96

    def metric(logits):
        return logits[:, -1, 3] - logits[:, -1, 7]

    layers = ["resid", "blocks.*"]
    results = {}

    def run(batch_size):
        def call():
            results[batch_size] = hlviz.activation_patching(
                model, clean, corrupted, layers, metric=metric, batch_size=batch_size
            ).effect

        return call

    timings = interleaved({"looped": run(1), "batched": run(None)}, rounds=rounds, warmup=1)
    np.testing.assert_allclose(results[1], results[None], atol=1e-4)
    return (
        f"| {n} x {t} | {5 * t} | {timings.median_ms('looped') / 1e3:.2f} | "
        f"{timings.median_ms('batched') / 1e3:.2f} | "
        f"{timings.ratio('looped', 'batched'):.2f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small size, 2 rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [(1, 16)] if args.quick else [(1, 32), (4, 64), (1, 128)]
    rounds = 2 if args.quick else 5
    print("### activation patching on CharGPT (4 layers + embeddings, d=128; CPU, 1 thread)\n")
    print("| N x T | patches | one pass per patch (s) | batched (s) | speed-up |")
    print("|---|---|---|---|---|")
    for n, t in sizes:
        print(case(n, t, rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
