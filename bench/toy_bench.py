"""Benchmark the toy-plane pieces: training an MLP on each 2-D data set, and one widget redraw.

Run ``python bench/toy_bench.py``; ``--quick`` for a smoke run (one round, two data
sets), ``--out FILE`` to also write the markdown report.

Reported (not asserted): seconds per ``hlviz.toy.fit_mlp`` call (two hidden layers of
16 ReLUs, 300 full-batch Adam steps, 400 points) and its ratio to the issue's target of
about one second (at the process's torch thread count, which hlviz leaves alone); and
seconds per ``render_plane`` (train and draw the explorer's figure), also against one second.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from timing import interleaved

from hlviz import toy
from hlviz.widgets import PlaneState, render_plane


def _render(state: PlaneState) -> None:
    plt.close(render_plane(state))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, two data sets")
    parser.add_argument("--out", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 5
    names = toy.DATASETS[:2] if args.quick else toy.DATASETS
    data = {name: toy.make_toy(name, n=400, seed=0) for name in names}
    threads = torch.get_num_threads()

    variants = {f"fit {n}": (lambda d=d: toy.fit_mlp(d, [16, 16], seed=0)) for n, d in data.items()}
    variants["render_plane"] = lambda: _render(PlaneState(dataset=names[0]))
    timings = interleaved(variants, rounds=rounds)

    lines = [
        f"### toy plane ({rounds} rounds, torch threads {threads})",
        "",
        "| what | median s | ratio to 1 s target |",
        "|---|---|---|",
    ]
    for name in [*(f"fit {n}" for n in names), "render_plane"]:
        seconds = timings.median_ms(name) / 1e3
        lines.append(f"| {name} | {seconds:.3f} | {seconds:.2f} (target <= 1) |")
    lines.append("")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
