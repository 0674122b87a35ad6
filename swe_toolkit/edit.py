"""The sparse low-rank weight edit: apply, revert, save, load and export.

An edit changes, at each of its layers, only the weights of a set of MLP neurons: their rows of
the input projections (input side) or their columns of the output projection (output side). The
change is stored as low-rank factors ``left @ right``. Applying an edit keeps an exact copy of the
original rows in memory so that :meth:`SparseEdit.revert` restores them bit for bit.

Each layer edit carries a fingerprint of the original rows: the SHA-256 of the rows rounded to
bfloat16. Rounding makes the fingerprint agree between a float32 model on the CPU and the same
checkpoint loaded in bfloat16 on a GPU, while any real change of the weights (another model,
another edit already applied) still alters it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import ConfigurationError, EditStateError, ShapeError
from .models.adapters import LayerMLP, WeightView, get_adapter

logger = logging.getLogger(__name__)

EDIT_FORMAT = "swe_toolkit.sparse_edit"
EDIT_FORMAT_VERSION = 1
Side = Literal["input", "output"]


def fingerprint_rows(views: Sequence[WeightView], neurons: Tensor) -> str:
    """Return the SHA-256 hex digest of the neurons' weights in ``views``, rounded to bfloat16.

    The digest covers each view's name, the canonical-orientation slice shape and its values.
    """
    digest = hashlib.sha256()
    for view in views:
        block = view.neuron_slice(neurons).detach()
        digest.update(view.name.encode())
        digest.update(str(tuple(block.shape)).encode())
        rounded = block.to(device="cpu", dtype=torch.bfloat16).contiguous()
        digest.update(rounded.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def edited_views(layer: LayerMLP, side: Side) -> tuple[WeightView, ...]:
    """Return the weights an edit of ``side`` changes at ``layer``."""
    if side == "input":
        return layer.inputs
    if side == "output":
        return (layer.output,)
    raise ConfigurationError(f"edit side {side!r} is invalid; use 'input' or 'output'")


@dataclass
class LayerEdit:
    """The change of one layer's safety-neuron weights, as low-rank factors.

    Attributes:
        layer: decoder layer index.
        side: ``"input"`` edits rows ``neurons`` of every input projection (gate and up, or the
            single one); ``"output"`` edits columns ``neurons`` of the output projection.
        neurons: ``(k,)`` int64 neuron indices.
        left: input side ``(P * k, r)`` with P input projections, blocks of k rows stacked in
            projection order; output side ``(d_model, r)``.
        right: ``(r, d_model)`` on the input side, ``(r, k)`` on the output side.
        projections: names of the edited modules, in order.
        fingerprint: :func:`fingerprint_rows` of the original weights.
    """

    layer: int
    side: Side
    neurons: Tensor
    left: Tensor
    right: Tensor
    projections: tuple[str, ...]
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.side not in ("input", "output"):
            raise ConfigurationError(f"edit side {self.side!r} is invalid; use 'input' or 'output'")
        if self.left.ndim != 2 or self.right.ndim != 2 or self.left.shape[1] != self.right.shape[0]:
            raise ShapeError(
                f"low-rank factors must be (a, r) and (r, b), got {tuple(self.left.shape)} and "
                f"{tuple(self.right.shape)}"
            )
        self.neurons = self.neurons.to(torch.int64).flatten()

    @property
    def rank(self) -> int:
        """Inner dimension of the factors (the rank of the change, at most)."""
        return int(self.left.shape[1])

    def delta(self) -> Tensor:
        """Return the dense change ``left @ right`` in float64 on the factors' device."""
        return self.left.to(torch.float64) @ self.right.to(torch.float64)

    def delta_blocks(self) -> list[Tensor]:
        """Split :meth:`delta` into one canonical-orientation block per edited projection."""
        full = self.delta()
        if self.side == "output":
            return [full]
        k = self.neurons.numel()
        expected = k * len(self.projections)
        if full.shape[0] != expected:
            raise ShapeError(
                f"input-side delta has {full.shape[0]} rows; expected {k} neurons x "
                f"{len(self.projections)} projections = {expected}"
            )
        return list(full.split(k, dim=0))


