"""Fitting the closed-form edit on a model: from captured activations to a :class:`SparseEdit`.

Two sides are offered, both solved by :func:`swe_toolkit.solver.solve_edit`:

* Input side. For safety neurons ``S`` of a layer, change rows ``S`` of the MLP's input
  projections (gate and up, or the single one) so that, on harmful prompts in the target
  languages, the neurons' pre-activations equal those of the parallel English prompts.
  ``X`` are the target-language MLP inputs and ``R = W_S X_en - W_S X``. The penalty uses the
  second moment of the MLP inputs on general text.
* Output side. Change columns ``S`` of the output projection so that the neurons' activations on
  target-language prompts add, to the residual stream after the layer, the part of the
  English-minus-target difference that lies in a safety subspace, times a gain. The subspace is
  spanned by the directions that separate English harmful from harmless residuals at that layer.

Both regress on every post-instruction position of every prompt: these template tokens are the
same in all languages, so column ``j`` of the English and the target-language matrices belong to
the same prompt and position.

Two terms keep the rest of the model's behaviour. General text enters as a second moment over all
its tokens (weight ``alpha``). Harmless requests enter as anchors: their post-instruction
activations, where the model decides whether to refuse, are asked to stay unchanged (weight
``preserve_weight``). The anchors are what stop the edit from refusing harmless requests that
resemble harmful ones in the same language.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .cache import ActivationCache, check_cache
from .capture import SecondMoments, accumulate_second_moments, capture_activations
from .edit import LayerEdit, Side, SparseEdit, make_layer_edit
from .errors import ConfigurationError, ShapeError
from .models.adapters import LayerMLP, get_adapter
from .solver import EditSolution, compact_factors, solve_edit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditConfig:
    """Hyperparameters of one edit fit.

    Attributes:
        side: ``"input"`` or ``"output"`` (see the module docstring).
        rank: rank bound r of the change; ``None`` for full rank.
        alpha: weight of the general-text penalty ``alpha ||D X_g||^2``, per token: the general
            second moment is rescaled to the number of fit columns, so ``alpha = 1`` weighs a
            general token as much as a fit position.
        lam_relative: ridge weight relative to the mean diagonal of ``X X^T + alpha K_g``.
        constraint: ``"penalty"`` (soft) or ``"nullspace"`` (hard projection away from the
            general-text subspace, keeping directions with eigenvalue below ``null_threshold``
            times the largest).
        null_threshold: relative eigenvalue threshold of the null-space constraint.
        gain: output side only: multiplier on the English-minus-target target.
        subspace_dim: output side only: number of safety directions spanning the target space.
        preserve_weight: weight of the anchor term ``||D X_p||^2`` over the post-instruction
            positions of harmless prompts, rescaled like ``alpha``: ``1`` weighs all anchors
            together as much as all fit positions together. ``0`` leaves the anchors out.
    """

    side: Side = "input"
    rank: int | None = 64
    alpha: float = 1.0
    lam_relative: float = 1e-2
    constraint: str = "penalty"
    null_threshold: float = 1e-3
    gain: float = 1.0
    subspace_dim: int = 1
    preserve_weight: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict for reports and edit metadata."""
        return dict(self.__dict__)


def _columns(acts: Tensor) -> Tensor:
    """Flatten ``(n_prompts, n_pos, dim)`` activations into ``(dim, n_prompts * n_pos)``."""
    if acts.ndim != 3:
        raise ShapeError(f"expected (prompts, positions, dim) activations, got {tuple(acts.shape)}")
    return acts.reshape(-1, acts.shape[-1]).T


