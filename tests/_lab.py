"""A throwaway JupyterLab server and a headless Chromium page on it, for the browser test.

The server runs on loopback with a random token, fresh config/data/runtime directories (so no
user setting, extension or workspace of the machine leaks in), autosave off (the notebook under
test is a copy, and is never written back) and the news toast off. It is stopped by its PID.
Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright without ``playwright
install``; the flags keep it off the network and off the GPU.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def chromium_path() -> str | None:
    """The system Chromium, or ``None`` (the test is then skipped with this reason)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(root: Path, state: Path, *, timeout: float = 90.0) -> Iterator[str]:
    """Run ``jupyter lab`` serving ``root``; yield its base URL with ``?token=`` appended."""
    env = dict(os.environ)
    for key, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("IPYTHONDIR", "ipython"),
    ):
        env[key] = str(state / sub)
        (state / sub).mkdir(parents=True, exist_ok=True)
    for rel, value in _SETTINGS.items():
        path = state / "config" / "lab" / "user-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env.pop("MPLBACKEND", None)  # the kernel draws inline, as in a user's session
    token, port = secrets.token_hex(16), _free_port()
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(state / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "JupyterLab did not start; its log:\n"
                        + (state / "server.log").read_text(errors="replace")[-3000:]
                    ) from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/{{path}}?token={token}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # jupyter shuts kernels down on SIGINT (twice)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def run_all_cells(page, *, timeout_ms: int = 120_000) -> None:
    """Wait until the kernel is connected and idle, then Run > Run All Cells from the menu."""
    from playwright.sync_api import TimeoutError as PWTimeout

    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout_ms)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=timeout_ms)
    try:  # the "news?" toast can cover widgets; it is off in the settings, but just in case
        page.locator(".jp-toast-button", has_text=re.compile(r"^No$")).first.click(timeout=2_000)
    except PWTimeout:
        pass
    first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for _ in range(3):
        page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(
                "el => /\\[[0-9*]+\\]/.test(el.textContent)",
                arg=first_prompt.element_handle(),
                timeout=15_000,
            )
            return
        except PWTimeout:
            continue
    raise RuntimeError("Run All Cells did not start the first cell after 3 tries.")


def wait_all_done(page, *, timeout_ms: int = 300_000) -> None:
    """Wait until every code cell has a numbered prompt ``[n]`` (none pending ``[*]``)."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[[0-9]+\\]/.test(p.textContent));
        }""",
        timeout=timeout_ms,
    )


def decoded_image_js(scope: str) -> str:
    """JS predicate: a decoded, visible ``<img>`` inside ``scope`` (a CSS selector)."""
    return f"""() => [...document.querySelectorAll({json.dumps(scope + " img")})]
        .some(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().height > 0)"""
