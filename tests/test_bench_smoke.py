"""`make bench` keeps working: each quick run finishes and prints its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # each run starts Python, loads models and times them


def _quick(script: str, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def _has(report: str, *needles: str) -> None:
    for needle in needles:
        assert needle in report, f"{needle!r} missing from the bench report"


def test_bench_quick_run_prints_both_tables(tmp_path):
    out_file = tmp_path / "bench.md"
    stdout = _quick("run.py", "--out", str(out_file))
    _has(out_file.read_text(), "### minilm", "### cnn", "| hlviz.record |", "| bare forward |")
    _has(out_file.read_text(), "target <= 1.05")
    assert "### minilm" in stdout, "the report is printed too"


def test_probe_sweep_quick_run_reports_speed_and_accuracy():
    stdout = _quick("probe_sweep.py")
    _has(stdout, "### 7 MiniLM layers x 500 tokens", "| sweep: 3 seeds", "speed-up", "linear CKA")


def test_attribution_bench_quick_run_reports_overhead_and_memory():
    stdout = _quick("attribution_bench.py")
    _has(stdout, "### IG on a CNN batch", "### layer IG on MiniLM", "### peak memory")
    _has(stdout, "| hlviz.attribute |")


def test_collect_bench_quick_run_reports_throughput_and_memory():
    _has(_quick("collect_bench.py"), "### throughput", "### peak memory", "- target:")


def test_units_bench_quick_run_reports_feature_vis_and_patches():
    _has(_quick("units_bench.py"), "| feature vis, 1 channel", "| top-9 patches", "| unit stats")


def test_patching_bench_quick_run_compares_batched_with_one_pass_per_patch():
    _has(_quick("patching_bench.py"), "### activation patching on CharGPT", "| 1 x 16 | 80 |")


def test_widgets_bench_quick_run_times_every_view():
    report = _quick("widgets_bench.py")
    _has(
        report,
        "### LayerInspector",
        "| feature maps |",
        "| sequence |",
        "| attention |",
        "| bars |",
    )