def penalty_matrix(
    config: EditConfig,
    num_columns: int,
    general: SecondMoments | None = None,
    anchors: Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Tensor | None:
    """Return ``K = alpha K_g' + preserve_weight A' A'^T`` in float64, or ``None`` without terms.

    ``K_g'`` is the general second moment rescaled to ``num_columns`` tokens and ``A'`` the anchor
    columns rescaled so their count equals ``num_columns`` (see :class:`EditConfig`), so both
    weights are relative to the fit term.

    Args:
        config: supplies ``alpha`` and ``preserve_weight``.
        num_columns: number of fit columns ``n``.
        general: second moment ``(dim, dim)`` of the edited site on general text.
        anchors: ``(m, n_pos, dim)`` or ``(m, dim)`` anchor activations of the edited site.
    """
    total: Tensor | None = None
    if general is not None and config.alpha > 0:
        if general.count < 1:
            raise ConfigurationError("the general-text second moment was accumulated over 0 tokens")
        total = general.matrix.to(device=device, dtype=torch.float64) * (config.alpha * num_columns / general.count)
    if anchors is not None and config.preserve_weight > 0:
        columns = anchors.reshape(-1, anchors.shape[-1]).to(device=device, dtype=torch.float64)
        if columns.shape[0] == 0:
            raise ConfigurationError("no anchor positions; pass at least one harmless prompt")
        term = columns.T @ columns * (config.preserve_weight * num_columns / columns.shape[0])
        if total is not None and term.shape != total.shape:
            raise ShapeError(f"anchors have width {term.shape[0]} but the general moment {total.shape[0]}")
        total = term if total is None else total + term
    return total


def safety_directions(harmful: Tensor, harmless: Tensor, num_directions: int = 1) -> Tensor:
    """Return an orthonormal basis ``(d_model, q)`` of directions separating two groups.

    The first column is the normalised difference of means (harmful minus harmless). Further
    columns are the leading principal directions of the harmful samples' deviations from the
    harmless mean, with the directions already chosen projected out, so they capture how harmful
    prompts differ from harmless ones beyond the mean shift.

    Args:
        harmful: ``(n1, d_model)`` or ``(n1, n_pos, d_model)`` English harmful residuals.
        harmless: the same for English harmless prompts.
        num_directions: ``q >= 1``.
    """
    pos = harmful.reshape(-1, harmful.shape[-1]).to(torch.float64)
    neg = harmless.reshape(-1, harmless.shape[-1]).to(torch.float64)
    if pos.shape[1] != neg.shape[1]:
        raise ShapeError(f"groups have widths {pos.shape[1]} and {neg.shape[1]}")
    if not 1 <= num_directions <= pos.shape[1]:
        raise ConfigurationError(
            f"num_directions={num_directions} is out of range; use 1..{pos.shape[1]}"
        )
    mean_diff = pos.mean(0) - neg.mean(0)
    norm = mean_diff.norm()
    if norm == 0:
        raise ConfigurationError("harmful and harmless means coincide; no safety direction exists")
    basis = [mean_diff / norm]
    if num_directions > 1:
        deviations = pos - neg.mean(0)
        first = basis[0]
        deviations = deviations - (deviations @ first)[:, None] * first[None, :]
        _, _, vh = torch.linalg.svd(deviations, full_matrices=False)
        basis.extend(vh[: num_directions - 1])
    q, _ = torch.linalg.qr(torch.stack(basis, dim=1))
    # QR may flip signs; keep the first column pointing from harmless to harmful.
    if torch.dot(q[:, 0], mean_diff) < 0:
        q = -q
    return q


def solve_input_side(
    layer: LayerMLP,
    neurons: Tensor,
    target_inputs: Tensor,
    english_inputs: Tensor,
    config: EditConfig,
    general: SecondMoments | None = None,
    anchors: Tensor | None = None,
) -> tuple[LayerEdit, EditSolution]:
    """Fit rows ``neurons`` of ``layer``'s input projections (no forward pass).

    Args:
        layer: the adapter's view of the layer.
        neurons: ``(k,)`` safety-neuron indices.
        target_inputs: ``(n, n_pos, d_model)`` MLP inputs of target-language harmful prompts.
        english_inputs: ``(n, n_pos, d_model)`` MLP inputs of the parallel English prompts, row
            ``i`` the translation of ``target_inputs`` row ``i``.
        config: hyperparameters.
        general: second moment of the MLP input on general text, ``(d_model, d_model)``.
        anchors: ``(m, n_pos, d_model)`` MLP inputs at post-instruction positions of harmless
            prompts, kept unchanged with weight ``config.preserve_weight``.
    """
    if target_inputs.shape != english_inputs.shape:
        raise ShapeError(
            f"target-language inputs {tuple(target_inputs.shape)} and English inputs "
            f"{tuple(english_inputs.shape)} must be parallel (same prompts and positions)"
        )
    device = layer.inputs[0].weight.device
    index = neurons.to(device=device, dtype=torch.int64)
    weights = torch.cat([view.neuron_slice(index).to(torch.float64) for view in layer.inputs])
    x = _columns(target_inputs).to(device=device, dtype=torch.float64)
    x_en = _columns(english_inputs).to(device=device, dtype=torch.float64)
    residual = weights @ (x_en - x)
    solution = _solve(x, residual, config, general, anchors)
    return _layer_edit(layer, "input", index, solution, x.shape[1]), solution


def solve_output_side(
    layer: LayerMLP,
    neurons: Tensor,
    target_neurons: Tensor,
    target_residual: Tensor,
    english_residual: Tensor,
    directions: Tensor,
    config: EditConfig,
    general: SecondMoments | None = None,
    anchors: Tensor | None = None,
) -> tuple[LayerEdit, EditSolution]:
    """Fit columns ``neurons`` of ``layer``'s output projection (no forward pass).

    Args:
        target_neurons: ``(n, n_pos, k)`` activations of the selected neurons on
            target-language harmful prompts (columns in the order of ``neurons``).
        target_residual: ``(n, n_pos, d_model)`` residual stream after the layer, same prompts.
        english_residual: the same for the parallel English prompts.
        directions: ``(d_model, q)`` orthonormal safety directions (:func:`safety_directions`).
        general: second moment of the selected neurons' activations on general text, ``(k, k)``.
        anchors: ``(m, n_pos, k)`` activations of the selected neurons at post-instruction
            positions of harmless prompts, kept unchanged with weight ``config.preserve_weight``.
    """
    if target_residual.shape != english_residual.shape:
        raise ShapeError(
            f"target residuals {tuple(target_residual.shape)} and English residuals "
            f"{tuple(english_residual.shape)} must be parallel"
        )
    if target_neurons.shape[:2] != target_residual.shape[:2]:
        raise ShapeError("neuron activations and residuals must cover the same prompts and positions")
    if target_neurons.shape[-1] != neurons.numel():
        raise ShapeError(
            f"neuron activations have {target_neurons.shape[-1]} columns for {neurons.numel()} neurons"
        )
    device = layer.output.weight.device
    index = neurons.to(device=device, dtype=torch.int64)
    x = _columns(target_neurons).to(device=device, dtype=torch.float64)
    gap = _columns(english_residual - target_residual).to(device=device, dtype=torch.float64)
    basis = directions.to(device=device, dtype=torch.float64)
    target = config.gain * basis @ (basis.T @ gap)
    solution = _solve(x, target, config, general, anchors)
    return _layer_edit(layer, "output", index, solution, x.shape[1]), solution


def _solve(
    x: Tensor, target: Tensor, config: EditConfig, general: SecondMoments | None, anchors: Tensor | None
) -> EditSolution:
    """Solve for ``D`` with ``D x ~ target`` under the penalty of :func:`penalty_matrix`."""
    penalty = penalty_matrix(config, x.shape[1], general, anchors, x.device)
    weight = 1.0 if penalty is not None else 0.0
    if penalty is None and config.constraint == "nullspace" and general is not None:
        # With alpha = 0 the general text still defines the null space; only the soft term goes.
        penalty = penalty_matrix(dataclasses.replace(config, alpha=1.0), x.shape[1], general, anchors, x.device)
        weight = 0.0
    return solve_edit(
        x,
        target,
        K_g=penalty,
        alpha=weight,
        lam_relative=config.lam_relative,
        rank=config.rank,
        constraint=config.constraint,
        null_threshold=config.null_threshold,
    )


def _layer_edit(layer: LayerMLP, side: Side, index: Tensor, solution: EditSolution, num_columns: int) -> LayerEdit:
    """Build the layer's edit from a solution, stored at the rank it needs rather than the bound."""
    left, right = compact_factors(solution.left, solution.right)
    return make_layer_edit(layer, side, index, left, right, _solution_info(solution, num_columns))


def _solution_info(solution: EditSolution, num_columns: int) -> dict[str, Any]:
    explained = 1.0 - solution.objective / max(solution.baseline_objective, 1e-300)
    return {
        "objective": solution.objective,
        "baseline_objective": solution.baseline_objective,
        "explained_fraction": explained,
        "condition_number": solution.condition_number,
        "num_columns": num_columns,
        "rank_bound": solution.rank,
    }


def _check_parallel(english: Sequence[str], targets: Mapping[str, Sequence[str]]) -> None:
    if not english:
        raise ConfigurationError("no English fit prompts; pass at least one parallel prompt")
    if not targets:
        raise ConfigurationError("no target-language prompts; pass at least one language")
    for lang, prompts in targets.items():
        if len(prompts) != len(english):
            raise ConfigurationError(
                f"language {lang!r} has {len(prompts)} prompts but English has {len(english)}; "
                "fit prompts must be parallel translations, row by row"
            )


def fit_edit(
    model: nn.Module,
    tokenizer: Any,
    *,
    english_harmful: Sequence[str],
    target_harmful: Mapping[str, Sequence[str]],
    neurons: Mapping[int, Tensor],
    config: EditConfig = EditConfig(),
    general_texts: Sequence[str] | None = None,
    english_harmless: Sequence[str] | None = None,
    preserve_prompts: Sequence[str] | None = None,
    model_id: str = "",
    batch_size: int = 8,
    progress: bool = True,
    cache: ActivationCache | None = None,
) -> SparseEdit:
    """Fit an edit of every layer in ``neurons``, in increasing layer order.

    Layers are fitted in sequence: after each layer is fitted, its edit is applied temporarily so
    that the next layer's inputs are recomputed on the edited model, as the final edited model
    will see them. The model is left unchanged on return (also on error).

    Args:
        english_harmful: English harmful fit prompts.
        target_harmful: language -> the parallel translations of ``english_harmful``.
        neurons: layer -> ``(k,)`` safety-neuron indices (e.g. ``Localization.selected``).
        config: hyperparameters shared by all layers.
        general_texts: texts for the utility penalty (``alpha``) or null space; ``None`` fits
            without a penalty.
        english_harmless: output side only: English harmless prompts, which with
            ``english_harmful`` define the safety directions.
        preserve_prompts: harmless requests (ideally in every language, including ones that
            sound harmful) rendered with the chat template; their post-instruction positions are
            the anchors kept unchanged with weight ``config.preserve_weight``. Ignored when that
            weight is 0.
        cache: an :class:`~swe_toolkit.cache.ActivationCache` of ``model`` that keeps the first
            layer's activations for later fits, for sweeps over settings; ``None`` captures
            everything afresh. Its own batch size and progress setting apply to what it captures.
    """
    _check_parallel(english_harmful, target_harmful)
    check_cache(cache, model, tokenizer)
    if config.side == "output" and not english_harmless:
        raise ConfigurationError("the output-side edit needs english_harmless prompts")
    use_anchors = bool(preserve_prompts) and config.preserve_weight > 0
    if config.constraint == "nullspace" and not (general_texts or use_anchors):
        raise ConfigurationError(
            "the nullspace constraint needs general_texts, or preserve_prompts with preserve_weight > 0"
        )
    layers = sorted(int(layer) for layer in neurons)
    if not layers:
        raise ConfigurationError("no layers to edit; pass a non-empty neurons mapping")
    adapter = get_adapter(model)
    languages = list(target_harmful)
    target_prompts = [p for lang in languages for p in target_harmful[lang]]

    fitted: list[LayerEdit] = []
    applied: list[SparseEdit] = []
    try:
        for layer_index in layers:
            layer = adapter.layer(layer_index)
            index = neurons[layer_index].to(torch.int64)
            # The cache contains activations of the unedited model, so only the first layer may use it.
            captures = _Captures(model, tokenizer, layer_index, cache if not applied else None, batch_size, progress)
            site = "mlp_input" if config.side == "input" else "neurons"
            subset = None if config.side == "input" else index
            target_sites = ("mlp_input",) if config.side == "input" else ("neurons", "residual")
            target = captures.activations(target_prompts, target_sites, subset)
            english = captures.activations(english_harmful, ("mlp_input", "residual"))
            english_rows = {name: value.repeat(len(languages), 1, 1) for name, value in english.items()}
            general = captures.second_moment(general_texts, site, subset) if general_texts else None
            anchors = captures.activations(preserve_prompts or (), (site,), subset)[site] if use_anchors else None
            if config.side == "input":
                edit, _ = solve_input_side(
                    layer, index, target["mlp_input"], english_rows["mlp_input"], config, general, anchors
                )
            else:
                harmless = captures.activations(english_harmless or (), ("residual",))["residual"]
                directions = safety_directions(english["residual"], harmless, config.subspace_dim)
                edit, _ = solve_output_side(
                    layer, index, target["neurons"], target["residual"], english_rows["residual"],
                    directions, config, general, anchors,
                )
            logger.info(
                "layer %d (%s side): %d neurons, rank %d, explains %.3f of the target",
                layer_index, config.side, index.numel(), edit.rank, edit.info["explained_fraction"],
            )
            fitted.append(edit)
            if layer_index != layers[-1]:
                applied.append(SparseEdit([edit], model_id=model_id).apply(model))
    finally:
        for edit in reversed(applied):
            edit.revert(model)

    hyper = config.as_dict() | {
        "layers": layers,
        "languages": languages,
        "num_fit_prompts": len(english_harmful),
        "num_general_texts": len(general_texts or []),
        "num_preserve_prompts": len(preserve_prompts or []) if use_anchors else 0,
    }
    return SparseEdit(fitted, model_id=model_id, hyperparameters=hyper)


class _Captures:
    """The activations one layer's fit reads, from an :class:`ActivationCache` or captured directly."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, layer: int, cache: ActivationCache | None,
        batch_size: int, progress: bool,
    ) -> None:
        self.model, self.tokenizer, self.layer, self.cache = model, tokenizer, layer, cache
        self.options: dict[str, Any] = {"batch_size": batch_size, "progress": progress}

    def activations(
        self, prompts: Sequence[str], sites: tuple[str, ...], neurons: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Return ``site -> (n_prompts, n_pos, width)`` at this layer; ``neurons`` subsets that site."""
        if self.cache is not None:
            return self.cache.activations(prompts, self.layer, sites, neurons=neurons)
        subset = {self.layer: neurons} if neurons is not None and "neurons" in sites else None
        captured = capture_activations(
            self.model, self.tokenizer, list(prompts), [self.layer], sites=sites, neuron_subset=subset, **self.options
        )
        return {site: captured.site(site)[self.layer] for site in sites}

    def second_moment(self, texts: Sequence[str], site: str, neurons: Tensor | None = None) -> SecondMoments:
        """Return the second moment of ``site`` at this layer over every token of ``texts``."""
        if self.cache is not None:
            return self.cache.second_moment(texts, self.layer, site, neurons=neurons)
        subset = {self.layer: neurons} if neurons is not None else None
        return accumulate_second_moments(
            self.model, self.tokenizer, list(texts), [self.layer], site=site, neuron_subset=subset, **self.options
        )[self.layer]
