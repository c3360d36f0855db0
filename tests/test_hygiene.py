"""Hook hygiene matrix: every API of the registry (``tests/hook_apis.py``) run normally, with a
bad argument, and on a model that raises mid-forward; the contexts also nested and with an
error in the user's block. After each, no hlviz hook is left and the user's own hooks are still
there and still fire. A last test fails when a public function that can reach a
``register_*hook`` call in ``hlviz/`` is missing from the registry."""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import HlvizError

from .hook_apis import BY_ID, EXEMPT, REGISTRY, SUBJECTS, exploding
from .zoo import Blocks

HLVIZ = Path(hlviz.__file__).resolve().parent


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@contextlib.contextmanager
def user_hooks(subject):
    """A user's forward hook on ``subject.user`` and pre-hook on the root; afterwards no hlviz
    hook is left, the user's hooks are still there and the forward hook still fires."""
    fired = []
    model = subject.model
    handles = [
        model.get_submodule(subject.user).register_forward_hook(lambda m, a, o: fired.append(1)),
        model.register_forward_pre_hook(lambda m, a: None),
    ]
    try:
        yield
        hlviz.testing.assert_no_hooks(model, ignore=handles)
        before = len(fired)
        with torch.no_grad():
            model(subject.x)
        assert len(fired) == before + 1, "the user's own hook no longer fires"
    finally:
        for handle in handles:
            handle.remove()


def _params(cases):
    """pytest params for (entry, ...) tuples, marked slow where the entry is."""
    return [
        pytest.param(*case, id="-".join([case[0].id, *map(str, case[1:])]),
                     marks=[pytest.mark.slow] if case[0].slow else [])
        for case in cases
    ]  # fmt: skip


ENTRIES = _params([(e,) for e in REGISTRY])


@pytest.mark.parametrize("entry", ENTRIES)
def test_normal_use(entry):
    subject = SUBJECTS[entry.subject]()
    with user_hooks(subject):
        entry.run(subject)


@pytest.mark.parametrize("entry", ENTRIES)
def test_bad_argument(entry):
    subject = SUBJECTS[entry.subject]()
    with user_hooks(subject), pytest.raises(entry.bad_error):
        entry.bad(subject)


CRASHES = _params([(e, k) for e in REGISTRY for k in e.raise_from])


@pytest.mark.parametrize(("entry", "k"), CRASHES)
def test_model_raises_mid_forward(entry, k):
    subject = SUBJECTS[entry.subject]()
    with user_hooks(subject):
        with exploding(subject, k) as raised, contextlib.suppress(Exception):
            entry.run(subject)  # raises, or shows the error (widgets keep it in last_error)
        assert raised, f"the model's forward was not called {k} time(s)"


CONTEXTS = ["record", "record_grads", "record_stop", "edit", "ablating_heads"]
# stop=True and grads=True cannot share one forward pass (a documented ValueError)
NESTED = [(o, i) for o in CONTEXTS for i in CONTEXTS if {o, i} != {"record_grads", "record_stop"}]
_MAKE = {
    "record": lambda m, layers: hlviz.record(m, layers),
    "record_grads": lambda m, layers: hlviz.record(m, layers, grads=True),
    "record_stop": lambda m, layers: hlviz.record(m, layers, stop=True),
    "edit": lambda m, layers: hlviz.edit(
        m, {tuple(layers) if isinstance(layers, list) else layers: hlviz.ablate(units=[0])}
    ),
    "ablating_heads": lambda m, layers: hlviz.transformer.ablating_heads(
        m, {tuple(layers) if isinstance(layers, list) else layers: [0]}, n_heads=2
    ),
}


@pytest.mark.slow  # 24 pairs; the single contexts run in the fast matrix
@pytest.mark.parametrize(("outer", "inner"), NESTED)
def test_contexts_nested(outer, inner):
    subject = SUBJECTS["cnn"]()
    model, grads = subject.model, "record_grads" in (outer, inner)
    with user_hooks(subject):
        with _MAKE[outer](model, "features.*"):
            with _MAKE[inner](model, ["features.2", "classifier"]):
                out = model(subject.x.clone().requires_grad_(grads))
                if grads:
                    out.sum().backward()
            assert [h for h in hlviz.testing.list_hooks(model) if h["hlviz"]], (
                "the outer context's hooks must still be there"
            )


@pytest.mark.parametrize("api", CONTEXTS)
def test_user_code_raises_inside_the_block(api):
    subject = SUBJECTS["cnn"]()
    with user_hooks(subject):
        with pytest.raises(KeyError, match="user error"), _MAKE[api](subject.model, "classifier"):
            raise KeyError("user error")


def test_an_error_inside_an_hlviz_hook_leaves_nothing():
    subject = SUBJECTS["cnn"]()
    model = subject.model
    with user_hooks(subject):
        with pytest.raises(HlvizError), hlviz.record(model, "features.0", select="missing"):
            model(subject.x)
        with pytest.raises(HlvizError), hlviz.edit(model, {"classifier": lambda o: o[:, :1]}):
            model(subject.x)


