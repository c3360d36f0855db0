"""Benchmark ``hlviz.record`` against a bare forward pass and hand-written hooks.

Run ``python bench/run.py`` (or ``make bench``); ``--quick`` for a smoke run (< 40 s),
``--out FILE`` to also write the markdown report to a file.

Variants, timed round-robin in one process (see ``timing.py``) under ``torch.no_grad()``:

* ``bare forward``: the model alone;
* ``hooks (detach)``: ``register_forward_hook`` storing ``output.detach()`` (the floor);
* ``hooks (clone)``: the same storing ``output.detach().clone()``, equal work to hlviz,
  whose stored values are copies (safe under in-place ops);
* ``hlviz.record``: ``with hlviz.record(model, layers) as rec: forward()``, defaults;
* ``hlviz.record mean``: the same with ``reduce="mean"`` (over tokens or space).

Every hooked variant registers and removes its hooks inside the timed call, as a user's
``with`` block does. Ratios are medians of per-round paired ratios with their [quartiles];
"ms over hooks (clone)" is the median per-round difference. The issue's targets for
MiniLM are checked with a bootstrap 95% interval and reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HLVIZ_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from timing import Timings, interleaved
from workloads import Workload, minilm, small_cnn

import hlviz

BARE, DETACH, CLONE, HLVIZ, MEAN = (
    "bare forward",
    "hooks (detach)",
    "hooks (clone)",
    "hlviz.record",
    "hlviz.record mean",
)
# Targets from the issue, checked on MiniLM: record vs bare forward, record vs hooks (clone).
TARGET_VS_BARE, TARGET_VS_HOOKS = 1.05, 1.02


def variants(work: Workload) -> dict[str, Callable[[], object]]:
    """The five ways of running ``work`` that are compared, as zero-argument callables."""

    def hand_written(clone: bool) -> Callable[[], object]:
        def run() -> object:
            store: dict[str, torch.Tensor] = {}

            def make_hook(name: str):
                def hook(module, args, output):
                    store[name] = output.detach().clone() if clone else output.detach()

                return hook

            handles = [m.register_forward_hook(make_hook(n)) for n, m in work.modules.items()]
            try:
                work.forward()
            finally:
                for handle in handles:
                    handle.remove()
            return store

        return run

    def with_hlviz(**options: object) -> Callable[[], object]:
        def run() -> object:
            with hlviz.record(work.model, work.layers, **options) as rec:
                work.forward()
            return rec

        return run

    return {
        BARE: work.forward,
        DETACH: hand_written(clone=False),
        CLONE: hand_written(clone=True),
        HLVIZ: with_hlviz(),
        MEAN: with_hlviz(reduce="mean"),
    }


def check_equal(work: Workload) -> None:
    """Fail loudly if hlviz.record and the hand-written hooks record different tensors."""
    store = cast(dict, variants(work)[CLONE]())
    rec = cast(hlviz.Recording, variants(work)[HLVIZ]())
    if list(rec) != list(store) or any(not torch.equal(rec[n], store[n]) for n in store):
        raise SystemExit(f"{work.name}: hlviz.record and hand-written hooks disagree")


def table(work: Workload, t: Timings) -> list[str]:
    """Markdown rows for one workload: median ms and paired ratios with quartiles."""

    def cell(name: str, base: str) -> str:
        q1, q3 = t.ratio_iqr(name, base)
        return f"{t.ratio(name, base):.3f} [{q1:.3f}, {q3:.3f}]"

    lines = [
        f"### {work.name}: {work.description}",
        "",
        f"{t.rounds} interleaved rounds",
        "",
        "| variant | median ms | vs bare forward | vs hooks (clone) | ms over hooks (clone) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in t.samples:
        lines.append(
            f"| {name} | {t.median_ms(name):.1f} | {cell(name, BARE)} | {cell(name, CLONE)} "
            f"| {t.delta_ms(name, CLONE):+.2f} |"
        )
    return lines


def targets(t: Timings) -> list[str]:
    """Lines saying whether the issue's MiniLM targets are met (reported, never asserted)."""
    lines = ["### targets (MiniLM, hlviz.record defaults)", ""]
    for base, limit in ((BARE, TARGET_VS_BARE), (CLONE, TARGET_VS_HOOKS)):
        value = t.ratio(HLVIZ, base)
        low, high = t.ratio_ci(HLVIZ, base)
        verdict = "met" if value <= limit else "NOT met"
        if low <= limit < high:
            verdict += " (the 95% interval straddles the target: within noise)"
        lines.append(
            f"- hlviz.record vs {base}: {value:.3f}, 95% CI [{low:.3f}, {high:.3f}] "
            f"(target <= {limit:.2f}): **{verdict}**"
        )
    return lines


def load() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def context(threads: int) -> list[str]:
    """Hardware and software context lines (and a warning when the machine is busy)."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        "# hlviz benchmark: record overhead (ratios, one run)",
        "",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, "
        f"hlviz {hlviz.__version__}, Python {platform.python_version()}",
        f"- torch threads: {threads} (torch.set_num_threads); CPUs: {os.cpu_count()} "
        f"({usable} usable); {cpu}",
        "- all variants under torch.no_grad(); hooks registered and removed inside each timed call",
        "- ratios: median over rounds of the per-round paired ratio [first, third quartile]",
        f"- load average at start (1, 5, 15 min): {load()}",
    ] + (
        ["- **machine busy at start (other processes use the CPUs): expect noisy ratios**"]
        if hasattr(os, "getloadavg") and os.getloadavg()[0] >= 1.0
        else []
    )


def main(argv: list[str] | None = None) -> int:
    """Run both workloads, print the markdown report, optionally write it to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    parser.add_argument("--out", help="also write the markdown report to this file")
    # One thread by default: with 2 OpenMP threads on a 2-vCPU machine that other work
    # shares, a forward pass stalls whenever one vCPU is taken (seen here: 0.13 s -> 1.4 s).
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    # seconds of timing per workload: MiniLM (the one with targets) gets the larger share
    budgets = {"minilm": 7.0, "cnn": 5.0} if args.quick else {"minilm": 95.0, "cnn": 50.0}
    max_rounds, warmup = (20, 1) if args.quick else (400, 3)
    start = time.perf_counter()
    lines = context(args.threads)
    with torch.no_grad():
        for build in (minilm, small_cnn):
            work = build()
            check_equal(work)
            t = interleaved(
                variants(work), rounds=max_rounds, budget_s=budgets[work.name], warmup=warmup
            )
            lines += ["", *table(work, t)]
            if work.name == "minilm":
                lines += ["", *targets(t)]
    lines += [
        "",
        f"total runtime {time.perf_counter() - start:.0f} s; load average at end: {load()}",
    ]
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
