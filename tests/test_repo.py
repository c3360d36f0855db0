"""The repository keeps its promises: lint clean, conda file agrees with pip pins, data
checksums hold, notebooks are stored clean, the book builder works, imports are light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONDA_NAMES = {"torch": "pytorch"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def test_ruff_lint_and_format_are_clean():
    lint = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [BIN / "ruff", "format", "--check", "hlviz", "tests", "scripts", "bench", "conftest.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_requirements_pin_every_package_and_the_cpu_torch():
    pins = _pins(ROOT / "requirements.txt")
    assert pins["torch"] == "2.13.0"
    assert all(pins.values()), f"unpinned: {[n for n, v in pins.items() if not v]}"


def test_environment_yml_agrees_with_requirements_and_pyproject():
    import tomllib

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "hlviz" and "conda-forge" in env["channels"]
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep["pip"]:
                if "==" in spec:
                    name, version = spec.split("==")
                    pip[name.lower()] = version
            assert "-e ." in dep["pip"], "the conda env installs hlviz itself"
        else:
            name, _, version = dep.partition("=")
            conda[name.lower()] = version
    assert conda.get("python") == "3.11"
    merged = {**{k: v for k, v in conda.items() if k not in ("python", "pip")}, **pip}
    wanted = {CONDA_NAMES.get(n, n): v for n, v in _pins(ROOT / "requirements.txt").items()}
    assert merged == wanted, f"differ: {set(merged.items()) ^ set(wanted.items())}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += [d for d in extra if not d.startswith("hlviz")]
    for dep in declared:
        name = re.split(r"[<>=!~\[ ]", dep, maxsplit=1)[0].lower()
        assert CONDA_NAMES.get(name, name) in merged, (
            f"{name} (pyproject) is missing from environment.yml"
        )


DATA = ROOT / "data"


def _listed() -> dict[str, str]:
    """data/SHA256SUMS as name -> digest (``sha256sum`` format, an optional ``*`` before names)."""
    listed = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    return listed


def test_every_data_file_has_one_checksum_line():
    files = {
        p.relative_to(DATA).as_posix()
        for p in DATA.rglob("*")
        if p.is_file() and p.name not in ("PROVENANCE.md", "SHA256SUMS")
    }
    lines = (DATA / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == len(_listed()), "a file is listed twice in data/SHA256SUMS"
    assert files == set(_listed()), (
        f"files without a checksum or checksums without a file: {files ^ set(_listed())}"
    )


@pytest.mark.parametrize("name", sorted(_listed()))
def test_data_file_matches_its_checksum_and_has_provenance(name):
    from hlviz.datasets import sha256_of, verified_data_file

    assert (DATA / name).is_file(), f"data/{name} is listed in SHA256SUMS but missing"
    assert sha256_of(DATA / name) == _listed()[name], f"data/{name} changed"
    assert verified_data_file(name, "-") == DATA / name  # the loaders' own check agrees
    assert name in (DATA / "PROVENANCE.md").read_text(), f"{name} has no entry in PROVENANCE.md"


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_numbered_and_start_with_the_quickstart():
    # numbers follow the DESIGN sequence (08 is probing even when 02-07 have not landed yet)
    names = [p.name for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", n) for n in names), names
    numbers = [int(n[:2]) for n in names]
    assert numbers[:2] == [0, 1] and len(set(numbers)) == len(numbers), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb["metadata"], "widget state is stored; strip it"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = "".join(code[0]["source"])
    assert "%matplotlib inline" in first and "seed_everything" in first
    assert all(c.get("outputs") is not None for c in code) and any(c["outputs"] for c in code)
    for c in code:
        assert c["execution_count"] is not None, "every code cell was executed"
        for out in c["outputs"]:
            assert out.get("name") != "stderr", (
                f"stderr output in {path.name}: {''.join(out['text'])[:200]}"
            )
            assert out["output_type"] != "error"
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert text.lstrip().startswith("# ")
    assert "Takeaways" in text and "Try it yourself" in text
    for marker in ("TODO", "FIXME", "XXX", "For the lead"):
        assert marker not in text, f"{path.name} still holds a {marker!r} note"


@pytest.mark.slow  # over 2 s (trains, redraws or starts Python)
def test_import_is_light_and_has_no_side_effects():
    code = (
        "import sys, hlviz; heavy = [m for m in ('matplotlib', 'pandas', 'transformers', 'captum', "
        "'ipywidgets', 'sklearn') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_public_api_is_documented():
    import hlviz

    for name in hlviz.__all__:
        obj = getattr(hlviz, name)
        if callable(obj) or isinstance(obj, type):
            assert (obj.__doc__ or "").strip(), f"hlviz.{name} has no docstring"


@pytest.mark.slow  # runs scripts/build_book.py (nbconvert, a kernel)
def test_book_builder_renders_an_index(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A tiny notebook"),
        nbformat.v4.new_code_cell("print(6 * 7)"),
    ]
    src = tmp_path / "00_tiny.ipynb"
    nbformat.write(nb, src)
    out = subprocess.run(
        [sys.executable, ROOT / "scripts" / "build_book.py", "--out", tmp_path / "book", src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    index = (tmp_path / "book" / "index.html").read_text()
    assert '<a href="00_tiny.html">A tiny notebook</a>' in index
    assert "42" in (tmp_path / "book" / "00_tiny.html").read_text()
    assert f"book written: {(tmp_path / 'book' / 'index.html').resolve()}" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            ROOT / "scripts" / "build_book.py",
            "--out",
            tmp_path,
            tmp_path / "nope.ipynb",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no such notebook" in bad.stderr


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
