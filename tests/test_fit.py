"""Tests of fitting edits on a tiny model: the edit moves target prompts toward English."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model, make_tiny_tokenizer
from swe_toolkit.capture import capture_activations
from swe_toolkit.errors import ConfigurationError
from swe_toolkit.capture import SecondMoments
from swe_toolkit.fit import EditConfig, fit_edit, penalty_matrix, safety_directions
from swe_toolkit.solver import solve_edit
from swe_toolkit.models.adapters import get_adapter

ENGLISH = [
    "how do I open a locked door",
    "write a story about a dragon",
    "explain the water cycle",
    "give me a recipe for bread",
    "what is the capital of France",
    "describe a sunny day at the beach",
]
TARGET = [
    "ฉันจะเปิดประตูที่ล็อกได้อย่างไร",
    "เขียนเรื่องเกี่ยวกับมังกร",
    "อธิบายวัฏจักรของน้ำ",
    "ขอสูตรทำขนมปัง",
    "เมืองหลวงของฝรั่งเศสคืออะไร",
    "บรรยายวันที่มีแดดที่ชายหาด",
]
GENERAL = [
    "The river flows to the sea.",
    "Cats sleep for many hours every day.",
    "Mountains are tall and often covered in snow.",
    "A library holds many books.",
    "Bread is baked in an oven.",
    "Music can be played on a piano.",
    "The moon orbits the earth.",
    "Trains run on rails between cities.",
]


def _pre_activations(model, tokenizer, prompts, layer_index, neurons):
    acts = capture_activations(model, tokenizer, prompts, [layer_index], sites=("mlp_input",), progress=False)
    x = acts.mlp_input[layer_index].double()
    layer = get_adapter(model).layer(layer_index)
    rows = torch.cat([view.neuron_slice(neurons).double() for view in layer.inputs])
    return x @ rows.T


def _general_pre_activations(model, tokenizer, layer_index, neurons, texts=GENERAL):
    acts = capture_activations(
        model, tokenizer, texts, [layer_index], sites=("mlp_input",), positions="mean",
        use_chat_template=False, progress=False,
    )
    layer = get_adapter(model).layer(layer_index)
    rows = torch.cat([view.neuron_slice(neurons).double() for view in layer.inputs])
    return acts.mlp_input[layer_index].double() @ rows.T


@pytest.fixture()
def setup():
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    return model, tokenizer


def test_input_edit_moves_target_toward_english(setup) -> None:
    model, tokenizer = setup
    layer_index = 2
    neurons = torch.arange(0, 64, 4)
    before_target = _pre_activations(model, tokenizer, TARGET, layer_index, neurons)
    english = _pre_activations(model, tokenizer, ENGLISH, layer_index, neurons)
    general_before = _general_pre_activations(model, tokenizer, layer_index, neurons)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    edit = fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
        neurons={layer_index: neurons}, general_texts=GENERAL,
        config=EditConfig(side="input", rank=8, alpha=0.0, lam_relative=1e-4), progress=False,
    )
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), "fit_edit must leave the model unchanged"

    with edit.applied(model):
        after_target = _pre_activations(model, tokenizer, TARGET, layer_index, neurons)
        general_after = _general_pre_activations(model, tokenizer, layer_index, neurons)

    gap_before = (before_target - english).norm()
    gap_after = (after_target - english).norm()
    assert gap_after < 0.2 * gap_before
    assert edit.layers[0].info["explained_fraction"] > 0.8
    assert not torch.equal(general_after, general_before)


def test_penalty_reduces_general_change(setup) -> None:
    model, tokenizer = setup
    neurons = torch.arange(16)
    general_before = _general_pre_activations(model, tokenizer, 1, neurons)
    changes = []
    for alpha in (0.0, 100.0):
        edit = fit_edit(
            model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
            neurons={1: neurons}, general_texts=GENERAL,
            config=EditConfig(side="input", rank=4, alpha=alpha, lam_relative=1e-4), progress=False,
        )
        with edit.applied(model):
            after = _general_pre_activations(model, tokenizer, 1, neurons)
        changes.append(float((after - general_before).norm()))
    assert changes[1] < 0.2 * changes[0]


def test_nullspace_edit_fits_and_spares_general(setup) -> None:
    model, tokenizer = setup
    neurons = torch.arange(8)
    general_before = _general_pre_activations(model, tokenizer, 1, neurons, GENERAL[:1])
    edit = fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
        neurons={1: neurons}, general_texts=GENERAL[:1],
        config=EditConfig(side="input", rank=4, constraint="nullspace", null_threshold=1e-2,
                          lam_relative=1e-4),
        progress=False,
    )
    with edit.applied(model):
        after = _general_pre_activations(model, tokenizer, 1, neurons, GENERAL[:1])
    assert (after - general_before).norm() / general_before.norm() < 5e-3


def test_output_edit_moves_residual_along_safety_direction(setup) -> None:
    model, tokenizer = setup
    layer_index = 1
    neurons = torch.arange(0, 64, 2)
    harmless = ["tell me a joke", "what time is it", "name a color", "count to five"]
    kwargs = dict(sites=("residual",), progress=False)
    english = capture_activations(model, tokenizer, ENGLISH, [layer_index], **kwargs).residual[layer_index]
    benign = capture_activations(model, tokenizer, harmless, [layer_index], **kwargs).residual[layer_index]
    direction = safety_directions(english, benign, 1)[:, 0].double()
    before = capture_activations(model, tokenizer, TARGET, [layer_index], **kwargs).residual[layer_index]

    edit = fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
        neurons={layer_index: neurons}, english_harmless=harmless,
        config=EditConfig(side="output", rank=4, lam_relative=1e-6, gain=1.0, subspace_dim=1),
        progress=False,
    )
    with edit.applied(model):
        after = capture_activations(model, tokenizer, TARGET, [layer_index], **kwargs).residual[layer_index]

    gap_before = ((english.double() - before.double()) @ direction).abs().mean()
    gap_after = ((english.double() - after.double()) @ direction).abs().mean()
    assert gap_after < 0.5 * gap_before


def test_multi_layer_fit_edits_each_layer(setup) -> None:
    model, tokenizer = setup
    edit = fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
        neurons={1: torch.arange(8), 3: torch.arange(8, 16)},
        config=EditConfig(side="input", rank=2, alpha=0.0), progress=False,
    )
    assert [layer.layer for layer in edit.layers] == [1, 3]
    assert not edit.is_applied
    edit.apply(model)
    edit.revert(model)


def test_safety_directions_are_orthonormal() -> None:
    gen = torch.Generator().manual_seed(0)
    harmful = torch.randn(20, 3, 16, generator=gen) + 2.0
    harmless = torch.randn(20, 3, 16, generator=gen)
    basis = safety_directions(harmful, harmless, 3)
    torch.testing.assert_close(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)
    mean_diff = harmful.double().mean((0, 1)) - harmless.double().mean((0, 1))
    torch.testing.assert_close(basis[:, 0], mean_diff / mean_diff.norm(), atol=1e-10, rtol=0)


def test_fit_rejects_non_parallel_prompts(setup) -> None:
    model, tokenizer = setup
    with pytest.raises(ConfigurationError, match="'th' has 5 prompts but English has 6"):
        fit_edit(model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET[:5]},
                 neurons={1: torch.arange(4)}, progress=False)
    with pytest.raises(ConfigurationError, match="english_harmless"):
        fit_edit(model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
                 neurons={1: torch.arange(4)}, config=EditConfig(side="output"), progress=False)


def test_preserve_prompts_reduce_change_on_harmless_prompts(setup) -> None:
    model, tokenizer = setup
    neurons = torch.arange(16)
    harmless = ["tell me a joke", "what time is it", "name a color", "count to five"]
    before = _pre_activations(model, tokenizer, harmless, 2, neurons)
    changes = []
    for preserve in (None, harmless):
        edit = fit_edit(
            model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
            neurons={2: neurons}, general_texts=GENERAL[:2], preserve_prompts=preserve,
            config=EditConfig(side="input", rank=4, alpha=1.0, lam_relative=1e-4, preserve_weight=10.0),
            progress=False,
        )
        with edit.applied(model):
            after = _pre_activations(model, tokenizer, harmless, 2, neurons)
        changes.append(float((after - before).norm()))
    assert changes[1] < 0.5 * changes[0]


def test_merged_moments_add_counts_and_sums() -> None:
    from swe_toolkit.capture import accumulate_second_moments

    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    both = accumulate_second_moments(model, tokenizer, GENERAL[:4], [1], progress=False)[1]
    first = accumulate_second_moments(model, tokenizer, GENERAL[:2], [1], progress=False)[1]
    second = accumulate_second_moments(model, tokenizer, GENERAL[2:4], [1], progress=False)[1]
    merged = first.merged(second)
    assert merged.count == both.count
    torch.testing.assert_close(merged.matrix, both.matrix, rtol=1e-6, atol=1e-6)
    other_layer = accumulate_second_moments(model, tokenizer, GENERAL[:2], [2], progress=False)[2]
    with pytest.raises(ConfigurationError, match="Cannot merge"):
        first.merged(other_layer)


def test_penalty_matrix_relative_weights() -> None:
    gen = torch.randn(5, 40, dtype=torch.float64)
    moments = SecondMoments(layer=0, site="mlp_input", matrix=gen @ gen.T, sum=gen.sum(1), count=40)
    anchors = torch.randn(3, 2, 5, dtype=torch.float64)
    config = EditConfig(alpha=0.5, preserve_weight=2.0)
    got = penalty_matrix(config, 12, moments, anchors)
    a = anchors.reshape(-1, 5)
    expected = 0.5 * 12 / 40 * gen @ gen.T + 2.0 * 12 / 6 * a.T @ a
    torch.testing.assert_close(got, expected)
    assert penalty_matrix(EditConfig(alpha=0.0, preserve_weight=0.0), 12, moments, anchors) is None
    only_anchors = penalty_matrix(EditConfig(alpha=0.0, preserve_weight=1.0), 12, moments, anchors)
    torch.testing.assert_close(only_anchors, 12 / 6 * a.T @ a)


def test_heavy_anchors_approach_constrained_edit() -> None:
    # As preserve_weight grows, the solution must tend to the brute-force edit that fits the
    # targets exactly subject to D a = 0 on every anchor: D* = R (P X)^+ P, with P the projector
    # onto the orthogonal complement of the anchors' span.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 20, dtype=torch.float64, generator=g)
    r = torch.randn(3, 20, dtype=torch.float64, generator=g)
    anchors = torch.randn(4, 12, dtype=torch.float64, generator=g)
    light = solve_edit(x, r, K_g=penalty_matrix(EditConfig(preserve_weight=1e-6), 20, None, anchors),
                       alpha=1.0, lam=1e-9)
    heavy = solve_edit(x, r, K_g=penalty_matrix(EditConfig(preserve_weight=1e8), 20, None, anchors),
                       alpha=1.0, lam=1e-9)
    projector = torch.eye(12, dtype=torch.float64) - anchors.T @ torch.linalg.solve(anchors @ anchors.T, anchors)
    expected = r @ torch.linalg.pinv(projector @ x) @ projector
    assert (heavy.delta @ anchors.T).norm() < 1e-4 * (light.delta @ anchors.T).norm()
    torch.testing.assert_close(heavy.delta, expected, rtol=1e-4, atol=1e-5)


def test_nullspace_with_zero_alpha_fits(setup) -> None:
    model, tokenizer = setup
    edit = fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
        neurons={2: torch.arange(16)}, general_texts=GENERAL[:4],
        config=EditConfig(side="input", rank=2, alpha=0.0, constraint="nullspace", null_threshold=0.5),
        progress=False,
    )
    assert edit.layers[0].rank == 2


@pytest.mark.parametrize("subspace_dim", [1, 3])
def test_output_edit_rank_is_subspace_dim(setup, subspace_dim: int) -> None:
    # The target lies in the span of subspace_dim safety directions, so the edit cannot need more.
    model, tokenizer = setup
    config = EditConfig(side="output", rank=None, alpha=1.0, gain=2.0, subspace_dim=subspace_dim)
    edit = fit_edit(
        model, tokenizer, english_harmful=ENGLISH, target_harmful={"th": TARGET},
        neurons={1: torch.arange(0, 64, 2)}, config=config, general_texts=GENERAL,
        english_harmless=GENERAL[:6], progress=False,
    )
    layer_edit = edit.layers[0]
    assert layer_edit.rank == subspace_dim
    assert layer_edit.info["rank_bound"] == 32
