"""Benchmark ``hlviz.attribute`` against Captum called directly, and its memory budget.

Run ``python bench/attribution_bench.py`` (``--quick`` for a smoke run, ``--out FILE`` to
also write the markdown report). Three tables:

* **IG on a CNN batch**: ``IntegratedGradients`` on ``SmallCNN`` (see ``workloads.py``),
  Captum with ``return_convergence_delta=True`` vs ``hlviz.attribute(...,
  method="integrated_gradients")`` with its defaults (automatic internal batch, target
  check, delta warning);
* **layer IG on MiniLM**: token attributions on ``embeddings.word_embeddings`` of
  all-MiniLM-L6-v2 (scored on ``pooler_output[:, 0]``); Captum gets the PAD baseline
  precomputed, hlviz builds it from the tokenizer inside the timed call;
* **peak memory**: IG on a larger CNN batch in a fresh subprocess per variant, the
  peak resident memory added by the call (``VmHWM`` after resetting it), with Captum's
  default (every step at once) and with ``internal_batch_size="auto"`` under a budget.

Ratios are medians of per-round paired ratios (``timing.py``) with their quartiles; the
issue's targets (overhead <= 5%, peak under budget) are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HLVIZ_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from timing import Timings, interleaved
from workloads import SENTENCES, small_cnn

import hlviz

TARGET_OVERHEAD = 1.05
HLVIZ, CAPTUM = "hlviz.attribute", "captum direct"


def _quiet(fn):
    import warnings

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of a random-weight model
            return fn()

    return run


def cnn_variants(batch: int, n_steps: int) -> tuple[dict, str]:
    """Captum's and hlviz's IG on the small CNN, as zero-argument callables."""
    from captum.attr import IntegratedGradients

    work = small_cnn(batch=batch)
    model, x = work.model, torch.randn(batch, 1, 28, 28)
    target = [i % 10 for i in range(batch)]
    zeros = torch.zeros_like(x)

    def captum() -> object:
        return IntegratedGradients(model).attribute(
            x, baselines=zeros, target=target, n_steps=n_steps, return_convergence_delta=True
        )

    def ours() -> object:
        return hlviz.attribute(
            model, x, target=target, method="integrated_gradients", n_steps=n_steps
        )

    desc = f"SmallCNN, batch {batch}x1x28x28, n_steps {n_steps}"
    return {CAPTUM: _quiet(captum), HLVIZ: _quiet(ours)}, desc


def minilm_variants(n_sentences: int, n_steps: int) -> tuple[dict, str]:
    """Captum's and hlviz's layer IG on MiniLM's word embeddings."""
    from captum.attr import LayerIntegratedGradients

    from hlviz.models import minilm

    mini = minilm.load()
    tok, model = mini.tokenizer, mini.model
    batch = dict(tok(SENTENCES[:n_sentences], padding=True, return_tensors="pt"))
    ids = batch["input_ids"]
    keys = [k for k in batch if k != "input_ids"]
    baseline = hlviz.attribution.token_baseline(ids, tok.pad_token_id, tok.all_special_ids)
    emb = model.embeddings.word_embeddings

    def forward(i, *rest):
        return model(input_ids=i, **dict(zip(keys, rest, strict=True))).pooler_output

    def captum() -> object:
        return LayerIntegratedGradients(forward, emb).attribute(
            ids,
            baselines=baseline,
            target=0,
            additional_forward_args=tuple(batch[k] for k in keys),
            n_steps=n_steps,
            return_convergence_delta=True,
        )

    def ours() -> object:
        return hlviz.attribute(
            model, batch, target=0, method="layer_integrated_gradients", n_steps=n_steps,
            output="pooler_output", tokenizer=tok,
        )  # fmt: skip

    desc = f"all-MiniLM-L6-v2 (eager), {tuple(ids.shape)} tokens, n_steps {n_steps}"
    return {CAPTUM: _quiet(captum), HLVIZ: _quiet(ours)}, desc


