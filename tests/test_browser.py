"""Notebook 09 in a real JupyterLab, in headless Chromium: run every cell, then drive the first
LayerInspector as a user would (layer dropdown, unit slider) and check the view follows.

Skipped, saying why, when Debian's Chromium or the ``playwright`` package is missing
(``.ci/run`` installs both, so CI runs it). Screenshots land in ``build/browser/``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from ._lab import CHROMIUM_FLAGS, chromium_path, jupyterlab, run_all_cells, wait_all_done

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "09_interactive_layer_inspection.ipynb"
SHOTS = ROOT / "build" / "browser"

pytestmark = pytest.mark.slow

_NEW_IMAGE = """([scope, old]) => {
    const img = document.querySelector(scope + ' .widget-output img');
    return img !== null && img.src !== old && img.complete && img.naturalWidth > 0
        && img.getBoundingClientRect().height > 0;
}"""


def _requirements() -> str:
    browser = chromium_path()
    if browser is None:
        pytest.skip("no Chromium on PATH: install Debian's with `apt-get install chromium`")
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `pip install playwright`"
    )
    return browser


def test_notebook_09_runs_in_jupyterlab_and_the_inspector_follows_its_controls(tmp_path):
    browser = _requirements()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # the stored notebook is never touched
    started = time.monotonic()
    timings: dict[str, float] = {}
    with (
        jupyterlab(root, tmp_path / "state") as url,
        sync_playwright() as pw,
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=browser,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(url.format(path=NOTEBOOK.name), wait_until="domcontentloaded")
            run_all_cells(page)
            wait_all_done(page, timeout_ms=420_000)
            timings["run all cells"] = time.monotonic() - started
            page.screenshot(path=str(SHOTS / "09_after_run_all.png"))

            # every cell ran without an error
            errors = page.locator(".jp-OutputArea-output", has_text=re.compile("Traceback"))
            assert errors.count() == 0, errors.first.inner_text()[:2000]
            assert page.locator(".hlviz-inspector").count() >= 4  # CNN, LSTM, MiniLM, GPT, MLP

            scope = ".hlviz-inspector >> nth=0"
            inspector = page.locator(scope)
            inspector.scroll_into_view_if_needed()
            caption = inspector.locator(".hlviz-caption")
            image = inspector.locator(".widget-output img").first
            page.wait_for_function(
                _NEW_IMAGE, arg=["div.hlviz-inspector", ""], timeout=60_000
            )  # the first view is drawn
            first_caption, first_src = caption.inner_text(), image.get_attribute("src")

            # 1. the layer dropdown, changed through its <select>
            select = inspector.locator(".hlviz-control-layer select")
            options = select.locator("option").all_inner_texts()
            current = select.input_value()
            new_layer = next(o for o in options if o != current)
            t0 = time.monotonic()
            select.select_option(label=new_layer)
            caption.filter(has_text=f"{new_layer}:").wait_for(timeout=60_000)
            page.wait_for_function(_NEW_IMAGE, arg=["div.hlviz-inspector", first_src])
            timings["layer change to new image"] = time.monotonic() - t0
            assert caption.inner_text() != first_caption
            page.screenshot(path=str(SHOTS / "09_layer_changed.png"))

            # 2. the unit slider, typed into its readout as a user can
            src = image.get_attribute("src")
            readout = inspector.locator(".hlviz-control-unit .widget-readout")
            t0 = time.monotonic()
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("3")
            page.keyboard.press("Enter")
            caption.filter(has_text=re.compile(rf"{re.escape(new_layer)}: \w+ 3 of")).wait_for(
                timeout=60_000
            )
            page.wait_for_function(_NEW_IMAGE, arg=["div.hlviz-inspector", src])
            timings["slider change to new image"] = time.monotonic() - t0
            assert readout.inner_text().strip() == "3"
            page.screenshot(path=str(SHOTS / "09_unit_changed.png"))
        finally:
            context.close()
    timings["total"] = time.monotonic() - started
    (SHOTS / "timings.txt").write_text(
        "".join(f"{name}: {seconds:.1f} s\n" for name, seconds in timings.items())
    )
