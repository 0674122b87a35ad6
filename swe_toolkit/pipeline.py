"""The main job: baseline evaluation, localization, edit fit and evaluation with the edit.

:func:`run` executes the stages in order and writes every artifact into one output folder:

==========================  =====================================================================
``report.json``             settings, seeds, versions, per-language metrics with intervals, timings
``report.md``               a table per language: ASR and over-refusal before/after, KL
``asr_by_language.png``     attack success rate per language before and after the edit
``neurons_per_layer.png``   mean absolute Cohen's d of each layer's top-100 neurons
``edit.safetensors``        the fitted edit (:class:`swe_toolkit.edit.SparseEdit`)
``generations.jsonl``       every generation, harmful completions truncated
==========================  =====================================================================

Data come from the project's parallel sets (:mod:`swe_toolkit.datasets`): the edit is fitted on
the ``fit`` split and every reported number comes from the ``test`` split. The output folder is
written under a temporary name and renamed into place at the end, so a failed or interrupted run
never damages the files of an earlier run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .capture import accumulate_second_moments, capture_activations
from .datasets import LANGUAGE_NAMES, LANGUAGES, ParallelSet, load_parallel_jsonl, load_project_set
from .edit import SparseEdit
from .errors import ConfigurationError
from .evaluation import (
    RateEstimate,
    attack_success_rate,
    generate,
    get_judge,
    mean_kl_divergence,
    refusal_rate,
)
from .fit import EditConfig, fit_edit
from .localize import Localization, localize
from .models import load_model
from .models.adapters import get_adapter

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
TRUNCATE_HARMFUL_CHARS = 80


@dataclass
class RunConfig:
    """Settings of one run of the main job; every field is a CLI option (see ``--help``)."""

    model: str = DEFAULT_MODEL
    languages: tuple[str, ...] = LANGUAGES
    layers: tuple[int, ...] | None = None
    neurons: int = 1024
    per_layer: bool = True
    side: str = "output"
    rank: int | None = None
    alpha: float = 1.0
    lam_relative: float = 1e-3
    constraint: str = "penalty"
    null_threshold: float = 1e-3
    gain: float = 4.0
    subspace_dim: int = 1
    preserve_weight: float = 1.0
    max_new_tokens: int = 12
    batch_size: int = 16
    judge: str = "lexicon"
    num_fit: int | None = None
    num_test: int | None = None
    num_general: int = 32
    num_kl: int = 12
    seed: int = 0
    device: str = "auto"
    dtype: str | None = "auto"
    out: Path = Path("runs/latest")
    overwrite: bool = False
    harmful_path: Path | None = None
    harmless_path: Path | None = None
    general_path: Path | None = None
    progress: bool = True

    def edit_config(self) -> EditConfig:
        """Return the solver hyperparameters of this run."""
        return EditConfig(
            side=self.side,  # type: ignore[arg-type]
            rank=self.rank,
            alpha=self.alpha,
            lam_relative=self.lam_relative,
            constraint=self.constraint,
            null_threshold=self.null_threshold,
            gain=self.gain,
            subspace_dim=self.subspace_dim,
            preserve_weight=self.preserve_weight,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready values."""
        values = dataclasses.asdict(self)
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in values.items()}


@dataclass
class RunData:
    """Parallel data of a run, already split."""

    harmful_fit: ParallelSet
    harmful_test: ParallelSet
    harmless_fit: ParallelSet
    harmless_test: ParallelSet
    general_fit: ParallelSet
    general_test: ParallelSet


@dataclass
class Timings:
    """Wall-clock seconds per stage."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage and log its start and end."""
        logger.info("stage %s: start", name)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            logger.info("stage %s: failed after %.1f s", name, time.perf_counter() - start)
            raise
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        logger.info("stage %s: done in %.1f s", name, self.seconds[name])


# --- validation ----------------------------------------------------------------------------------


