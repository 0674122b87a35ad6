"""Search the edit's design space on the dev split and write a table of the results.

Every configuration is fitted on the fit split and scored on the dev split with the logit judge
(the probability that the reply starts as a refusal, one forward pass per prompt) and the mean KL
on general dev texts. Activations of single-layer configurations come from one cached capture
per language, so most configurations cost one solve and one evaluation pass.

Usage::

    python scripts/search_design.py --model qwen2.5-coder-1.5b-instruct --out results/search.jsonl

Results are appended to ``--out`` as JSON lines, one per configuration, so an interrupted search
keeps what it measured. ``--only NAME`` runs the named configurations.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from swe_toolkit.capture import SecondMoments, accumulate_second_moments, capture_activations
from swe_toolkit.datasets import LANGUAGES, load_project_set
from swe_toolkit.edit import SparseEdit
from swe_toolkit.evaluation import LexiconJudge, LogitJudge, generate, mean_kl_divergence
from swe_toolkit.fit import EditConfig, fit_edit, safety_directions, solve_input_side, solve_output_side
from swe_toolkit.localize import localize, score_neurons
from swe_toolkit.models import load_model
from swe_toolkit.models.adapters import get_adapter

logger = logging.getLogger("search_design")


def grid(num_layers: int, d_ff: int) -> list[dict]:
    """Configurations to try: name, layers, neuron count, edit settings, positions, fit size.

    ``p`` in a name is ``preserve_weight`` (the anchors on harmless prompts), ``g`` the gain.
    """
    mid = round(0.55 * (num_layers - 1))
    late = round(0.75 * (num_layers - 1))
    early = round(0.4 * (num_layers - 1))

    def out(gain: float, preserve: float, **kw) -> EditConfig:
        return EditConfig("output", kw.pop("rank", None), kw.pop("alpha", 1.0), kw.pop("lam", 1e-3), gain=gain,
                          preserve_weight=preserve, **kw)

    # The most informative configurations come first, so a run that is cut short keeps them.
    configs = [
        dict(name="out-mid-4096-g4-p0", layers=[mid], k=4096, cfg=out(4.0, 0.0)),
        dict(name="out-mid-4096-g4-p1", layers=[mid], k=4096, cfg=out(4.0, 1.0)),
        dict(name="out-mid-4096-g4-p4", layers=[mid], k=4096, cfg=out(4.0, 4.0)),
        dict(name="out-mid-4096-g8-p1", layers=[mid], k=4096, cfg=out(8.0, 1.0)),
        dict(name="out-mid-4096-g8-p4", layers=[mid], k=4096, cfg=out(8.0, 4.0)),
        dict(name="out-mid-dense-g4-p1", layers=[mid], k=d_ff, cfg=out(4.0, 1.0)),
        dict(name="out-mid-1024-g4-p1", layers=[mid], k=1024, cfg=out(4.0, 1.0)),
        dict(name="out-late-4096-g4-p1", layers=[late], k=4096, cfg=out(4.0, 1.0)),
        dict(name="out-early-4096-g4-p1", layers=[early], k=4096, cfg=out(4.0, 1.0)),
        dict(name="out-mid-1024-g6-p1", layers=[mid], k=1024, cfg=out(6.0, 1.0)),
        dict(name="out-mid-1024-g4-p4", layers=[mid], k=1024, cfg=out(4.0, 4.0)),
        dict(name="out-mid-1024-g4-p16", layers=[mid], k=1024, cfg=out(4.0, 16.0)),
        dict(name="out-mid-1024-g5-p16", layers=[mid], k=1024, cfg=out(5.0, 16.0)),
        dict(name="out-mid-1024-g6-p1-selall", layers=[mid], k=1024, cfg=out(6.0, 1.0), select="all"),
        dict(name="out-mid-1024-g4-p1-selall", layers=[mid], k=1024, cfg=out(4.0, 1.0), select="all"),
        dict(name="out-mid-2048-g6-p1-selall", layers=[mid], k=2048, cfg=out(6.0, 1.0), select="all"),
        dict(name="out-mid-1024-g8-p1", layers=[mid], k=1024, cfg=out(8.0, 1.0)),
        dict(name="out-mid-1024-g8-p4", layers=[mid], k=1024, cfg=out(8.0, 4.0)),
        dict(name="out-mid-2048-g6-p1", layers=[mid], k=2048, cfg=out(6.0, 1.0)),
        dict(name="out-mid-512-g8-p1", layers=[mid], k=512, cfg=out(8.0, 1.0)),
        dict(name="out-mid-1024-g8-p1-lam1e-2", layers=[mid], k=1024, cfg=out(8.0, 1.0, lam=1e-2)),
        dict(name="out-mid-4096-g4-p1-q4", layers=[mid], k=4096, cfg=out(4.0, 1.0, subspace_dim=4)),
        dict(name="out-mid-4096-g4-p1-r64", layers=[mid], k=4096, cfg=out(4.0, 1.0, rank=64)),
        dict(name="out-mid-4096-g4-p1-a10", layers=[mid], k=4096, cfg=out(4.0, 1.0, alpha=10.0)),
        dict(name="out-mid-4096-g4-p1-halfdata", layers=[mid], k=4096, cfg=out(4.0, 1.0), fit_fraction=0.5),
        dict(name="out-mid-4096-g4-p1-meanpos", layers=[mid], k=4096, cfg=out(4.0, 1.0), positions="mean"),
        dict(name="out-multi-4096-g4-p1", layers=[early, mid, late], k=4096, cfg=out(4.0, 1.0)),
        dict(name="in-mid-dense-p1", layers=[mid], k=d_ff,
             cfg=EditConfig("input", None, 1.0, 1e-3, preserve_weight=1.0)),
        dict(name="in-mid-dense-p0", layers=[mid], k=d_ff, cfg=EditConfig("input", None, 1.0, 1e-3)),
    ]
    return configs


class Search:
    """Holds the model, data, cached activations and the evaluation of one search."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model, self.tokenizer = load_model(args.model, dtype=args.dtype)
        self.adapter = get_adapter(self.model)
        self.languages = list(LANGUAGES)
        self.targets = [lang for lang in self.languages if lang != "en"]
        harmful = load_project_set("harmful")
        harmless = load_project_set("harmless")
        general = load_project_set("general")
        self.harmful_fit = harmful.split("fit")
        self.harmful_dev = harmful.split("dev")
        self.harmless_fit = harmless.split("fit")
        self.harmless_dev = harmless.split("dev")
        self.general_fit = general.split("fit").take(args.num_general, seed=0)
        self.general_dev = general.split("dev").take(4, seed=0)
        if args.judge == "logit":
            self.judge = LogitJudge(self.model, self.tokenizer, batch_size=args.batch_size, progress=False)
        else:
            self.judge = LexiconJudge()
        self.cache: dict[tuple, object] = {}

    # --- cached inputs ---------------------------------------------------------------------------

    def localization(self):
        if "loc" not in self.cache:
            layers = list(range(self.adapter.num_layers))
            kw = dict(sites=("neurons",), batch_size=self.args.batch_size, progress=False)
            harmful = capture_activations(self.model, self.tokenizer, self.harmful_fit.texts("en"), layers, **kw)
            harmless = capture_activations(self.model, self.tokenizer, self.harmless_fit.texts("en"), layers, **kw)
            self.cache["loc"] = localize(harmful.neurons, harmless.neurons, k=self.adapter.d_ff)
        return self.cache["loc"]

    def neurons(self, layer: int, k: int, select: str = "en") -> torch.Tensor:
        """Top-k neurons of ``layer`` by |Cohen's d| on English ("en") or all-language ("all") fit prompts."""
        if select == "en":
            scores = self.localization().scores[layer]
        else:
            key = ("loc-all", layer)
            if key not in self.cache:
                kw = dict(sites=("neurons",), batch_size=self.args.batch_size, progress=False)
                groups = []
                for dataset in (self.harmful_fit, self.harmless_fit):
                    texts = [t for lang in self.languages for t in dataset.texts(lang)]
                    groups.append({layer: capture_activations(self.model, self.tokenizer, texts, [layer], **kw).neurons[layer]})
                self.cache[key] = score_neurons(groups[0], groups[1])[layer]
            scores = self.cache[key]
        return torch.argsort(scores.abs(), descending=True, stable=True)[:k].sort().values

    def general_texts(self) -> list[str]:
        return [t for lang in self.languages for t in self.general_fit.texts(lang)]

    def preserve_prompts(self) -> list[str]:
        subset = self.harmless_fit.take(self.args.num_preserve, seed=0)
        return [t for lang in self.languages for t in subset.texts(lang)]

    def captured(self, layer: int, positions: str, side: str, k: int, select: str = "en"):
        key = ("acts", layer, positions, side, k, select)
        if key in self.cache:
            return self.cache[key]
        kw = dict(batch_size=self.args.batch_size, progress=False, positions=positions)
        result = {}
        subset = {layer: self.neurons(layer, k, select)} if side == "output" else None
        sites = ("mlp_input",) if side == "input" else ("neurons", "residual")
        for lang in self.languages:
            result[lang] = capture_activations(
                self.model, self.tokenizer, self.harmful_fit.texts(lang), [layer], sites=sites,
                neuron_subset=subset, **kw,
            )
        if side == "output":
            result["harmless_en"] = capture_activations(
                self.model, self.tokenizer, self.harmless_fit.texts("en"), [layer], sites=("residual",), **kw
            )
        self.cache[key] = result
        return result

    def moments(self, layer: int, side: str, k: int, select: str = "en") -> SecondMoments:
        key = ("mom", layer, side, k, select)
        if key not in self.cache:
            subset = {layer: self.neurons(layer, k, select)} if side == "output" else None
            site = "mlp_input" if side == "input" else "neurons"
            self.cache[key] = accumulate_second_moments(
                self.model, self.tokenizer, self.general_texts(), [layer], site=site, neuron_subset=subset,
                batch_size=self.args.batch_size, progress=False,
            )[layer]
        return self.cache[key]

    def anchors(self, layer: int, side: str, k: int, select: str = "en") -> torch.Tensor:
        """Post-instruction activations of the harmless fit prompts in every language."""
        key = ("anchors", layer, side, k, select)
        if key not in self.cache:
            subset = {layer: self.neurons(layer, k, select)} if side == "output" else None
            site = "mlp_input" if side == "input" else "neurons"
            acts = capture_activations(
                self.model, self.tokenizer, self.preserve_prompts(), [layer], sites=(site,),
                neuron_subset=subset, batch_size=self.args.batch_size, progress=False,
            )
            self.cache[key] = getattr(acts, site)[layer]
        return self.cache[key]

    # --- fitting and scoring -----------------------------------------------------------------------

    def fit_single(self, spec: dict) -> SparseEdit:
        (layer,) = spec["layers"]
        cfg: EditConfig = spec["cfg"]
        k = spec["k"]
        select = spec.get("select", "en")
        acts = self.captured(layer, spec.get("positions", "post_instruction"), cfg.side, k, select)
        rows = self._fit_rows(spec)
        layer_view = self.adapter.layer(layer)
        neurons = self.neurons(layer, k, select)
        general = self.moments(layer, cfg.side, k, select)
        anchors = self.anchors(layer, cfg.side, k, select) if cfg.preserve_weight > 0 else None
        if cfg.side == "input":
            target = torch.cat([acts[lang].mlp_input[layer][rows] for lang in self.targets])
            english = acts["en"].mlp_input[layer][rows].repeat(len(self.targets), 1, 1)
            edit, _ = solve_input_side(layer_view, neurons, target, english, cfg, general, anchors)
        else:
            directions = safety_directions(
                acts["en"].residual[layer], acts["harmless_en"].residual[layer], cfg.subspace_dim
            )
            x = torch.cat([acts[lang].neurons[layer][rows] for lang in self.targets])
            target = torch.cat([acts[lang].residual[layer][rows] for lang in self.targets])
            english = acts["en"].residual[layer][rows].repeat(len(self.targets), 1, 1)
            edit, _ = solve_output_side(layer_view, neurons, x, target, english, directions, cfg, general,
                                        anchors)
        return SparseEdit([edit], model_id=self.args.model, hyperparameters=cfg.as_dict())

    def _fit_rows(self, spec: dict) -> torch.Tensor:
        n = len(self.harmful_fit)
        count = max(2, round(spec.get("fit_fraction", 1.0) * n))
        return torch.arange(count)

    def fit_multi(self, spec: dict) -> SparseEdit:
        cfg: EditConfig = spec["cfg"]
        neurons = {layer: self.neurons(layer, spec["k"]) for layer in spec["layers"]}
        return fit_edit(
            self.model, self.tokenizer,
            english_harmful=self.harmful_fit.texts("en"),
            target_harmful={lang: self.harmful_fit.texts(lang) for lang in self.targets},
            neurons=neurons, config=cfg, general_texts=self.general_texts(),
            preserve_prompts=self.preserve_prompts(),
            english_harmless=self.harmless_fit.texts("en"), model_id=self.args.model,
            batch_size=self.args.batch_size, progress=False,
        )

    def refusal_scores(self, dataset, languages) -> dict[str, float]:
        """Mean refusal probability (logit judge) or refusal rate (lexicon judge) per language."""
        scores = {}
        for lang in languages:
            prompts = dataset.texts(lang)
            replies = None
            if self.args.judge == "lexicon":
                replies = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.args.max_new_tokens,
                                   batch_size=self.args.batch_size, progress=False)
            result = self.judge.judge(prompts, replies, lang)
            values = result.scores if result.scores is not None else [float(flag) for flag in result.refused]
            scores[lang] = sum(values) / len(values)
        return scores

    def evaluate(self, edit: SparseEdit | None) -> dict:
        # A subset of languages keeps one evaluation near a minute on a 2-core CPU; the edit is
        # still fitted on all seven target languages.
        harmful_langs = self.args.eval_languages.split(",")
        over_langs = self.args.harmless_languages.split(",")
        if edit is None:
            harmful = self.refusal_scores(self.harmful_dev, harmful_langs)
            harmless = self.refusal_scores(self.harmless_dev, over_langs)
            return {"harmful": harmful, "harmless": harmless, "kl": 0.0}
        with edit.applied(self.model):
            harmful = self.refusal_scores(self.harmful_dev, harmful_langs)
            harmless = self.refusal_scores(self.harmless_dev, over_langs)
        general = [t for lang in self.languages for t in self.general_dev.texts(lang)]
        kl = mean_kl_divergence(self.model, self.tokenizer, general, edit, batch_size=self.args.batch_size,
                                progress=False)
        return {"harmful": harmful, "harmless": harmless, "kl": kl.mean}


