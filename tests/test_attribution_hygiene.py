"""Hook hygiene for attribution: every method run normally, with bad arguments, and on a
model that raises mid-forward (in hlviz's probe and inside Captum's call); afterwards no
hook is left and the user's own hook is still there and still fires."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import ConvergenceWarning, HlvizError

from .zoo import Blocks, check_user_hook_survives

METHODS = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"nt_samples": 2},
    "occlusion": {"window": (1, 4, 4), "strides": (1, 4, 4)},
    "grad_cam": {"layer": "features.4"},
    "grad_cam_channel_dim": {"layer": "features.4", "channel_dim": 1},
    "layer_conductance": {"layer": "features.2", "n_steps": 4},
    "neuron_conductance": {"layer": "features.2", "neuron": (0, 1, 1), "n_steps": 4},
    "layer_integrated_gradients": {"layer": "features.4", "n_steps": 4},
}
BAD = {
    "unknown layer": {"layer": "features.9"},
    "bad target": {"target": 7},
}


class RaisesOnCall(Blocks):
    """Blocks whose forward raises on its ``k``-th call (1: hlviz's probe; 2: inside Captum)."""

    def __init__(self, k: int):
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, x):
        self.calls += 1
        h = self.features(x)
        if self.calls >= self.k:
            raise RuntimeError("boom inside forward")
        return self.classifier(self.pool(h).flatten(1))


def _hooked(model):
    fired = []
    handles = [
        model.features[2].register_forward_hook(lambda m, a, o: fired.append(1)),
        model.register_forward_pre_hook(lambda m, a: None),
    ]
    return handles, fired


_check = check_user_hook_survives


def _run(model, name, **override):
    kwargs = {"target": 1, **METHODS[name], **override}
    if name == "grad_cam_channel_dim":
        kwargs["method"] = "grad_cam"
    else:
        kwargs["method"] = name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return hlviz.attribute(model, torch.rand(2, 1, 8, 8) + 0.1, **kwargs)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_attribution_normal_use_leaves_no_hooks(name):
    model = Blocks().eval()
    handles, fired = _hooked(model)
    try:
        _run(model, name)
        _check(model, handles, fired)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_attribution_bad_arguments_leave_no_hooks(name, bad):
    model = Blocks().eval()
    handles, fired = _hooked(model)
    override = dict(BAD[bad])
    if "layer" in override and "layer" not in METHODS[name]:
        override = {"target": 7}
    try:
        with pytest.raises(HlvizError):
            _run(model, name, **override)
        _check(model, handles, fired)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_attribution_model_raising_mid_forward_leaves_no_hooks(name, k):
    model = RaisesOnCall(k).eval()
    handles, fired = _hooked(model)
    try:
        with pytest.raises(RuntimeError, match="boom inside forward"):
            _run(model, name)
        assert model.calls >= k
        model.k = 10**9
        _check(model, handles, fired)
    finally:
        for h in handles:
            h.remove()


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


def test_sanity_check_and_tcav_leave_no_hooks():
    model = Blocks().eval()
    handles, fired = _hooked(model)
    try:
        hlviz.sanity_check(model, torch.rand(2, 1, 8, 8) + 0.1, target=0,
                           methods={"grad_cam": {"layer": "features.4"}}, layers="classifier")  # fmt: skip
        torch.manual_seed(0)
        randoms = [torch.rand(6, 1, 8, 8) for _ in range(3)]
        hlviz.tcav(model, torch.rand(4, 1, 8, 8), target=0, layers="features.4",
                   concepts={"bright": torch.rand(6, 1, 8, 8) + 1}, random_concepts=randoms)  # fmt: skip
        with pytest.raises(HlvizError):
            hlviz.tcav(model, torch.rand(4, 1, 8, 8), target=9, layers="features.4",
                       concepts={"bright": torch.rand(6, 1, 8, 8)}, random_concepts=randoms)  # fmt: skip
        _check(model, handles, fired)
    finally:
        for h in handles:
            h.remove()