def timing_table(title: str, desc: str, t: Timings) -> str:
    ratio = t.ratio(HLVIZ, CAPTUM)
    q1, q3 = t.ratio_iqr(HLVIZ, CAPTUM)
    lo, hi = t.ratio_ci(HLVIZ, CAPTUM)
    verdict = (
        "met" if hi <= TARGET_OVERHEAD else ("likely" if ratio <= TARGET_OVERHEAD else "not met")
    )
    return "\n".join(
        [
            f"### {title}",
            "",
            f"{desc}; {t.rounds} rounds.",
            "",
            "| variant | median ms | ratio vs captum direct [IQR] | ms over captum direct |",
            "|---|---:|---:|---:|",
            f"| {CAPTUM} | {t.median_ms(CAPTUM):.1f} | 1.000 | 0 |",
            f"| {HLVIZ} | {t.median_ms(HLVIZ):.1f} | {ratio:.3f} [{q1:.3f}, {q3:.3f}] | "
            f"{t.delta_ms(HLVIZ, CAPTUM):+.1f} |",
            "",
            f"overhead target <= {TARGET_OVERHEAD:.2f}: {verdict} "
            f"(95% CI of the ratio {lo:.3f}-{hi:.3f})",
            "",
        ]
    )


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(k + r":\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def memory_child(variant: str, batch: int, n_steps: int, budget: int) -> None:
    """Run one IG call in this (fresh) process and print the peak memory it added, as JSON."""
    from captum.attr import IntegratedGradients

    torch.set_num_threads(1)
    work = small_cnn(batch=batch)
    model, x = work.model, torch.randn(batch, 1, 28, 28)

    def call(xs: torch.Tensor, steps: int) -> None:
        if variant == "captum":
            IntegratedGradients(model).attribute(xs, target=0, n_steps=steps)
        else:
            hlviz.attribute(model, xs, target=0, method="integrated_gradients", n_steps=steps,
                            memory_budget=budget)  # fmt: skip

    _quiet(lambda: call(x[:1], 2))()  # load code paths on a tiny call first
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before = _status()["VmRSS"]
    start = time.perf_counter()
    _quiet(lambda: call(x, n_steps))()
    print(json.dumps({"peak": _status()["VmHWM"] - before, "s": time.perf_counter() - start}))


def memory_table(batch: int, n_steps: int, budget: int) -> str:
    rows = []
    for variant, label in (("captum", "captum default (all steps at once)"),
                           ("hlviz", 'hlviz internal_batch_size="auto"')):  # fmt: skip
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", variant, str(batch), str(n_steps),
             str(budget)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        got = json.loads(out.stdout.strip().splitlines()[-1])
        under = "yes" if got["peak"] <= budget else "no"
        rows.append(f"| {label} | {got['peak'] / 2**20:.0f} | {under} | {got['s']:.2f} |")
    return "\n".join(
        [
            "### peak memory: IG on SmallCNN",
            "",
            f"batch {batch}x1x28x28, n_steps {n_steps} ({batch * n_steps} rows), memory budget "
            f"{budget / 2**20:.0f} MiB; peak resident memory added by the call, fresh process each.",
            "",
            "| variant | peak MiB | under budget | seconds |",
            "|---|---:|:---:|---:|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--no-minilm", action="store_true", help="skip MiniLM (slow on 2 cores)")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        v, b, s, m = args.memory_child
        memory_child(v, int(b), int(s), int(m))
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    quick = args.quick
    budget_s = 4.0 if quick else 60.0
    parts = [
        "## hlviz.attribute vs Captum called directly",
        "",
        f"torch {torch.__version__}, {platform.machine()}, 1 thread, "
        f"{'quick' if quick else 'full'} run.",
        "",
    ]
    variants, desc = cnn_variants(batch=4 if quick else 32, n_steps=8 if quick else 32)
    t = interleaved(variants, budget_s=budget_s, min_rounds=3, warmup=1)
    parts.append(timing_table("IG on a CNN batch", desc, t))
    if not args.no_minilm:
        variants, desc = minilm_variants(2 if quick else 8, 4 if quick else 16)
        t = interleaved(variants, budget_s=budget_s, min_rounds=3, warmup=1)
        parts.append(timing_table("layer IG on MiniLM", desc, t))
    batch, steps = (8, 32) if quick else (32, 64)
    parts.append(memory_table(batch, steps, budget=(64 if quick else 128) * 2**20))
    report = "\n".join(parts)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
