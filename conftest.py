"""Root pytest configuration: names available to the doctests in hlviz/ (run with the suite),
and the ``slow`` marker on what a newcomer's ``make test-fast`` (``pytest -m "not slow"``) skips.

``slow`` marks every notebook (nbval items), and the tests that start other programs or wait:
the bench smoke runs, torchrun, SIGKILL, the browser and the data builders. Tests in files that
mark them themselves use ``pytest.mark.slow``; the few listed in :data:`SLOW` live in files of
other topics and are marked here, by node id. A listed test that is no longer in its (collected)
file stops the run, so a rename cannot silently put a slow test back into ``make test-fast``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

#: node id (without parameters) -> why it is slow (measured: over ~2 s each on a 2-core machine)
SLOW = {
    # other programs and waits
    "tests/test_store.py::test_a_collection_killed_with_sigkill_resumes_to_the_uninterrupted_result": (
        "SIGKILLs a child process mid-collection"
    ),
    "tests/test_cnn_track.py::test_builder_is_deterministic_and_stratified": (
        "runs scripts/build_fashion_mnist.py twice"
    ),
    "tests/test_code_corpus.py::test_builder_is_deterministic": "runs scripts/build_code_corpus.py",
    # training and full-checkpoint evaluations
    "tests/test_rnn.py::test_checkpoint_reaches_its_stated_bits_per_char": "scores the LSTM",
    "tests/test_gpt.py::test_checkpoint_reaches_its_stated_bits_per_char": "scores the GPT",
    "tests/test_cnn_track.py::test_training_dynamics_checkpoints_improve": "scores 5 checkpoints",
    "tests/test_cnn_track.py::test_full_set_from_a_folder_or_the_environment": "writes idx files",
    "tests/test_cnn_track.py::test_idx_reader_rejects_damaged_files": "writes idx files",
    "tests/test_digits_and_plotting.py::test_training_reaches_high_test_accuracy": "trains a CNN",
    "tests/test_digits_and_plotting.py::test_plot_layer_embeddings_from_a_recording": "trains a CNN",
    "tests/test_digits_and_plotting.py::test_training_is_deterministic_and_leaves_the_global_rng_alone": (
        "trains a CNN twice"
    ),
    "hlviz/models/digits.py::hlviz.models.digits": "trains a CNN (doctest)",
    "tests/test_toy.py::test_training_reaches_the_accuracy_the_notebook_states": "trains MLPs",
    "tests/test_toy.py::test_a_trained_relu_network_has_more_regions_than_units": "trains MLPs",
    "tests/test_toy.py::test_plot_decision_regions_layer_movement_and_sweep": "trains MLPs",
    "tests/test_toy.py::test_weight_decay_shrinks_the_weights": "trains MLPs",
    "hlviz/toy/data.py::hlviz.toy.data": "trains MLPs (doctest)",
    "hlviz/toy/data.py::hlviz.toy.data.fit_mlp": "trains an MLP (doctest)",
    "hlviz/models/mlp.py::hlviz.models.mlp.train_full_batch": "trains an MLP (doctest)",
    "hlviz/widgets/plane.py::hlviz.widgets.plane": "trains MLPs (doctest)",
    "hlviz/widgets/plane.py::hlviz.widgets.plane.render_plane": "trains an MLP (doctest)",
    # probe sweeps, t-SNE, feature visualisation
    "tests/test_batched_probes.py::test_probe_layers_passes_the_probe_parameters_to_the_batched_solve": (
        "fits many probes"
    ),
    "tests/test_batched_probes.py::test_mlp_probe_finds_what_a_linear_probe_cannot_and_reports_selectivity": (
        "fits MLP probes"
    ),
    "tests/test_batched_probes.py::test_batched_scores_equal_probes_fitted_one_by_one": (
        "fits many probes"
    ),
    "tests/test_batched_probes.py::test_mlp_probe_errors_and_contract": "fits MLP probes",
    "tests/test_batched_probes.py::test_identical_inputs_as_layer_and_baseline_give_identical_scores": (
        "fits many probes"
    ),
    "hlviz/probes/mlp.py::hlviz.probes.mlp": "fits an MLP probe (doctest)",
    "hlviz/probes/mdl.py::hlviz.probes.mdl.online_codelength": "fits probes per block (doctest)",
    "hlviz/probes/mdl.py::hlviz.probes.mdl": "fits probes per block (doctest)",
    "tests/test_mdl.py::test_determinism_and_seed_dependence": "fits probes per block",
    "tests/test_similarity.py::test_project_shapes_and_determinism": "t-SNE",
    "tests/test_similarity.py::test_minibatch_estimate_converges_to_the_full_value_as_batches_accumulate": (
        "many CKA batches"
    ),
    "tests/test_similarity.py::test_cka_of_independent_random_representations_is_small": "many CKAs",
    "tests/test_units.py::test_visualize_raises_the_objective_and_leaves_no_hooks": "optimises images",
    "tests/test_units.py::test_receptive_field_equals_the_gradient_support": "one gradient per pixel",
    "hlviz/units/featurevis.py::hlviz.units.featurevis": "optimises an image (doctest)",
    "hlviz/models/minilm.py::hlviz.models.minilm": "loads MiniLM (doctest)",
    "tests/test_attribution_concepts.py::test_cascading_randomisation_changes_maps_of_a_real_model": (
        "attributes a trained CNN layer by layer"
    ),
    # over ~2 s each when measured on the shared 2-core machine (--durations)
    "hlviz/toy/plots.py::hlviz.toy.plots": "over 2 s",
    "tests/test_attention_capture.py::test_hugging_face_eager_attentions_match_the_model_output": "over 2 s",
    "tests/test_attribution_concepts.py::test_sanity_check_leaves_the_random_state_alone_and_repeats_for_a_seed": "over 2 s",
    "tests/test_batched_probes.py::test_solver_reaches_scikit_learn_optimum": "over 2 s",
    "tests/test_batched_probes.py::test_the_shrunk_preconditioner_takes_fewer_steps_to_the_same_probes": "over 2 s",
    "tests/test_cnn_track.py::test_checkpoints_load_without_pickle_and_reach_90_percent": "over 2 s",
    "tests/test_digits_and_plotting.py::test_train_classifier_on_a_toy_problem_and_its_errors": "over 2 s",
    "tests/test_gpt.py::test_bits_per_char_scores_every_character_once_from_its_window": "over 2 s",
    "tests/test_layers.py::test_torch_compile_wrapper_is_unwrapped_and_recorded": "over 2 s",
    "tests/test_mdl.py::test_custom_probe_and_string_labels": "over 2 s",
    "tests/test_mdl.py::test_planted_signal_compresses_and_noise_does_not": "over 2 s",
    "tests/test_patching.py::test_ablating_a_char_gpt_head_equals_zeroing_its_slice_by_hand": "over 2 s",
    "tests/test_patching.py::test_batched_patching_equals_one_patch_per_forward_pass": "over 2 s",
    "tests/test_probe_layers.py::test_a_planted_signal_makes_its_layer_win": "over 2 s",
    "tests/test_probe_layers.py::test_baseline_and_duplicate_and_width_warnings": "over 2 s",
    "tests/test_probe_layers.py::test_control_task_shows_what_memorising_types_buys": "over 2 s",
    "tests/test_probe_layers.py::test_errors": "over 2 s",
    "tests/test_probe_layers.py::test_plot_and_summary": "over 2 s",
    "tests/test_probes.py::test_standardisation_uses_training_rows_only": "over 2 s",
    "tests/test_similarity.py::test_minibatch_is_close_to_linear_cka_for_large_n": "over 2 s",
    "tests/test_store.py::test_a_store_is_a_mapping_that_probes_and_cka_accept": "over 2 s",
    "tests/test_toy.py::test_training_is_deterministic_and_lbfgs_converges": "over 2 s",
    "tests/test_units.py::test_visualize_is_reproducible_and_batches_with_diversity": "over 2 s",
}


def _is_notebook(item: pytest.Item) -> bool:
    return item.path.suffix == ".ipynb"


def _defines(root: Path, node: str) -> bool:
    """Whether ``node`` (``path::test_name`` or a doctest ``path::dotted.name``) still names a
    function (or, for a module's doctest, the module) in its file."""
    path, _, name = node.partition("::")
    last = name.rsplit(".", 1)[-1]
    if "." in name and name == ".".join(Path(path).with_suffix("").parts):
        return True  # the module docstring's doctest
    return (
        re.search(rf"^\s*(async )?def {re.escape(last)}\(", (root / path).read_text(), re.M)
        is not None
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    collected_files = {item.nodeid.split("::")[0] for item in items}
    for item in items:
        if _is_notebook(item) or item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
    root = Path(str(config.rootpath))
    missing = [n for n in SLOW if n.split("::")[0] in collected_files and not _defines(root, n)]
    if missing:
        raise pytest.UsageError(
            f"conftest.py SLOW names tests that no longer exist: {missing}; "
            "update SLOW (or mark the renamed test with pytest.mark.slow in its file)."
        )


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import torch
    from torch import nn

    import hlviz

    doctest_namespace.update(hlviz=hlviz, torch=torch, nn=nn)
