"""Hook hygiene matrix: every API that registers hooks, run normally, with bad arguments,
on a model that raises mid-forward, nested, and with a user's own hook that must survive.
After each, no hlviz hook is left and the user's hook is still there and still fires."""

from __future__ import annotations

import contextlib

import pytest
import torch

import hlviz
from hlviz.errors import HlvizError

from .zoo import Blocks, Exploding, check_user_hook_survives


def _record(model, layers, **kw):
    return hlviz.record(model, layers, **kw)


def _record_grads(model, layers, **kw):
    return hlviz.record(model, layers, grads=True, **kw)


def _record_stop(model, layers, **kw):
    return hlviz.record(model, layers, stop=True, **kw)


def _edit(model, layers, **kw):
    key = tuple(layers) if isinstance(layers, list) else layers
    return hlviz.edit(model, {key: hlviz.ablate(units=[0])}, **kw)


def _ablating_heads(model, layers, **kw):
    # channels (axis 1 of a 4-D output) play the heads; a linear layer's input splits into 2;
    # the matrix's bad option (select=) becomes a bad value=
    key = tuple(layers) if isinstance(layers, list) else layers
    bad = {"value": "median"} if "select" in kw else {}
    return hlviz.transformer.heads.ablating_heads(model, {key: [0]}, n_heads=2, **bad)


CONTEXTS = {
    "ablating_heads": _ablating_heads,
    "record": _record,
    "record_grads": _record_grads,
    "record_stop": _record_stop,
    "edit": _edit,
}
ONE_SHOT = {
    "activations": lambda model, layers, x: hlviz.activations(model, x, layers),
    "list_layers": lambda model, layers, x: hlviz.list_layers(model, x),
    "collect": lambda model, layers, x: hlviz.collect(model, x, layers, progress=False),
    "activation_patching": lambda model, layers, x: hlviz.activation_patching(
        model, x, torch.zeros_like(x), layers, metric=lambda out: out[:, 0], positions="all"
    ),
    # channels (axis 1 of a 4-D output) play the heads
    "ablate_heads": lambda model, layers, x: hlviz.ablate_heads(
        model, x, layers, metric=lambda out: out[:, 0]
    ),
}


@pytest.fixture
def user_hook_model():
    model = Blocks()
    fired = []
    handle = model.features[0].register_forward_hook(lambda m, a, o: fired.append(1))
    pre = model.register_forward_pre_hook(lambda m, a: None)
    yield model, [handle, pre], fired
    handle.remove()
    pre.remove()


_check = check_user_hook_survives


@pytest.mark.parametrize("api", sorted(CONTEXTS))
def test_context_normal_use(api, user_hook_model, images):
    model, handles, fired = user_hook_model
    with CONTEXTS[api](model, "features.*"):
        out = model(images.requires_grad_(api == "record_grads"))
        if api == "record_grads":
            out.sum().backward()
    _check(model, handles, fired)


@pytest.mark.parametrize("api", sorted(CONTEXTS))
@pytest.mark.parametrize("bad", ["unknown layer", "empty glob", "bad option"])
def test_context_bad_arguments(api, bad, user_hook_model):
    model, handles, fired = user_hook_model
    layers = {"unknown layer": "features.9", "empty glob": "nothing.*"}.get(bad, "features.0")
    options = {"select": 5} if bad == "bad option" else {}
    with pytest.raises(HlvizError), CONTEXTS[api](model, layers, **options):
        model(torch.zeros(1, 1, 8, 8))
    _check(model, handles, fired)


@pytest.mark.parametrize("api", sorted(CONTEXTS))
def test_context_model_raises_mid_forward(api):
    model = Exploding()
    user = model.a.register_forward_hook(lambda *a: None)
    try:
        with (
            pytest.raises(RuntimeError, match="boom inside forward"),
            CONTEXTS[api](model, ["a", "b"]),
        ):
            model(torch.zeros(1, 4, requires_grad=True))
        hlviz.testing.assert_no_hooks(model, ignore=[user])
        assert len(model.a._forward_hooks) == 1
    finally:
        user.remove()


@pytest.mark.parametrize("api", sorted(CONTEXTS))
def test_context_user_code_raises_inside_the_block(api, user_hook_model, images):
    model, handles, fired = user_hook_model
    with pytest.raises(KeyError, match="user error"), CONTEXTS[api](model, "classifier"):
        raise KeyError("user error")
    _check(model, handles, fired)


# stop=True and grads=True cannot share one forward pass (a documented ValueError)
NESTED = [
    (o, i)
    for o in sorted(CONTEXTS)
    for i in sorted(CONTEXTS)
    if {o, i} != {"record_grads", "record_stop"}
]


@pytest.mark.parametrize(("outer", "inner"), NESTED)
def test_contexts_nested(outer, inner, user_hook_model, images):
    model, handles, fired = user_hook_model
    grads = "record_grads" in (outer, inner)
    with CONTEXTS[outer](model, "features.*"):
        with CONTEXTS[inner](model, ["features.2", "classifier"]):
            out = model(images.requires_grad_(grads))
            if grads:
                out.sum().backward()
        inner_left = [h for h in hlviz.testing.list_hooks(model) if h["hlviz"]]
        assert inner_left, "the outer context's hooks must still be there"
    _check(model, handles, fired)


@pytest.mark.parametrize("api", sorted(ONE_SHOT))
@pytest.mark.parametrize("case", ["normal", "bad layer", "raises"])
def test_one_shot_apis(api, case, user_hook_model, images):
    model, handles, fired = user_hook_model
    if case == "normal":
        ONE_SHOT[api](model, "features.*", images)
    elif case == "bad layer":
        if api == "list_layers":
            with pytest.raises(hlviz.errors.NotAModuleError):
                hlviz.list_layers(images)
        else:
            with pytest.raises(HlvizError):
                ONE_SHOT[api](model, "features.99", images)
    else:
        with pytest.raises(RuntimeError):
            ONE_SHOT[api](model, "features.*", torch.zeros(1, 5, 8, 8))  # wrong channel count
    _check(model, handles, fired)


def test_an_error_inside_an_hlviz_hook_leaves_nothing(user_hook_model, images):
    model, handles, fired = user_hook_model
    with pytest.raises(HlvizError), hlviz.record(model, "features.0", select="missing"):
        model(images)
    with pytest.raises(HlvizError), hlviz.edit(model, {"classifier": lambda o: o[:, :1]}):
        model(images)
    _check(model, handles, fired)


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
