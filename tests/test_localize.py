"""Tests of neuron scoring, selection and overlap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swe_toolkit.errors import ConfigurationError, ShapeError
from swe_toolkit.localize import (
    Localization,
    cohens_d,
    jaccard,
    jaccard_matrix,
    localize,
    localize_by_language,
    score_neurons,
    select_neurons,
)


def test_cohens_d_matches_numpy_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(30, 5, generator=gen) + torch.tensor([0.0, 1.0, -2.0, 0.5, 0.0])
    b = torch.randn(20, 5, generator=gen) * 2.0
    got = cohens_d(a, b).numpy()
    an, bn = a.double().numpy(), b.double().numpy()
    pooled = np.sqrt(((30 - 1) * an.var(0, ddof=1) + (20 - 1) * bn.var(0, ddof=1)) / (30 + 20 - 2))
    expected = (an.mean(0) - bn.mean(0)) / pooled
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cohens_d_constant_column_scores_zero() -> None:
    a = torch.ones(4, 2)
    b = torch.ones(5, 2)
    a[:, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    scores = cohens_d(a, b)
    assert scores[0] == 0
    assert torch.isfinite(scores).all()


def test_cohens_d_rejects_bad_shapes() -> None:
    with pytest.raises(ShapeError):
        cohens_d(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ConfigurationError):
        cohens_d(torch.zeros(1, 4), torch.zeros(3, 4))


def _planted(seed: int = 0) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Activations of 3 layers x 16 neurons with known shifted neurons."""
    gen = torch.Generator().manual_seed(seed)
    harmful, harmless = {}, {}
    for layer in range(3):
        harmful[layer] = torch.randn(40, 3, 16, generator=gen)
        harmless[layer] = torch.randn(40, 3, 16, generator=gen)
    harmful[0][:, :, 2] += 3.0   # strong, positive
    harmful[1][:, :, 7] -= 2.0   # strong, negative
    harmful[2][:, :, 11] += 1.5  # weaker
    return harmful, harmless


def test_localize_finds_planted_neurons_per_layer() -> None:
    harmful, harmless = _planted()
    result = localize(harmful, harmless, k=1, per_layer=True)
    assert result.selected[0].tolist() == [2]
    assert result.selected[1].tolist() == [7]
    assert result.selected[2].tolist() == [11]
    assert result.counts == {0: 1, 1: 1, 2: 1}
    assert result.scores[1][7] < 0


def test_global_selection_prefers_strong_layers() -> None:
    harmful, harmless = _planted()
    selected = select_neurons(score_neurons(harmful, harmless), k=2, per_layer=False)
    assert selected[0].tolist() == [2]
    assert selected[1].tolist() == [7]
    assert selected[2].numel() == 0


def test_fraction_selection_counts() -> None:
    harmful, harmless = _planted()
    scores = score_neurons(harmful, harmless)
    per_layer = select_neurons(scores, fraction=0.25)
    assert all(idx.numel() == 4 for idx in per_layer.values())
    pooled = select_neurons(scores, fraction=0.25, per_layer=False)
    assert sum(idx.numel() for idx in pooled.values()) == 12


def test_selection_errors_name_the_value() -> None:
    harmful, harmless = _planted()
    scores = score_neurons(harmful, harmless)
    with pytest.raises(ConfigurationError, match="exactly one"):
        select_neurons(scores)
    with pytest.raises(ConfigurationError, match="k=17"):
        select_neurons(scores, k=17)
    with pytest.raises(ConfigurationError, match="fraction=1.5"):
        select_neurons(scores, fraction=1.5)
    with pytest.raises(ConfigurationError, match="layers"):
        score_neurons(harmful, {0: harmless[0]})


def test_jaccard_values() -> None:
    assert jaccard({(0, 1), (0, 2)}, {(0, 2), (1, 3)}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({(0, 1)}, {(1, 1)}) == 0.0


def test_jaccard_matrix_by_language() -> None:
    harmful, harmless = _planted(0)
    other_harmful, other_harmless = _planted(1)
    shuffled = {layer: torch.randn_like(x) for layer, x in other_harmful.items()}
    by_lang = localize_by_language(
        {"en": harmful, "th": other_harmful, "bn": shuffled},
        {"en": harmless, "th": other_harmless, "bn": other_harmless},
        k=1,
    )
    names, matrix = jaccard_matrix(by_lang)
    assert names == ["en", "th", "bn"]
    assert torch.equal(matrix, matrix.T)
    assert torch.all(matrix.diagonal() == 1)
    # en and th share the planted neurons; bn has none planted.
    assert matrix[0, 1] == 1.0
    assert matrix[0, 2] < 1.0


def test_top_lists_strongest_first() -> None:
    harmful, harmless = _planted()
    result: Localization = localize(harmful, harmless, k=2)
    top = result.top(3)
    assert [(layer, neuron) for layer, neuron, _ in top[:2]] == [(0, 2), (1, 7)]
    assert abs(top[0][2]) >= abs(top[1][2]) >= abs(top[2][2])
