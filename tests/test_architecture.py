"""The shape of the package, enforced: topics as subpackages, small modules, no import cycle,
no reaching into another subpackage's private names, and every documented import path works.

The import graph is read from the source: every ``import`` statement, at module level or
inside a function (so a lazy import that closes a cycle counts), except those under
``if TYPE_CHECKING:`` and one accepted kind of back-edge: a function that imports a *figure
module* (``plots.py``, ``figures.py``) of its own subpackage when it is called, as a result's
``.plot()`` does. Figure modules load matplotlib, so they are leaves loaded on demand.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

import hlviz

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hlviz"
MAX_LINES = 500
# the only plain modules at the top: the public face, errors, test helpers, and the private
# helpers every subpackage uses
TOP_LEVEL = {"__init__.py", "errors.py", "testing.py", "runtime.py", "_batches.py", "_checks.py"}
SUBPACKAGES = {
    "attribution",
    "collection",
    "datasets",
    "hooks",
    "models",
    "plotting",
    "probes",
    "sequences",
    "similarity",
    "toy",
    "transformer",
    "units",
    "widgets",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


FIGURE_MODULES = {"plots", "figures"}


def _imports(path: Path, name: str, *, lazy_figures: bool = True) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in ``path``; without
    ``lazy_figures``, imports of a sibling figure module inside a function are left out."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST, in_function: bool = False) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, inside)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                taken = [alias.name for alias in child.names]
                sibling_figures = target == package and set(taken) <= FIGURE_MODULES
                sibling_figures |= target.rpartition(".")[0] == package and (
                    target.rpartition(".")[2] in FIGURE_MODULES
                )
                if not (inside and sibling_figures and not lazy_figures):
                    found.append((target, taken))
            visit(child, inside)

    visit(tree)
    return [(t, n) for t, n in found if t == "hlviz" or t.startswith("hlviz.")]


def _resolve(target: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The modules an import loads: ``from pkg import mod`` names a module, not the package."""
    out = []
    for n in names:
        if f"{target}.{n}" in modules:
            out.append(f"{target}.{n}")
    if len(out) < len(names) or not names:
        out.append(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue  # a package's face re-exports its own modules
        for target, names in _imports(path, name, lazy_figures=False):
            for dep in _resolve(target, names, modules):
                if dep in modules and dep != name and modules[dep].name != "__init__.py":
                    graph[name].add(dep)
    return graph


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else None


def test_top_level_holds_only_the_face_and_shared_helpers():
    files = {p.name for p in PACKAGE.glob("*.py")}
    assert files <= TOP_LEVEL, (
        f"modules at the top that belong in a subpackage: {files - TOP_LEVEL}"
    )
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == SUBPACKAGES


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_over_the_line_budget(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concept (limit {MAX_LINES})"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_crosses_a_subpackage():
    modules = _modules()
    offences = []
    for name, path in modules.items():
        home = _subpackage(name)
        for target, names in _imports(path, name):
            there = _subpackage(target)
            if there is None or there == home:
                continue
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_")]
            if private_module or private_names:
                offences.append(f"{name} imports {private_names or '*'} from {target}")
    assert not offences, "\n".join(offences)


def test_top_level_dir_lists_every_public_name():
    listed = set(dir(hlviz))
    assert set(hlviz.__all__) <= listed
    for name in hlviz.__all__:
        assert getattr(hlviz, name) is not None, name


@pytest.mark.parametrize("package", sorted(SUBPACKAGES))
def test_every_subpackage_is_reachable_and_exports_what_it_lists(package):
    module = getattr(hlviz, package)
    assert module.__name__ == f"hlviz.{package}"
    for name in getattr(module, "__all__", []):
        assert hasattr(module, name), f"hlviz.{package}.__all__ lists {name!r} but has no such name"


def test_result_types_of_public_verbs_are_exported():
    for verb, result in {
        "probe_layers": "ProbeReport",
        "tcav": "TCAVReport",
        "sanity_check": "SanityReport",
        "attribute": "Attribution",
        "collect": "ActivationStore",
        "estimate": "Estimate",
        "logit_lens": "LogitLens",
        "activation_patching": "PatchingResult",
        "ablate_heads": "HeadAblation",
        "record": "Recording",
        "mdl_layers": "MDLReport",
        "top_patches": "TopPatches",
        "cka_matrix": "CKAReport",
    }.items():
        assert verb in hlviz.__all__ and result in hlviz.__all__, (verb, result)


def _documented_imports() -> set[str]:
    """Every hlviz module path that the README, the notebooks and the scripts import."""
    texts = [(ROOT / "README.md").read_text()]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    texts += [p.read_text() for p in sorted((ROOT / "scripts").glob("*.py"))]
    paths: set[str] = set()
    for text in texts:
        for m in re.finditer(r"^\s*from (hlviz[\w.]*) import ([\w, ]+)", text, re.M):
            paths |= {f"{m.group(1)}:{n.strip().split(' as ')[0]}" for n in m.group(2).split(",")}
        for m in re.finditer(r"^\s*import (hlviz[\w.]*)", text, re.M):
            paths.add(m.group(1))
        for m in re.finditer(r"(?<![\w.])hlviz\.([A-Za-z_][\w.]*[A-Za-z_0-9])", text):
            paths.add("attr:" + m.group(1))
    return paths


def _attribute(obj, dotted: str, name: str):
    """``obj.name``, or the submodule ``dotted.name`` (as ``from dotted import name`` finds it)."""
    if hasattr(obj, name):
        return getattr(obj, name)
    try:
        return importlib.import_module(f"{dotted}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"{dotted} has no attribute or submodule {name!r}") from None


def test_every_documented_import_path_works():
    broken = []
    for path in sorted(_documented_imports()):
        try:
            if path.startswith("attr:"):
                obj, dotted = hlviz, "hlviz"
                for part in path[5:].split("."):
                    if part in {"py", "md", "ipynb"}:
                        break
                    obj, dotted = _attribute(obj, dotted, part), f"{dotted}.{part}"
            elif ":" in path:
                module, name = path.split(":")
                _attribute(importlib.import_module(module), module, name)
            else:
                importlib.import_module(path)
        except (AttributeError, ImportError) as error:
            broken.append(f"{path}: {error}")
    assert not broken, "\n".join(broken)
