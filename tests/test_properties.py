"""Property-based tests: random nested module trees and layer specs.

record() must equal hand-written reference hooks on any tree; glob, regex and index
specs must agree with independent reference matchers; no hook may remain."""

from __future__ import annotations

import re
from collections import OrderedDict
from fnmatch import fnmatchcase

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import hlviz

WIDTH = 3
SEGMENT = st.sampled_from(["a", "b", "blk", "enc", "x1", "conv", "mlp"])


@st.composite
def trees(draw, depth=0):
    """A random runnable module tree: nested Sequentials of width-preserving leaves."""
    if depth >= 3 or (draw(st.booleans()) and depth > 0):
        kind = draw(st.sampled_from(["linear", "tanh", "relu_inplace", "identity"]))
        return {
            "linear": lambda: nn.Linear(WIDTH, WIDTH),
            "tanh": nn.Tanh,
            "relu_inplace": lambda: nn.ReLU(inplace=True),
            "identity": nn.Identity,
        }[kind]()
    n = draw(st.integers(1, 3))
    children = [draw(trees(depth=depth + 1)) for _ in range(n)]
    if draw(st.booleans()):
        names = draw(st.lists(SEGMENT, min_size=n, max_size=n, unique=True))
        return nn.Sequential(OrderedDict(zip(names, children)))
    return nn.Sequential(*children)


def ref_glob(pattern: str, name: str) -> bool:
    def match(ps, ns):
        if not ps:
            return not ns
        if ps[0] == "**":
            return any(match(ps[1:], ns[k:]) for k in range(len(ns) + 1))
        return bool(ns) and fnmatchcase(ns[0], ps[0]) and match(ps[1:], ns[1:])

    return match(pattern.split("."), name.split("."))


@st.composite
def globs(draw, names):
    segs = draw(st.sampled_from(names)).split(".")
    out = []
    for seg in segs:
        choice = draw(
            st.sampled_from(["keep", "keep", "star", "question", "double", "prefix", "class"])
        )
        out.append(
            {
                "keep": seg,
                "star": "*",
                "question": "?" * len(seg),
                "double": "**",
                "prefix": seg[:1] + "*",
                "class": f"[{seg[0]}0]{seg[1:]}",
            }[choice]
        )
    return ".".join(out)


def reference_record(model, names, x):
    modules = dict(model.named_modules())
    out, handles = {}, []

    def make(n):
        def hook(module, args, output):
            out.setdefault(n, []).append(output.detach().clone())

        return hook

    for n in names:
        handles.append(modules[n].register_forward_hook(make(n)))
    try:
        with torch.no_grad():
            final = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, final


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_record_equals_reference_hooks_on_random_trees(data):
    torch.manual_seed(0)
    model = data.draw(trees())
    names = hlviz.layer_names(model)
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    x = torch.randn(2, WIDTH)
    ref, final = reference_record(model, chosen, x.clone())  # in-place ReLUs may change inputs
    with torch.no_grad(), hlviz.record(model, chosen) as rec:
        out = model(x.clone())
    torch.testing.assert_close(out, final)
    assert list(rec) == [n for n in chosen if n in ref]
    for n in ref:
        assert len(rec.calls(n)) == len(ref[n])
        for got, want in zip(rec.calls(n), ref[n]):
            torch.testing.assert_close(got, want)
    hlviz.testing.assert_no_hooks(model)


@SETTINGS
@given(data=st.data())
def test_glob_specs_agree_with_a_reference_matcher(data):
    model = data.draw(trees())
    names = hlviz.layer_names(model)
    pattern = data.draw(globs(names))
    expected = [n for n in names if ref_glob(pattern, n)]
    if not set("*?[") & set(pattern):
        assert hlviz.resolve(model, pattern) == [pattern]
    else:
        assert expected, "a glob built from a name matches at least that name"
        assert hlviz.resolve(model, pattern) == expected


@SETTINGS
@given(data=st.data())
def test_regex_and_index_specs(data):
    model = data.draw(trees())
    names = hlviz.layer_names(model)
    name = data.draw(st.sampled_from(names))
    prefix = re.escape(name.split(".")[0])
    assert hlviz.resolve(model, f"re:{prefix}(\\..*)?") == [
        n for n in names if re.fullmatch(f"{prefix}(\\..*)?", n)
    ]
    i = data.draw(st.integers(-len(names), len(names) - 1))
    assert hlviz.resolve(model, i) == [names[i]]
    assert hlviz.resolve(model, [i, name]) == list(dict.fromkeys([names[i], name]))
    assert hlviz.resolve(model, type(dict(model.named_modules())[name])) == [
        n
        for n, m in model.named_modules()
        if n and isinstance(m, type(dict(model.named_modules())[name]))
    ]