def render_table(rows: list[dict]) -> str:
    """Render search rows as a Markdown table of mean refusal probability per language and KL."""
    languages = sorted({lang for row in rows for lang in row["harmful"]}, key=lambda x: (x != "en", x))
    header = "| configuration | " + " | ".join(f"harmful {lang}" for lang in languages)
    over = sorted({lang for row in rows for lang in row["harmless"]}, key=lambda x: (x != "en", x))
    header += " | " + " | ".join(f"harmless {lang}" for lang in over) + " | KL general | dtype | judge |"
    lines = [header, "|" + "---|" * (len(languages) + len(over) + 4)]
    for row in rows:
        cells = [f"{row['harmful'].get(lang, float('nan')):.3f}" for lang in languages]
        cells += [f"{row['harmless'].get(lang, float('nan')):.3f}" for lang in over]
        lines.append(
            f"| {row['name']} | " + " | ".join(cells)
            + f" | {row['kl']:.4f} | {row.get('dtype', '?')} | {row.get('judge', 'logit')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--out", type=Path, default=Path("results/search.jsonl"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-general", type=int, default=24, help="general fit texts per language")
    parser.add_argument("--num-preserve", type=int, default=51,
                        help="harmless fit prompts per language used as anchors")
    parser.add_argument("--judge", choices=("logit", "lexicon"), default="logit",
                        help="logit: mean refusal probability, one forward pass; lexicon: refusal rate of "
                             "generated replies (slower)")
    parser.add_argument("--max-new-tokens", type=int, default=12, help="tokens generated per reply (lexicon judge)")
    parser.add_argument("--dtype", default="auto", help="model dtype (see swe_toolkit.models.resolve_dtype)")
    parser.add_argument("--harmless-languages", default="en,th,bn,he",
                        help="languages of the dev harmless prompts scored per configuration")
    parser.add_argument("--eval-languages", default="en,zh,th,bn,he",
                        help="languages of the dev harmful prompts scored per configuration")
    parser.add_argument("--only", nargs="*", default=None, help="names of configurations to run")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and exit")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        print(render_table(rows), end="")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.manual_seed(0)

    search = Search(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {json.loads(line)["name"] for line in args.out.read_text().splitlines() if line.strip()}

    def record(row: dict) -> None:
        row["dtype"] = str(next(search.model.parameters()).dtype).removeprefix("torch.")
        row["judge"] = args.judge
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        harmful = row["harmful"]
        non_en = sum(v for k, v in harmful.items() if k != "en") / (len(harmful) - 1)
        logger.info("%s: en %.3f non-en %.3f harmless-en %.3f kl %.4f (%.0f s)", row["name"],
                    harmful["en"], non_en, row["harmless"]["en"], row["kl"], row["seconds"])

    if "baseline" not in done:
        start = time.perf_counter()
        record({"name": "baseline", **search.evaluate(None), "seconds": time.perf_counter() - start})

    for spec in grid(search.adapter.num_layers, search.adapter.d_ff):
        if spec["name"] in done or (args.only and spec["name"] not in args.only):
            continue
        start = time.perf_counter()
        try:
            edit = search.fit_single(spec) if len(spec["layers"]) == 1 else search.fit_multi(spec)
            fitted = time.perf_counter() - start
            row = {"name": spec["name"], **search.evaluate(edit)}
        except Exception as error:  # keep searching; the row records the failure
            logger.exception("configuration %s failed", spec["name"])
            row = {"name": spec["name"], "error": str(error), "harmful": {"en": float("nan")},
                   "harmless": {"en": float("nan")}, "kl": float("nan")}
            fitted = float("nan")
        row.update(
            layers=spec["layers"], k=spec["k"], config=spec["cfg"].as_dict(),
            positions=spec.get("positions", "post_instruction"), fit_fraction=spec.get("fit_fraction", 1.0),
            select=spec.get("select", "en"),
            fit_seconds=fitted, seconds=time.perf_counter() - start,
        )
        record(row)
        search.cache = {
            key: value for key, value in search.cache.items() if key[0] in ("loc", "loc-all", "acts", "mom", "anchors")
        }


if __name__ == "__main__":
    main()