class SparseEdit:
    """A sparse low-rank edit of one or more layers of a model.

    Use :meth:`apply` and :meth:`revert`, or the :meth:`applied` context manager. An edit object
    tracks its own state: applying it twice raises :class:`EditStateError`, and so does applying it
    to a model whose original rows differ from the fingerprint.
    """

    def __init__(
        self,
        layers: Sequence[LayerEdit],
        *,
        model_id: str = "",
        hyperparameters: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not layers:
            raise ConfigurationError("an edit needs at least one layer edit")
        keys = [(edit.layer, edit.side) for edit in layers]
        if len(set(keys)) != len(keys):
            raise ConfigurationError(f"layer edits repeat a (layer, side) pair: {keys}")
        self.layers: list[LayerEdit] = list(layers)
        self.model_id = model_id
        self.hyperparameters = dict(hyperparameters or {})
        self.metadata = dict(metadata or {})
        self._snapshots: list[list[Tensor]] | None = None
        self._model_ref: int | None = None

    def __repr__(self) -> str:
        state = "applied" if self.is_applied else "not applied"
        return f"SparseEdit({self.describe()}; {state})"

    def describe(self) -> str:
        """Return the layers, sides, neuron counts, ranks and model id, without the applied state."""
        parts = ", ".join(
            f"L{e.layer}/{e.side}: {e.neurons.numel()} neurons, rank {e.rank}" for e in self.layers
        )
        return f"{parts}; model={self.model_id!r}"

    @property
    def is_applied(self) -> bool:
        """Whether this object has applied its change to a model and not reverted it."""
        return self._snapshots is not None

    @property
    def num_parameters_changed(self) -> int:
        """Number of weight entries the edit changes."""
        return sum(block.numel() for edit in self.layers for block in edit.delta_blocks())

    def _views(self, model: nn.Module) -> list[tuple[LayerEdit, tuple[WeightView, ...]]]:
        adapter = get_adapter(model)
        result = []
        for edit in self.layers:
            views = edited_views(adapter.layer(edit.layer), edit.side)
            names = tuple(view.name for view in views)
            if names != edit.projections:
                raise EditStateError(
                    f"layer {edit.layer} edit targets modules {edit.projections} but the model has "
                    f"{names}; load the edit onto the architecture it was fitted on"
                )
            result.append((edit, views))
        return result

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EditStateError` unless ``model``'s original rows match the fingerprints."""
        for edit, views in self._views(model):
            found = fingerprint_rows(views, edit.neurons)
            if found != edit.fingerprint:
                raise EditStateError(
                    f"layer {edit.layer} {edit.side}-side weights of the model do not match the "
                    f"edit's fingerprint ({found[:12]} != {edit.fingerprint[:12]}): the model "
                    f"differs from {self.model_id or 'the one the edit was fitted on'} or is "
                    "already edited; revert other edits or load the original model"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> SparseEdit:
        """Add the change to the model's weights in place; return ``self``.

        The sum is formed in float64 and rounded once to the parameter dtype.
        """
        if self._snapshots is not None:
            raise EditStateError("this edit is already applied; revert it before applying it again")
        self.check_model(model)
        snapshots: list[list[Tensor]] = []
        for edit, views in self._views(model):
            saved = []
            for view, block in zip(views, edit.delta_blocks(), strict=True):
                original = view.neuron_slice(edit.neurons).detach().clone()
                saved.append(original)
                updated = original.to(torch.float64) + block.to(original.device)
                view.write_neuron_slice(edit.neurons, updated.to(original.dtype))
            snapshots.append(saved)
        self._snapshots = snapshots
        self._model_ref = id(model)
        logger.info("applied %r", self)
        return self

    @torch.no_grad()
    def revert(self, model: nn.Module) -> None:
        """Restore the rows saved by :meth:`apply`, bit for bit."""
        if self._snapshots is None:
            raise EditStateError("this edit is not applied, so there is nothing to revert")
        if self._model_ref != id(model):
            raise EditStateError("revert the edit on the same model object it was applied to")
        for (edit, views), saved in zip(self._views(model), self._snapshots, strict=True):
            for view, original in zip(views, saved, strict=True):
                view.write_neuron_slice(edit.neurons, original)
        self._snapshots = None
        self._model_ref = None
        logger.info("reverted %r", self)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Apply the edit for the duration of a ``with`` block, reverting it even on error."""
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    # --- persistence -------------------------------------------------------------------------

    def to_metadata(self) -> dict[str, Any]:
        """Return the JSON-serialisable description stored next to the tensors."""
        from . import __version__

        return {
            "format": EDIT_FORMAT,
            "format_version": EDIT_FORMAT_VERSION,
            "swe_toolkit_version": __version__,
            "model_id": self.model_id,
            "hyperparameters": self.hyperparameters,
            "metadata": self.metadata,
            "layers": [
                {
                    "layer": edit.layer,
                    "side": edit.side,
                    "projections": list(edit.projections),
                    "fingerprint": edit.fingerprint,
                    "rank": edit.rank,
                    "num_neurons": int(edit.neurons.numel()),
                    "info": edit.info,
                }
                for edit in self.layers
            ],
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the edit as one safetensors file with JSON metadata, atomically.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        tensors: dict[str, Tensor] = {}
        for i, edit in enumerate(self.layers):
            tensors[f"edits.{i}.neurons"] = edit.neurons.detach().cpu().contiguous()
            tensors[f"edits.{i}.left"] = edit.left.detach().cpu().contiguous()
            tensors[f"edits.{i}.right"] = edit.right.detach().cpu().contiguous()
        header = {"swe_toolkit": json.dumps(self.to_metadata(), ensure_ascii=False)}
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        os.close(handle)
        try:
            save_file(tensors, temporary, metadata=header)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        logger.info("saved edit to %s", target)
        return target

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        model: nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> SparseEdit:
        """Read an edit written by :meth:`save`.

        When ``model`` is given, its rows are checked against the fingerprints and a mismatch
        raises :class:`EditStateError`.
        """
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"edit file {source} not found")
        from safetensors import safe_open

        with safe_open(str(source), framework="pt") as handle:
            header = handle.metadata() or {}
        if "swe_toolkit" not in header:
            raise ConfigurationError(
                f"{source} is a safetensors file without swe_toolkit edit metadata; "
                "pass a file written by SparseEdit.save"
            )
        meta = json.loads(header["swe_toolkit"])
        if meta.get("format") != EDIT_FORMAT or meta.get("format_version") != EDIT_FORMAT_VERSION:
            raise ConfigurationError(
                f"{source} has format {meta.get('format')!r} version {meta.get('format_version')}; "
                f"this release reads {EDIT_FORMAT!r} version {EDIT_FORMAT_VERSION}"
            )
        tensors = load_file(str(source), device=str(device))
        layers = [
            LayerEdit(
                layer=int(entry["layer"]),
                side=entry["side"],
                neurons=tensors[f"edits.{i}.neurons"],
                left=tensors[f"edits.{i}.left"],
                right=tensors[f"edits.{i}.right"],
                projections=tuple(entry["projections"]),
                fingerprint=entry["fingerprint"],
                info=entry.get("info", {}),
            )
            for i, entry in enumerate(meta["layers"])
        ]
        edit = cls(
            layers,
            model_id=meta.get("model_id", ""),
            hyperparameters=meta.get("hyperparameters", {}),
            metadata=meta.get("metadata", {}),
        )
        if model is not None:
            edit.check_model(model)
        return edit

    def export_merged(
        self,
        model: nn.Module,
        out_dir: str | os.PathLike[str],
        *,
        tokenizer: Any = None,
        overwrite: bool = False,
    ) -> Path:
        """Save the model with the edit merged into its weights, as a ``save_pretrained`` folder.

        The folder is written under a temporary name beside ``out_dir`` and renamed into place,
        so a failure leaves no half-written model. The edit's description is stored in
        ``swe_toolkit_edit.json`` inside the folder. If the edit was not applied, it is applied
        for the export and reverted afterwards.
        """
        target = Path(out_dir)
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise FileExistsError(f"{target} exists and is not empty; pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            context = contextlib.nullcontext() if self.is_applied else self.applied(model)
            with context:
                model.save_pretrained(staging, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            description = self.to_metadata()
            description["exported"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
            (staging / "swe_toolkit_edit.json").write_text(
                json.dumps(description, indent=2, ensure_ascii=False), encoding="utf-8"
            )
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("exported merged model to %s", target)
        return target


def make_layer_edit(
    layer: LayerMLP,
    side: Side,
    neurons: Tensor,
    left: Tensor,
    right: Tensor,
    info: dict[str, Any] | None = None,
) -> LayerEdit:
    """Build a :class:`LayerEdit` for ``layer``, fingerprinting the model's current weights."""
    views = edited_views(layer, side)
    neurons = neurons.to(torch.int64).flatten()
    return LayerEdit(
        layer=layer.index,
        side=side,
        neurons=neurons.detach().cpu(),
        left=left.detach(),
        right=right.detach(),
        projections=tuple(view.name for view in views),
        fingerprint=fingerprint_rows(views, neurons.to(views[0].weight.device)),
        info=dict(info or {}),
    )
