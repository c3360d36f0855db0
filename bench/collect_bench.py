"""Benchmark ``hlviz.collect``: throughput to disk against a bare forward, and peak memory.

Run ``python bench/collect_bench.py``; ``--quick`` for a smoke run (< 1 min), ``--out FILE``
to also write the markdown report to a file.

* Throughput: all-MiniLM-L6-v2 over the same batches of 64 sentences, timed round-robin
  (see ``timing.py``): the bare forward loop, ``collect(reduce="mean")`` of the 6 encoder
  layers streamed to a fresh store on disk, and ``collect(tokens=True)`` (full token-level
  states of the same layers, padding excluded). Each collect call includes everything a
  user pays: the model fingerprint, hooks, the shards and their sha256, the journal, and
  deleting the store afterwards. Reported as throughput relative to the bare forward
  (target for ``reduce="mean"``: >= 0.9).
* Memory: a fresh subprocess per size collects the full ``(N, 32, 28, 28)`` output of the
  first convolution of a small CNN (100 KB per image) to disk, for N and 4N images made
  batch by batch. The peak RSS of the collect call (Linux ``VmHWM``, reset just before it)
  is compared (target: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HLVIZ_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from timing import interleaved
from workloads import SENTENCES, SmallCNN

import hlviz

TARGET_THROUGHPUT, TARGET_RSS = 0.9, 1.10


def minilm_batches(n_batches: int, seed: int = 0):
    """MiniLM in eval mode and ``n_batches`` tokenized batches of 64 shuffled sentences."""
    from hlviz.models import minilm

    mini = minilm.load()
    tokenizer, model = mini.tokenizer, mini.model
    rng = random.Random(seed)
    batches = []
    for _ in range(n_batches):
        sentences = rng.sample(SENTENCES, len(SENTENCES))
        batches.append(dict(tokenizer(sentences, padding=True, return_tensors="pt")))
    return model, batches


def throughput(n_batches: int, rounds: int, budget_s: float) -> list[str]:
    model, batches = minilm_batches(n_batches)
    layers = "encoder.layer.*"
    root = Path(tempfile.mkdtemp(prefix="hlviz-bench-"))
    sizes: dict[str, int] = {}

    def bare() -> None:
        with torch.no_grad():
            for batch in batches:
                model(**batch)

    def to_disk(name: str, **options):
        def run() -> None:
            out = root / name
            store = hlviz.collect(model, batches, layers, out=out, progress=False, **options)
            sizes[name] = sum(store[n].nbytes for n in store)
            shutil.rmtree(out)

        return run

    keys = {"bare forward": None, 'collect reduce="mean" to disk': "mean"}
    keys["collect tokens=True to disk"] = "tokens"
    variants = {
        "bare forward": bare,
        'collect reduce="mean" to disk': to_disk("mean", reduce="mean"),
        "collect tokens=True to disk": to_disk("tokens", tokens=True),
    }
    try:
        t = interleaved(variants, rounds=rounds, budget_s=budget_s, warmup=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    lines = [
        f"### throughput: all-MiniLM-L6-v2, {n_batches} batches x 64 sentences "
        f"({tokens} real tokens), 6 encoder layers",
        "",
        f"{t.rounds} interleaved rounds; throughput = bare forward time / variant time "
        "(median of per-round ratios) [quartiles]",
        "",
        "| variant | median s | throughput vs bare forward | written MiB |",
        "|---|---:|---:|---:|",
    ]

    def quartiles(name: str) -> tuple[float, float, float]:
        ratios = [b / v for b, v in zip(t.samples["bare forward"], t.samples[name], strict=True)]
        if len(ratios) < 2:
            return ratios[0], ratios[0], ratios[0]
        q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return q1, q2, q3

    for name in variants:
        q = quartiles(name)
        written = sizes.get(keys[name], 0) if keys[name] else 0
        lines.append(
            f"| {name} | {t.median_ms(name) / 1e3:.2f} | {q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}] "
            f"| {written / 2**20:.1f} |"
        )
    ratio = quartiles('collect reduce="mean" to disk')[1]
    verdict = "met" if ratio >= TARGET_THROUGHPUT else "NOT met"
    lines += [
        "",
        f'- target: collect(reduce="mean") to disk >= {TARGET_THROUGHPUT} of the bare '
        f"forward's throughput: {ratio:.3f}, **{verdict}**",
    ]
    return lines


# ---------------------------------------------------------------- memory (subprocess)
def _peak_rss_child(n_images: int, out: str) -> dict:
    """Runs in a fresh process: collect ``n_images`` to ``out`` and report peak RSS (MiB)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SmallCNN().eval()

    def images():
        g = torch.Generator().manual_seed(1)
        for start in range(0, n_images, 128):
            yield torch.randn(min(128, n_images - start), 1, 28, 28, generator=g)

    def status(key: str) -> float:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key))
        return int(line.split()[1]) / 1024

    # warm up allocators and imports on one batch, so both sizes start from the same state
    hlviz.collect(model, torch.zeros(2, 1, 28, 28), "features.0", progress=False)
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    start = time.perf_counter()
    store = hlviz.collect(model, images(), ["features.0", "classifier"], out=out, progress=False)
    seconds = time.perf_counter() - start
    return {
        "rows": store.rows,
        "written_mib": sum(store[n].nbytes for n in store) / 2**20,
        "before_mib": before,
        "peak_mib": status("VmHWM:"),
        "seconds": seconds,
    }


def memory(n: int) -> list[str]:
    rows = []
    for size in (n, 4 * n):
        with tempfile.TemporaryDirectory(prefix="hlviz-bench-") as tmp:
            run = subprocess.run(
                [sys.executable, __file__, "--child", str(size), str(Path(tmp) / "store")],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    small, big = rows
    ratio = big["peak_mib"] / small["peak_mib"]
    verdict = "met" if ratio <= TARGET_RSS else "NOT met"
    lines = [
        "### peak memory: SmallCNN, full conv1 output (32x28x28 float32 per image) to disk",
        "",
        "one fresh process per size; peak RSS of the collect call (VmHWM reset before it)",
        "",
        "| images | written MiB | RSS before MiB | peak RSS MiB | peak - before MiB | s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rows']} | {r['written_mib']:.0f} | {r['before_mib']:.0f} | "
            f"{r['peak_mib']:.0f} | {r['peak_mib'] - r['before_mib']:.0f} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        f"- target: peak RSS for {4 * n} images within 10% of {n} images: ratio {ratio:.3f}, "
        f"**{verdict}**",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the markdown report (and write it to ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", help="also write the markdown report to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_peak_rss_child(int(args.child[0]), args.child[1])))
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lines = [
        "# hlviz benchmark: collect (ratios, one run)",
        "",
        f"- torch {torch.__version__}, hlviz {hlviz.__version__}, torch threads {args.threads}",
        "- load average at start (1, 5, 15 min): "
        + (", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"),
        "",
    ]
    if args.quick:
        lines += throughput(n_batches=2, rounds=2, budget_s=5)
        lines += ["", *memory(512)]
    else:
        lines += throughput(n_batches=12, rounds=15, budget_s=150)
        lines += ["", *memory(1024)]
    lines += ["", f"total {time.perf_counter() - started:.0f} s"]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
