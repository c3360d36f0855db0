"""Execute the notebooks in order and render them as a small HTML book, or refresh them in place.

    python scripts/build_book.py --out build/book notebooks/*.ipynb   # make book
    python scripts/build_book.py --inplace notebooks/01_*.ipynb      # make refresh

Each notebook runs in a fresh ``python3`` kernel of the current environment with its
working directory set to ``notebooks/``. With ``--out``, the executed copies are
rendered to HTML next to an ``index.html`` that links them; the sources are not
touched. With ``--inplace``, outputs are stored back into the notebooks (widget state
stripped, so nbval and diffs stay clean).
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter


def execute(path: Path, timeout: int) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no per-cell timestamps: refreshed notebooks diff cleanly
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def title_of(nb: nbformat.NotebookNode, path: Path) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip().replace("`", "")
    return path.stem


def write_index(out: Path, entries: list[tuple[str, str, float]]) -> Path:
    items = "\n".join(
        f'<li><a href="{html.escape(href)}">{html.escape(title)}</a> '
        f"<small>({seconds:.0f} s)</small></li>"
        for href, title, seconds in entries
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hlviz: the book</title>
<style>body{{font-family:system-ui,sans-serif;max-width:46em;margin:3em auto;line-height:1.5}}
li{{margin:.4em 0}} small{{color:#666}}</style></head>
<body><h1>hlviz: what do the hidden layers learn?</h1>
<p>Every notebook below was executed by <code>make book</code> on this machine.</p>
<ol>
{items}
</ol></body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="folder for the rendered HTML book")
    where.add_argument(
        "--inplace", action="store_true", help="store outputs back into the notebooks"
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    entries = []
    exporter = HTMLExporter(template_name="lab")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        start = time.perf_counter()
        sys.stdout.write(f"executing {path} ... ")
        sys.stdout.flush()
        nb = execute(path, args.timeout)
        seconds = time.perf_counter() - start
        sys.stdout.write(f"{seconds:.1f} s\n")
        if args.inplace:
            nbformat.write(nb, path)
            continue
        body, _ = exporter.from_notebook_node(nb)
        target = args.out / f"{path.stem}.html"
        target.write_text(body, encoding="utf-8")
        entries.append((target.name, title_of(nb, path), seconds))
    if args.out:
        index = write_index(args.out, entries)
        print(f"book written: {index.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