def test_grad_cam_channel_dim_hook_is_removed_when_the_model_raises():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 6)
            self.head = nn.Linear(6, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            h = self.proj(x)
            if self.calls == 2:
                raise RuntimeError("boom inside forward")
            return self.head(h.mean(1))

    model = Seq()
    user = model.proj.register_forward_hook(lambda *a: None)
    try:
        with pytest.raises(RuntimeError, match="boom inside forward"):
            hlviz.attribute(model, torch.randn(2, 5, 4), target=0, method="grad_cam",
                            layer="proj", channel_dim=-1)  # fmt: skip
        hlviz.testing.assert_no_hooks(model, ignore=[user])
        assert len(model.proj._forward_hooks) == 1
    finally:
        user.remove()


def test_fastpath_flag_is_restored_after_an_error():
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    before = torch.backends.mha.get_fastpath_enabled()
    with contextlib.suppress(RuntimeError, AssertionError), hlviz.record(model, "layers.0"):
        model(torch.zeros(1, 3, 5))  # wrong width raises inside the forward
    assert torch.backends.mha.get_fastpath_enabled() == before
    hlviz.testing.assert_no_hooks(model)


def test_assert_no_hooks_reports_what_is_left():
    model = Blocks()
    handle = model.features[2].register_forward_hook(lambda *a: None)
    try:
        with pytest.raises(
            AssertionError, match=r"1 hook\(s\) left on Blocks:\n  features.2: forward hook"
        ):
            hlviz.testing.assert_no_hooks(model)
        hlviz.testing.assert_no_hooks(model, hlviz_only=True)
        rec = hlviz.record(model, "classifier")
        with rec, pytest.raises(AssertionError, match="hlviz:"):
            hlviz.testing.assert_no_hooks(model, ignore=[handle])
    finally:
        handle.remove()


# --- the registry is complete -------------------------------------------------------------

REGISTERS = (
    "register_forward_hook",
    "register_forward_pre_hook",
    "register_full_backward_hook",
    "register_full_backward_pre_hook",
    "register_backward_hook",
)


def _modules() -> dict[str, tuple[ast.Module, bool]]:
    found = {}
    for path in sorted(HLVIZ.rglob("*.py")):
        parts = path.relative_to(HLVIZ.parent).with_suffix("").parts
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (ast.parse(path.read_text()), package)
    return found


class _Graph:
    """Functions and methods of hlviz, the hlviz definitions each one names (through the
    module's imports, ``module.attr`` and ``self.method``), and the hook sites: the functions
    whose body calls ``register_*hook`` (``hlviz.testing`` only reads hooks)."""

    def __init__(self) -> None:
        self.modules = _modules()
        self.names: dict[str, dict[str, tuple]] = {}
        self.defs: dict[tuple[str, str], tuple[ast.AST, str | None]] = {}
        for mod, (tree, _) in self.modules.items():
            table = self.names.setdefault(mod, {})
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.ClassDef):
                    table[node.name] = ("def", mod, node.name)
                    self.defs[(mod, node.name)] = (node, None)
                    for m in getattr(node, "body", []) if isinstance(node, ast.ClassDef) else []:
                        if isinstance(m, ast.FunctionDef):
                            self.defs[(mod, f"{node.name}.{m.name}")] = (m, node.name)
                elif isinstance(node, ast.ImportFrom):
                    table.update(self._imports(mod, node))
        self.sites = {
            key
            for key, (node, _) in self.defs.items()
            if key[0] != "hlviz.testing"
            and isinstance(node, ast.FunctionDef)
            and any(
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and (n.func.attr in REGISTERS or n.func.attr == "register_hook")
                for n in ast.walk(node)
            )
        }
        self._memo: dict[tuple[str, str], bool] = {}

    def _imports(self, mod: str, node: ast.ImportFrom) -> dict[str, tuple]:
        base = mod.split(".")
        if node.level:
            base = base if self.modules[mod][1] else base[:-1]
            base = base[: len(base) - node.level + 1]
        else:
            base = []
        source = ".".join(base + ([node.module] if node.module else []))
        out = {}
        for alias in node.names:
            full = f"{source}.{alias.name}"
            out[alias.asname or alias.name] = (
                ("mod", full) if full in self.modules else ("from", source, alias.name)
            )
        return out

    def lookup(self, table: dict, name: str, depth: int = 0) -> tuple | None:
        entry = table.get(name)
        while entry is not None and entry[0] == "from" and depth < 20:
            entry, depth = self.names.get(entry[1], {}).get(entry[2]), depth + 1
        return entry

    def _bases(self, key: tuple[str, str]) -> set[tuple[str, str]]:
        node, _ = self.defs[key]
        out = set()
        for base in getattr(node, "bases", []):
            if isinstance(base, ast.Name):
                entry = self.lookup(self.names[key[0]], base.id)
                if entry and entry[0] == "def" and (entry[1], entry[2]) in self.defs:
                    out |= {(entry[1], entry[2])} | self._bases((entry[1], entry[2]))
        return out

    def callees(self, key: tuple[str, str]) -> set[tuple[str, str]]:
        mod, qual = key
        node, cls = self.defs[key]
        if isinstance(node, ast.ClassDef):
            methods = {
                (mod, f"{qual}.{m.name}") for m in node.body if isinstance(m, ast.FunctionDef)
            }
            return methods | self._bases(key)
        local = dict(self.names[mod])
        for n in ast.walk(node):
            if isinstance(n, ast.ImportFrom):
                local.update(self._imports(mod, n))
        classes = [(mod, cls), *sorted(self._bases((mod, cls)))] if cls else []
        out = set()
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                entry = self.lookup(local, n.id)
                if entry and entry[0] == "def":
                    out.add((entry[1], entry[2]))
            elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
                if n.value.id in ("self", "cls"):
                    out |= {(m, f"{c}.{n.attr}") for m, c in classes} & self.defs.keys()
                    continue
                entry = self.lookup(local, n.value.id)
                if entry and entry[0] == "mod":
                    target = self.lookup(self.names.get(entry[1], {}), n.attr)
                    if target and target[0] == "def":
                        out.add((target[1], target[2]))
        return out & self.defs.keys()

    def hooks(self, key: tuple[str, str], stack: frozenset = frozenset()) -> bool:
        if key in self._memo:
            return self._memo[key]
        if key in stack:
            return False
        found = key in self.sites or any(self.hooks(k, stack | {key}) for k in self.callees(key))
        if not stack:
            self._memo[key] = found
        return found