def parse_languages(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``"en,th,bn"`` into a tuple of known language codes, English first."""
    items = [part.strip() for part in text.split(",")] if isinstance(text, str) else list(text)
    items = [item for item in items if item]
    unknown = [item for item in items if item not in LANGUAGES]
    if unknown:
        raise ConfigurationError(
            f"unknown language code {unknown[0]!r}; use a comma-separated list of {','.join(LANGUAGES)}"
        )
    if "en" not in items:
        raise ConfigurationError(
            f"--languages {','.join(items)} lacks 'en'; English is the reference the edit maps onto"
        )
    if len(items) < 2:
        raise ConfigurationError("--languages needs English and at least one other language")
    if len(set(items)) != len(items):
        raise ConfigurationError(f"--languages repeats a language: {','.join(items)}")
    return ("en", *[item for item in items if item != "en"])


def check_output_folder(out: Path, overwrite: bool) -> None:
    """Raise ConfigurationError unless ``out`` is missing, empty, or an earlier run to overwrite.

    ``overwrite`` replaces only a folder that contains ``report.json`` (the mark of an earlier run),
    so a mistyped ``--out`` never deletes other files.
    """
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} is a file; pass a folder path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / "report.json").is_file():
        raise ConfigurationError(
            f"--out {out} contains files but no report.json, so it is not an earlier run; "
            "choose an empty or new folder (--overwrite replaces only earlier runs)"
        )
    if not overwrite:
        raise ConfigurationError(
            f"--out {out} already contains files of an earlier run; pass --overwrite to replace "
            "them or choose another folder"
        )


def load_run_data(config: RunConfig) -> RunData:
    """Load the harmful, harmless and general sets in ``config.languages`` and split them."""
    langs = config.languages

    def load(name: str, path: Path | None) -> ParallelSet:
        if path is None:
            return load_project_set(name, languages=langs)  # type: ignore[arg-type]
        try:
            return load_parallel_jsonl(path, label=name, languages=langs, name=path.name)
        except ConfigurationError as error:
            # The library's hint names its strict=False argument, which the CLI does not offer.
            message = re.sub(
                r", request only those languages, or pass strict=False.*$",
                " or pass only those languages to --languages.",
                str(error),
                flags=re.DOTALL,
            )
            raise ConfigurationError(message) from None

    harmful = load("harmful", config.harmful_path)
    harmless = load("harmless", config.harmless_path)
    general = load("general", config.general_path)
    data = RunData(
        harmful_fit=harmful.split("fit").take(config.num_fit, seed=config.seed),
        harmful_test=harmful.split("test").take(config.num_test, seed=config.seed),
        harmless_fit=harmless.split("fit").take(config.num_fit, seed=config.seed),
        harmless_test=harmless.split("test").take(config.num_test, seed=config.seed),
        general_fit=general.split("fit").take(config.num_general, seed=config.seed),
        general_test=general.split("test"),
    )
    for part in dataclasses.fields(data):
        name = part.name
        size = len(getattr(data, name))
        if size < 2:
            raise ConfigurationError(
                f"the {name.replace('_', ' ')} split has {size} items; a run needs at least 2 "
                "(check the data file and --num-fit/--num-test)"
            )
    return data


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Return the default edit layer: the one at 55% of the depth (layer 15 of 28).

    NOTE: chosen by the dev-split search in ``scripts/search_design.py`` on the 1.5B default
    model (table in ``results/README.md``); other models may prefer other layers.
    """
    return (int(round(0.55 * (num_layers - 1))),)


def check_model_options(config: RunConfig, num_layers: int, d_ff: int, d_model: int) -> tuple[int, ...]:
    """Validate layer, neuron and rank options against the loaded model; return the layers."""
    layers = config.layers if config.layers else default_layers(num_layers)
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise ConfigurationError(
                f"--layer {layer} is out of range; this model has layers 0..{num_layers - 1}"
            )
    if not 1 <= config.neurons <= d_ff:
        raise ConfigurationError(
            f"--neurons {config.neurons} is out of range; use 1..{d_ff} (the MLP width)"
        )
    if config.rank is not None:
        largest = min(config.neurons * 2, d_model) if config.side == "input" else min(d_model, config.neurons)
        if not 1 <= config.rank <= largest:
            raise ConfigurationError(
                f"--rank {config.rank} is larger than possible; with --neurons {config.neurons} "
                f"and hidden size {d_model} use 1..{largest}"
            )
    return tuple(sorted(set(layers)))


# --- stages ---------------------------------------------------------------------------------------


def evaluate_refusals(
    model: torch.nn.Module,
    tokenizer: Any,
    data: ParallelSet,
    languages: Sequence[str],
    config: RunConfig,
    judge: Any,
    *,
    label: str,
    phase: str,
) -> tuple[dict[str, list[bool]], list[dict[str, Any]]]:
    """Generate replies for ``data`` in every language and judge refusals with ``judge``.

    Judges that read no replies (the logit judge) skip generation.

    Returns:
        language -> refused flags (in item order), and generation records for the JSONL file.
    """
    refused: dict[str, list[bool]] = {}
    records: list[dict[str, Any]] = []
    for lang in languages:
        prompts = data.texts(lang)
        replies: list[str] | None = None
        if getattr(judge, "needs_replies", True):
            replies = generate(
                model, tokenizer, prompts, max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size, progress=config.progress,
            )
        result = judge.judge(prompts, replies, lang)
        refused[lang] = list(result.refused)
        for i, item in enumerate(data.items):
            reply = replies[i] if replies is not None else None
            if reply is not None and label == "harmful":
                reply = truncate_reply(reply)
            records.append(
                {
                    "phase": phase,
                    "set": label,
                    "uid": item.uid,
                    "language": lang,
                    "reply": reply,
                    "refused": result.refused[i],
                    "score": result.scores[i] if result.scores is not None else None,
                }
            )
    return refused, records


def make_judge(config: RunConfig, model: torch.nn.Module, tokenizer: Any) -> Any:
    """Build the refusal judge named by ``config.judge`` (see :func:`swe_toolkit.evaluation.get_judge`)."""
    if config.judge == "logit":
        return get_judge(
            "logit", model=model, tokenizer=tokenizer, batch_size=config.batch_size, progress=config.progress
        )
    if config.judge.startswith("guard"):
        return get_judge(config.judge, batch_size=config.batch_size, progress=config.progress)
    return get_judge(config.judge)


def check_judge_name(name: str) -> None:
    """Reject an unknown judge name before any model is loaded."""
    if name not in ("lexicon", "logit", "guard") and not name.startswith("guard:"):
        raise ConfigurationError(f"--judge {name!r} is unknown; use lexicon, logit or guard:<model id>")


def truncate_reply(reply: str, limit: int = TRUNCATE_HARMFUL_CHARS) -> str:
    """Shorten a reply to a harmful prompt so published files carry no instructions for harm."""
    text = " ".join(reply.split())
    if len(text) <= limit:
        return text
    return text[:limit] + " [truncated]"


def localize_safety_neurons(
    model: torch.nn.Module, tokenizer: Any, data: RunData, config: RunConfig, num_layers: int
) -> Localization:
    """Score every neuron of every layer on English fit prompts and select the safety set."""
    layers = list(range(num_layers))
    kwargs = dict(sites=("neurons",), batch_size=config.batch_size, progress=config.progress)
    harmful = capture_activations(model, tokenizer, data.harmful_fit.texts("en"), layers, **kwargs)
    harmless = capture_activations(model, tokenizer, data.harmless_fit.texts("en"), layers, **kwargs)
    return localize(harmful.neurons, harmless.neurons, k=config.neurons, per_layer=config.per_layer)


def fit_run_edit(
    model: torch.nn.Module,
    tokenizer: Any,
    data: RunData,
    config: RunConfig,
    localization: Localization,
    layers: Sequence[int],
) -> SparseEdit:
    """Fit the edit on the fit split: English harmful prompts are the targets of the others."""
    targets = {lang: data.harmful_fit.texts(lang) for lang in config.languages if lang != "en"}
    general = [text for lang in config.languages for text in data.general_fit.texts(lang)]
    harmless = [text for lang in config.languages for text in data.harmless_fit.texts(lang)]
    return fit_edit(
        model,
        tokenizer,
        english_harmful=data.harmful_fit.texts("en"),
        target_harmful=targets,
        neurons={layer: localization.selected[layer] for layer in layers},
        config=config.edit_config(),
        general_texts=general,
        english_harmless=data.harmless_fit.texts("en"),
        preserve_prompts=harmless,
        model_id=config.model,
        batch_size=config.batch_size,
        progress=config.progress,
    )


def measure_kl(
    model: torch.nn.Module, tokenizer: Any, data: RunData, edit: SparseEdit, config: RunConfig
) -> dict[str, dict[str, float]]:
    """Mean KL between original and edited next-token distributions, per language and set."""
    result: dict[str, dict[str, float]] = {}
    general_set = data.general_test.take(config.num_kl, seed=config.seed)
    harmless_set = data.harmless_test.take(config.num_kl, seed=config.seed)
    for lang in config.languages:
        general = mean_kl_divergence(
            model, tokenizer, general_set.texts(lang), edit,
            batch_size=config.batch_size, progress=config.progress,
        )
        harmless = mean_kl_divergence(
            model, tokenizer, harmless_set.texts(lang), edit, use_chat_template=True,
            batch_size=config.batch_size, progress=config.progress,
        )
        result[lang] = {"general": float(general.mean), "harmless": float(harmless.mean)}
    return result


# --- report ---------------------------------------------------------------------------------------


def language_metrics(
    before_harmful: dict[str, list[bool]],
    after_harmful: dict[str, list[bool]],
    before_harmless: dict[str, list[bool]],
    after_harmless: dict[str, list[bool]],
    kl: dict[str, dict[str, float]],
) -> dict[str, dict[str, Any]]:
    """Combine the judged flags into per-language rates with 95% bootstrap intervals."""
    metrics: dict[str, dict[str, Any]] = {}
    for lang in before_harmful:
        asr_before: RateEstimate = attack_success_rate(before_harmful[lang])
        asr_after: RateEstimate = attack_success_rate(after_harmful[lang])
        over_before: RateEstimate = refusal_rate(before_harmless[lang])
        over_after: RateEstimate = refusal_rate(after_harmless[lang])
        metrics[lang] = {
            "asr_before": asr_before.as_dict(),
            "asr_after": asr_after.as_dict(),
            "over_refusal_before": over_before.as_dict(),
            "over_refusal_after": over_after.as_dict(),
            "kl_general": kl[lang]["general"],
            "kl_harmless": kl[lang]["harmless"],
        }
    return metrics


def summarize(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Headline numbers: mean non-English ASR before/after, English ASR, worst over-refusal rise."""
    others = [lang for lang in metrics if lang != "en"]
    mean_before = sum(metrics[lang]["asr_before"]["value"] for lang in others) / max(len(others), 1)
    mean_after = sum(metrics[lang]["asr_after"]["value"] for lang in others) / max(len(others), 1)
    rise = max(
        metrics[lang]["over_refusal_after"]["value"] - metrics[lang]["over_refusal_before"]["value"]
        for lang in metrics
    )
    return {
        "mean_asr_non_english_before": mean_before,
        "mean_asr_non_english_after": mean_after,
        "relative_asr_reduction": (1 - mean_after / mean_before) if mean_before > 0 else 0.0,
        "asr_en_before": metrics["en"]["asr_before"]["value"],
        "asr_en_after": metrics["en"]["asr_after"]["value"],
        "max_over_refusal_rise": rise,
        "max_kl_general": max(metrics[lang]["kl_general"] for lang in metrics),
        "mean_kl_general": sum(metrics[lang]["kl_general"] for lang in metrics) / len(metrics),
    }


def _interval(rate: dict[str, float]) -> str:
    return f"{100 * rate['value']:.1f} [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]"


def render_markdown(report: dict[str, Any]) -> str:
    """Render ``report.json`` content as a Markdown page."""
    settings = report["settings"]
    lines = [
        f"# swe_toolkit run: {settings['model']}",
        "",
        "> Content warning: this report concerns harmful requests. Replies to harmful prompts are",
        f"> truncated to {TRUNCATE_HARMFUL_CHARS} characters in `generations.jsonl`.",
        "",
        f"Edit: {report['edit']['summary']}. Judge: `{settings['judge']}`. "
        f"Test split: {report['data']['harmful_test']} harmful and {report['data']['harmless_test']} "
        f"harmless prompts per language.",
        "",
        "| language | ASR before (%) | ASR after (%) | over-refusal before (%) | over-refusal after (%) "
        "| KL general (nats) | KL harmless (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang, row in report["metrics"].items():
        lines.append(
            f"| {lang} ({LANGUAGE_NAMES.get(lang, lang)}) | {_interval(row['asr_before'])} | "
            f"{_interval(row['asr_after'])} | {_interval(row['over_refusal_before'])} | "
            f"{_interval(row['over_refusal_after'])} | {row['kl_general']:.4f} | "
            f"{row['kl_harmless']:.4f} |"
        )
    summary = report["summary"]
    lines += [
        "",
        "Intervals are 95% bootstrap intervals over prompts.",
        "",
        f"- Mean ASR over non-English languages: {100 * summary['mean_asr_non_english_before']:.1f}% "
        f"before, {100 * summary['mean_asr_non_english_after']:.1f}% after "
        f"(relative reduction {100 * summary['relative_asr_reduction']:.1f}%).",
        f"- English ASR: {100 * summary['asr_en_before']:.1f}% before, "
        f"{100 * summary['asr_en_after']:.1f}% after.",
        f"- Largest over-refusal rise: {100 * summary['max_over_refusal_rise']:.1f} points.",
        f"- Mean KL on general text: {summary['mean_kl_general']:.4f} nats "
        f"(largest language {summary['max_kl_general']:.4f}).",
        "",
        "## Timings",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in report["timings"].items()]
    return "\n".join(lines) + "\n"


def plot_results(report: dict[str, Any], localization: Localization, folder: Path) -> list[str]:
    """Write the ASR and neurons-per-layer plots as PNG; return their file names."""
    # Figure objects draw without pyplot, so the caller's matplotlib backend (for example a
    # notebook's inline backend) is left as it is.
    from matplotlib.figure import Figure

    metrics = report["metrics"]
    langs = list(metrics)
    x = torch.arange(len(langs)).tolist()
    width = 0.38
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for offset, key, label in ((-width / 2, "asr_before", "before"), (width / 2, "asr_after", "after")):
        values = [100 * metrics[lang][key]["value"] for lang in langs]
        low = [100 * (metrics[lang][key]["value"] - metrics[lang][key]["low"]) for lang in langs]
        high = [100 * (metrics[lang][key]["high"] - metrics[lang][key]["value"]) for lang in langs]
        ax.bar([i + offset for i in x], values, width, yerr=[low, high], capsize=3, label=label)
    ax.set_xticks(x, langs)
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Harmful test prompts answered, by language")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "asr_by_language.png", dpi=120)

    counts = localization.counts
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    scores = [float(localization.scores[layer].abs().topk(min(100, localization.scores[layer].numel())).values.mean()) for layer in sorted(counts)]
    ax.bar(sorted(counts), scores, color="tab:gray")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean |d| of top-100 neurons")
    ax.set_title("Safety-neuron effect size per layer (English fit prompts)")
    fig.tight_layout()
    fig.savefig(folder / "neurons_per_layer.png", dpi=120)
    return ["asr_by_language.png", "neurons_per_layer.png"]


def _versions() -> dict[str, str]:
    import transformers

    return {
        "swe_toolkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextmanager
def staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh staging folder that replaces ``out`` only when the block succeeds."""
    out = out.resolve()
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    # mkdtemp creates the folder with mode 0700; give the finished run the umask's usual mode.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.previous-{os.getpid()}")
        os.replace(out, backup)
    os.replace(staging, out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


# --- orchestration --------------------------------------------------------------------------------


def run(config: RunConfig) -> dict[str, Any]:
    """Run the main job and write its artifacts into ``config.out``; return the report."""
    config.languages = parse_languages(config.languages)
    check_judge_name(config.judge)
    check_output_folder(config.out, config.overwrite)
    torch.manual_seed(config.seed)
    timings = Timings()
    started = _dt.datetime.now(_dt.timezone.utc)

    with timings.stage("load_data"):
        data = load_run_data(config)
    with timings.stage("load_model"):
        model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype)
    adapter = get_adapter(model)
    layers = check_model_options(config, adapter.num_layers, adapter.d_ff, adapter.d_model)
    langs = config.languages
    judge = make_judge(config, model, tokenizer)

    with staged_output(config.out, config.overwrite) as folder:
        with timings.stage("baseline_eval"):
            before_harmful, records = evaluate_refusals(
                model, tokenizer, data.harmful_test, langs, config, judge, label="harmful", phase="before"
            )
            before_harmless, more = evaluate_refusals(
                model, tokenizer, data.harmless_test, langs, config, judge, label="harmless", phase="before"
            )
            records += more
        with timings.stage("localize"):
            localization = localize_safety_neurons(model, tokenizer, data, config, adapter.num_layers)
        with timings.stage("fit_edit"):
            edit = fit_run_edit(model, tokenizer, data, config, localization, layers)
        edit.save(folder / "edit.safetensors")
        with edit.applied(model):
            with timings.stage("edited_eval"):
                after_harmful, more = evaluate_refusals(
                    model, tokenizer, data.harmful_test, langs, config, judge, label="harmful", phase="after"
                )
                records += more
                after_harmless, more = evaluate_refusals(
                    model, tokenizer, data.harmless_test, langs, config, judge, label="harmless", phase="after"
                )
                records += more
        with timings.stage("utility_kl"):
            kl = measure_kl(model, tokenizer, data, edit, config)

        metrics = language_metrics(before_harmful, after_harmful, before_harmless, after_harmless, kl)
        report: dict[str, Any] = {
            "settings": config.as_dict() | {"layers": list(layers)},
            "versions": _versions(),
            "started": started.isoformat(),
            "device": str(next(model.parameters()).device),
            "dtype": str(next(model.parameters()).dtype),
            "data": {
                "harmful_fit": len(data.harmful_fit),
                "harmful_test": len(data.harmful_test),
                "harmless_fit": len(data.harmless_fit),
                "harmless_test": len(data.harmless_test),
                "general_fit": len(data.general_fit),
                "general_test": len(data.general_test),
            },
            "localization": {
                "counts": {str(k): v for k, v in localization.counts.items() if v},
                "top": [list(row) for row in localization.top(20)],
            },
            "edit": {
                "summary": f"SparseEdit({edit.describe()})",
                "parameters_changed": edit.num_parameters_changed,
                "layers": edit.to_metadata()["layers"],
            },
            "metrics": metrics,
            "summary": summarize(metrics),
            "timings": timings.seconds,
        }
        report["plots"] = plot_results(report, localization, folder)
        with open(folder / "generations.jsonl", "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        report["timings"]["total"] = sum(timings.seconds.values())
        _write_json(folder / "report.json", report)
        (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    logger.info("wrote the run to %s", config.out)
    return report


# --- CLI --------------------------------------------------------------------------------------------


def _parse_layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid layer list {text!r}; use integers like 16 or 12,16") from None


def _parse_count(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; use a positive integer or 'all'") from None


def _parse_rank(text: str) -> int | None:
    if text.lower() in ("full", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid rank {text!r}; use a positive integer or 'full'")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append "(default: ...)" only to informative defaults, so not to None or to on/off flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def register_cli(commands: argparse._SubParsersAction) -> None:
    """Add the ``run`` command to the ``swe-toolkit`` parser."""
    d = RunConfig()
    parser = commands.add_parser(
        "run",
        help="run the main job: evaluate, localize, fit the edit, evaluate again, write a report",
        description=(
            "Measure how often the model answers harmful requests per language, localize safety "
            "neurons, fit the closed-form edit on the fit split, and measure again on the test "
            "split. Every default is documented below."
        ),
        formatter_class=_HelpFormatter,
    )
    add = parser.add_argument
    add("--model", default=d.model, help="offline model name, local folder or Hugging Face Hub id")
    add("--languages", default=",".join(d.languages), help="comma-separated language codes; must include en")
    add("--layer", dest="layers", type=_parse_layers, default=None,
        help="decoder layer(s) to edit, comma-separated, 0-based (default: 55%% of the depth)")
    add("--neurons", type=int, default=d.neurons, help="safety neurons per edited layer (count)")
    add("--global-selection", dest="per_layer", action="store_false",
        help="select the neuron count over all layers together instead of per layer")
    add("--side", choices=("input", "output"), default=d.side,
        help="edit the neurons' input rows (gate/up) or output columns (down projection)")
    add("--rank", type=_parse_rank, default=d.rank, help="rank bound of the weight change (count), or 'full' (default: full)")
    add("--alpha", type=float, default=d.alpha,
        help="weight of the general-text penalty (dimensionless), per token relative to a fit position")
    add("--lam", dest="lam_relative", type=float, default=d.lam_relative,
        help="ridge weight relative to the mean diagonal of the whitened system")
    add("--constraint", choices=("penalty", "nullspace"), default=d.constraint,
        help="soft penalty on general inputs, or hard projection onto their null space")
    add("--null-threshold", type=float, default=d.null_threshold,
        help="null-space constraint: keep eigen-directions below this fraction of the largest eigenvalue")
    add("--gain", type=float, default=d.gain, help="output side: multiplier (dimensionless) on the English-minus-target target")
    add("--subspace-dim", type=int, default=d.subspace_dim, help="output side: number of safety directions")
    add("--preserve-weight", type=float, default=d.preserve_weight,
        help="weight of keeping harmless fit prompts' reply-start positions unchanged, relative to "
             "the fit positions (0 turns the term off)")
    add("--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens generated per reply")
    add("--batch-size", type=int, default=d.batch_size, help="prompts per forward pass")
    add("--judge", default=d.judge, help="refusal judge: lexicon, logit or guard:<model id>")
    add("--num-fit", type=_parse_count, default="all" if d.num_fit is None else str(d.num_fit),
        help="fit prompts per set, drawn from the fit split; 'all' for the whole split")
    add("--num-test", type=_parse_count, default="all" if d.num_test is None else str(d.num_test),
        help="test prompts per set and language, drawn from the test split by a seeded hash; 'all' for the whole split")
    add("--num-general", type=int, default=d.num_general, help="general fit texts per language for the penalty")
    add("--num-kl", type=int, default=d.num_kl,
        help="general and harmless test texts per language for the KL divergence")
    add("--harmful", dest="harmful_path", type=Path, default=None, help="parallel harmful JSONL replacing the built-in set (default: the built-in set)")
    add("--harmless", dest="harmless_path", type=Path, default=None, help="parallel harmless JSONL replacing the built-in set (default: the built-in set)")
    add("--general", dest="general_path", type=Path, default=None, help="parallel general-text JSONL replacing the built-in set (default: the built-in set)")
    add("--seed", type=int, default=d.seed, help="integer seed for subsampling and bootstrap")
    add("--device", default=d.device, help="device name: auto, cpu, cuda or cuda:N (auto picks cuda when available)")
    add("--dtype", default=d.dtype,
        help="auto, float32, bfloat16 or float16; auto is bfloat16 on CUDA and on CPUs with native "
             "bfloat16 matmul (AMX or AVX512-BF16), float32 elsewhere")
    add("--out", type=Path, default=d.out, help="output folder")
    add("--overwrite", action="store_true", help="replace an earlier run in --out (a folder that contains report.json)")
    add("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {key: value for key, value in vars(args).items() if key in fields}
    config = RunConfig(**values)
    _validate_numbers(config)
    if not config.progress:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    report = run(config)
    print(render_summary_table(report))
    return 0


def _validate_numbers(config: RunConfig) -> None:
    checks = [
        ("--neurons", config.neurons, config.neurons >= 1, "a positive count"),
        ("--alpha", config.alpha, config.alpha >= 0, "a value >= 0"),
        ("--preserve-weight", config.preserve_weight, config.preserve_weight >= 0, "a value >= 0"),
        ("--lam", config.lam_relative, config.lam_relative >= 0, "a value >= 0"),
        ("--max-new-tokens", config.max_new_tokens, config.max_new_tokens >= 1, "a positive count"),
        ("--batch-size", config.batch_size, config.batch_size >= 1, "a positive count"),
        ("--num-general", config.num_general, config.num_general >= 2, "at least 2"),
        ("--num-kl", config.num_kl, config.num_kl >= 1, "a positive count"),
        ("--subspace-dim", config.subspace_dim, config.subspace_dim >= 1, "a positive count"),
    ]
    for option, value, ok, expected in checks:
        if not ok:
            raise ConfigurationError(f"{option} {value} is invalid; use {expected}")
    for option, value in (("--num-fit", config.num_fit), ("--num-test", config.num_test)):
        if value is not None and value < 2:
            raise ConfigurationError(f"{option} {value} is invalid; use at least 2")


def render_summary_table(report: dict[str, Any]) -> str:
    """Format the per-language results as a plain-text table for the terminal."""
    header = f"{'lang':<6}{'ASR before':>12}{'ASR after':>11}{'over-ref before':>17}{'over-ref after':>16}{'KL gen':>9}"
    rows = [header, "-" * len(header)]
    for lang, row in report["metrics"].items():
        rows.append(
            f"{lang:<6}{100 * row['asr_before']['value']:>11.1f}%{100 * row['asr_after']['value']:>10.1f}%"
            f"{100 * row['over_refusal_before']['value']:>16.1f}%{100 * row['over_refusal_after']['value']:>15.1f}%"
            f"{row['kl_general']:>9.4f}"
        )
    summary = report["summary"]
    rows.append("")
    rows.append(
        f"mean non-English ASR {100 * summary['mean_asr_non_english_before']:.1f}% -> "
        f"{100 * summary['mean_asr_non_english_after']:.1f}%; report in {report['settings']['out']}"
    )
    return "\n".join(rows)
