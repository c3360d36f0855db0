"""Layer naming and resolution: names, globs, regexes, types, indices, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hlviz
from hlviz.errors import EmptySelectionError, LayerNotFoundError, LayerSpecError, NotAModuleError

from .zoo import Blocks


def test_layer_names_in_definition_order(cnn):
    assert hlviz.layer_names(cnn) == [
        "features",
        *[f"features.{i}" for i in range(6)],
        "pool",
        "classifier",
    ]


def test_exact_names_and_order_of_specs(cnn):
    assert hlviz.resolve(cnn, "features.2") == ["features.2"]
    assert hlviz.resolve(cnn, ["classifier", "features.0"]) == ["classifier", "features.0"]
    assert hlviz.resolve(cnn, ["features.0", "features.0", "re:features\\.0"]) == ["features.0"]


def test_glob_star_stays_within_a_segment(cnn):
    assert hlviz.resolve(cnn, "features.*") == [f"features.{i}" for i in range(6)]
    assert hlviz.resolve(cnn, "*") == ["features", "pool", "classifier"]
    assert hlviz.resolve(cnn, "features.[02]") == ["features.0", "features.2"]
    assert hlviz.resolve(cnn, "features.?") == [f"features.{i}" for i in range(6)]


def test_double_star_crosses_segments():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2))))
    assert hlviz.resolve(model, "**") == ["0", "0.0", "0.1", "0.1.0"]
    assert hlviz.resolve(model, "0.**") == ["0", "0.0", "0.1", "0.1.0"]
    assert hlviz.resolve(model, "**.0") == ["0", "0.0", "0.1.0"]
    assert hlviz.resolve(model, "0.**.0") == ["0.0", "0.1.0"]


def test_regex_types_indices_and_module_objects(cnn):
    assert hlviz.resolve(cnn, "re:features\\.[13]") == ["features.1", "features.3"]
    assert hlviz.resolve(cnn, nn.Conv2d) == ["features.0", "features.2", "features.4"]
    assert hlviz.resolve(cnn, (nn.Linear, nn.AdaptiveAvgPool2d)) == ["pool", "classifier"]
    assert hlviz.resolve(cnn, -1) == ["classifier"]
    assert hlviz.resolve(cnn, 1) == ["features.0"]
    assert hlviz.resolve(cnn, cnn.features[2]) == ["features.2"]


def test_wrapper_prefixes_are_accepted(cnn):
    wrapped = nn.DataParallel(cnn)
    assert hlviz.unwrap(wrapped) is cnn
    assert hlviz.resolve(wrapped, "module.features.0") == ["features.0"]
    assert hlviz.resolve(cnn, "_orig_mod.classifier") == ["classifier"]
    assert hlviz.resolve(cnn, "module.features.*") == [f"features.{i}" for i in range(6)]


def test_torch_compile_wrapper_is_unwrapped_and_recorded(cnn, images):
    compiled = torch.compile(cnn, backend="eager")
    assert hlviz.unwrap(compiled) is cnn
    with hlviz.record(compiled, "_orig_mod.features.0") as rec:
        compiled(images)
    assert torch.allclose(rec["features.0"], cnn.features[0](images))
    hlviz.testing.assert_no_hooks(cnn)


def test_alias_of_a_shared_module_resolves_to_its_first_name():
    lin = nn.Linear(2, 2)
    model = nn.ModuleDict({"a": lin, "b": lin})
    assert hlviz.layer_names(model) == ["a"]
    assert hlviz.resolve(model, "b") == ["a"]


def test_unknown_name_suggests_close_names(cnn):
    with pytest.raises(LayerNotFoundError) as err:
        hlviz.resolve(cnn, "feature.3")
    msg = str(err.value)
    assert "no layer 'feature.3' in Blocks" in msg
    assert "did you mean 'features.3'" in msg and "?. " not in msg
    assert "hlviz.list_layers(model)" in msg
    assert isinstance(err.value, KeyError)


def test_wrong_place_suggests_same_last_segment():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential())
    model.encoder.add_module("attention_output", nn.Linear(2, 2))
    with pytest.raises(LayerNotFoundError, match="did you mean 'encoder.attention_output'"):
        hlviz.resolve(model, "attention_output")


def test_empty_selections_raise(cnn):
    with pytest.raises(
        EmptySelectionError, match=r"glob 'zzz\.\*' matched no layer of Blocks .*segments\)\. See"
    ):
        hlviz.resolve(cnn, "zzz.*")
    with pytest.raises(EmptySelectionError, match=r"glob 'feat\.\*' matched no layer of Blocks"):
        hlviz.resolve(cnn, "feat.*")
    with pytest.raises(EmptySelectionError, match="must match the whole name"):
        hlviz.resolve(cnn, "re:feat")
    with pytest.raises(EmptySelectionError, match="no module of type LSTM; its module types are: "):
        hlviz.resolve(cnn, nn.LSTM)
    with pytest.raises(EmptySelectionError, match="the list of layers is empty"):
        hlviz.resolve(cnn, [])


def test_bad_indices_and_spec_types(cnn):
    with pytest.raises(
        LayerNotFoundError,
        match=r"index 9 is out of range: Blocks has 9 layers \(valid indices -9..8\)",
    ):
        hlviz.resolve(cnn, 9)
    with pytest.raises(LayerSpecError, match="cannot be a float"):
        hlviz.resolve(cnn, 1.5)
    with pytest.raises(LayerSpecError, match="cannot be None"):
        hlviz.resolve(cnn, None)
    with pytest.raises(LayerSpecError, match="invalid regular expression"):
        hlviz.resolve(cnn, "re:(")
    with pytest.raises(LayerSpecError, match="the model itself"):
        hlviz.resolve(cnn, cnn)
    with pytest.raises(LayerNotFoundError, match="not a submodule of Blocks"):
        hlviz.resolve(cnn, nn.Linear(2, 2))
    with pytest.raises(LayerSpecError, match="nested lists"):
        hlviz.resolve(cnn, [["features.0"]])


def test_not_a_module():
    with pytest.raises(NotAModuleError, match="model must be a torch.nn.Module, got Tensor"):
        hlviz.resolve(torch.zeros(2), "0")
    with pytest.raises(NotAModuleError, match="a plain function has no layers"):
        hlviz.list_layers(lambda x: x)


def test_list_layers_table_with_shapes(cnn, images):
    table = hlviz.list_layers(cnn, images)
    assert list(table.columns) == ["name", "type", "depth", "params", "leaf", "output_shape"]
    row = table.set_index("name").loc["features.0"]
    assert row["type"] == "Conv2d" and row["params"] == 4 * 9 + 4
    assert row["output_shape"] == "(2, 4, 8, 8)"
    assert table.set_index("name").loc["features", "params"] == sum(
        p.numel() for p in cnn.features.parameters()
    )
    assert table.set_index("name").loc["classifier", "output_shape"] == "(2, 3)"
    hlviz.testing.assert_no_hooks(cnn)
    leaves = hlviz.list_layers(cnn, leaves_only=True)
    assert "features" not in set(leaves["name"]) and "output_shape" not in leaves


def test_list_layers_marks_layers_that_do_not_run_and_tuple_outputs():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.unused = nn.Linear(4, 4)

        def forward(self, x):
            return self.rnn(x)[0]

    table = hlviz.list_layers(Partial(), torch.zeros(2, 5, 3)).set_index("name")
    assert table.loc["unused", "output_shape"] == "(not run)"
    assert table.loc["rnn", "output_shape"] == "((2, 5, 4), (1, 2, 4))"


def test_list_layers_cleans_up_when_the_example_fails(cnn):
    with pytest.raises(RuntimeError):
        hlviz.list_layers(cnn, torch.zeros(2, 3, 8, 8))  # 3 channels into a 1-channel conv
    hlviz.testing.assert_no_hooks(cnn)


def test_hooks_on_blocks_use_a_fresh_model_each_time():
    assert hlviz.layer_names(Blocks()) == hlviz.layer_names(Blocks())


def test_list_layers_counts_calls_of_a_shared_module():
    from .zoo import Shared

    table = hlviz.list_layers(Shared(), torch.zeros(2, 5)).set_index("name")
    assert table.loc["block", "output_shape"] == "(2, 5) (3 calls)"
    assert table.loc["head", "output_shape"] == "(2, 2)"