def _public() -> dict[tuple[str, str], list[str]]:
    """Every public callable of hlviz and its subpackages: definition -> public paths."""
    found: dict[tuple[str, str], list[str]] = {}
    for sub in ("", "hooks", *hlviz._LAZY_SUBPACKAGES):
        module = importlib.import_module("hlviz" + (f".{sub}" if sub else ""))
        prefix = "hlviz" + (f".{sub}" if sub else "")
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and getattr(obj, "__module__", "").startswith("hlviz."):
                key = (obj.__module__, obj.__qualname__)
                found.setdefault(key, []).append(f"{prefix}.{name}")
    return found


def _definition(path: str) -> tuple[str, str]:
    module, _, name = path.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    return obj.__module__, obj.__qualname__


def test_every_public_api_that_registers_hooks_is_in_the_registry():
    graph = _Graph()
    assert len(graph.sites) >= 5, f"the scan found too few hook sites: {sorted(graph.sites)}"
    public = _public()
    unknown = sorted(min(paths) for key, paths in public.items() if key not in graph.defs)
    assert not unknown, f"public callables the scan cannot see (not a def or class): {unknown}"
    hooking = {
        key: paths for key, paths in public.items() if key in graph.defs and graph.hooks(key)
    }
    covered = {_definition(e.api) for e in REGISTRY} | {_definition(p) for p in EXEMPT}
    missing = {min(paths): key for key, paths in hooking.items() if key not in covered}
    assert not missing, (
        f"public APIs that register hooks but are not in tests/hook_apis.py: {sorted(missing)}; "
        "add a HookAPI entry (normal run and a bad argument), or to EXEMPT with the reason"
    )
    stale = {p for p in EXEMPT if _definition(p) not in hooking}
    assert not stale, f"EXEMPT names APIs that no longer register hooks: {sorted(stale)}"


@pytest.mark.slow  # runs the whole registry once more
def test_every_hook_site_is_reached_by_a_registry_entry(monkeypatch):
    """Running the registry registers hooks from every ``register_*hook`` site in hlviz, and
    every API of the registry registers hooks in at least one of its entries (hlviz's own,
    or Captum's for a method it runs)."""
    graph = _Graph()
    reached: dict[str, set] = {}
    current = [""]

    def spy(original):
        def wrapper(*args, **kwargs):
            frame = sys._getframe(1)
            path = Path(frame.f_code.co_filename).resolve()
            reached.setdefault(current[0], set()).add(("<any>", ""))  # Captum's hooks count too
            if path.is_relative_to(HLVIZ):
                parts = path.relative_to(HLVIZ.parent).with_suffix("").parts
                mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                qual = frame.f_code.co_qualname.split(".<locals>")[0]
                reached.setdefault(current[0], set()).add((mod, qual))
            return original(*args, **kwargs)

        return wrapper

    for name in REGISTERS:
        monkeypatch.setattr(nn.Module, name, spy(getattr(nn.Module, name)))
    monkeypatch.setattr(torch.Tensor, "register_hook", spy(torch.Tensor.register_hook))
    for entry in REGISTRY:
        current[0] = entry.id
        entry.run(SUBJECTS[entry.subject]())
    by_api: dict[str, set] = {}
    for entry in REGISTRY:  # gradient-only attribution methods hook nothing: the API does
        by_api.setdefault(entry.api, set()).update(reached.get(entry.id, ()))
    silent = sorted(api for api, found in by_api.items() if not found)
    assert not silent, f"registry APIs that register no hook in any entry: {silent}"
    seen = set().union(*reached.values()) - {("<any>", "")}
    assert graph.sites <= seen, f"hook sites no entry reaches: {sorted(graph.sites - seen)}"


def test_the_registry_resolves():
    for entry in REGISTRY:
        assert _definition(entry.api), entry.id
    assert BY_ID["record"].api == "hlviz.record"
