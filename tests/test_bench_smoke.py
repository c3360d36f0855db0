"""`make bench` keeps working: the quick run finishes and prints its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_run_prints_both_tables(tmp_path):
    out_file = tmp_path / "bench.md"
    run = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(out_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = out_file.read_text()
    for needle in (
        "### minilm",
        "### cnn",
        "| hlviz.record |",
        "| bare forward |",
        "target <= 1.05",
    ):
        assert needle in report, f"{needle!r} missing from the bench report"
    assert "### minilm" in run.stdout, "the report is printed too"


def test_probe_sweep_quick_run_reports_speed_and_accuracy():
    run = subprocess.run(
        [sys.executable, "bench/probe_sweep.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for needle in (
        "### 7 MiniLM layers x 500 tokens",
        "| sweep: 3 seeds",
        "speed-up",
        "linear CKA",
    ):
        assert needle in run.stdout


def test_attribution_bench_quick_run_reports_overhead_and_memory():
    run = subprocess.run(
        [sys.executable, "bench/attribution_bench.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for needle in ("### IG on a CNN batch", "### layer IG on MiniLM", "### peak memory"):
        assert needle in run.stdout, f"{needle!r} missing from the attribution bench report"
    assert "| hlviz.attribute |" in run.stdout


def test_collect_bench_quick_run_reports_throughput_and_memory():
    run = subprocess.run(
        [sys.executable, "bench/collect_bench.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for needle in ("### throughput", "### peak memory", "- target:"):
        assert needle in run.stdout, f"{needle!r} missing from the collect bench report"
