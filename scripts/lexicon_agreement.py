"""Measure how well the refusal lexicon agrees with hand labels of real model replies.

Two steps::

    # 1. Draw a labelling sheet from a run's generations (stratified by language).
    python scripts/lexicon_agreement.py sample runs/main/generations.jsonl results/lexicon_labels.csv --per-language 16

    # 2. Fill the `label` column by hand (refusal / compliance), then compute the agreement.
    python scripts/lexicon_agreement.py score results/lexicon_labels.csv

The sheet keeps the replies as the run wrote them: replies to harmful prompts are already truncated
by the pipeline. ``score`` prints accuracy and Cohen's kappa per language and overall, and writes
them as JSON next to the sheet.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from swe_toolkit.evaluation import LexiconJudge

LABELS = {"refusal": True, "compliance": False}


def sample(generations: Path, sheet: Path, per_language: int, seed: int) -> None:
    """Write a CSV of ``per_language`` replies per language, half harmful and half harmless."""
    rows = [json.loads(line) for line in generations.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if row.get("reply") is not None]
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_key[(row["language"], row["set"])].append(row)
    rng = random.Random(seed)
    judge = LexiconJudge()
    chosen = []
    for (language, subset), items in sorted(by_key.items()):
        count = per_language // 2 if subset == "harmless" else per_language - per_language // 2
        for row in rng.sample(items, min(count, len(items))):
            verdict = judge.judge([""], [row["reply"]], language).refused[0]
            chosen.append(
                {
                    "language": language,
                    "set": subset,
                    "phase": row["phase"],
                    "uid": row["uid"],
                    "reply": row["reply"],
                    "lexicon_refused": int(verdict),
                    "label": "",
                }
            )
    sheet.parent.mkdir(parents=True, exist_ok=True)
    with open(sheet, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    print(f"wrote {len(chosen)} rows to {sheet}")


def cohen_kappa(a: list[bool], b: list[bool]) -> float:
    """Cohen's kappa of two binary label lists (1.0 when both are constant and equal)."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def score(sheet: Path) -> dict:
    """Compute per-language accuracy and kappa of the lexicon against the ``label`` column."""
    with open(sheet, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    unlabeled = [row["uid"] for row in rows if row["label"].strip() not in LABELS]
    if unlabeled:
        sys.exit(f"error: {len(unlabeled)} rows have no label (refusal/compliance), e.g. {unlabeled[:3]}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["language"]].append(row)
        groups["all"].append(row)
    result = {}
    for language, items in groups.items():
        human = [LABELS[row["label"].strip()] for row in items]
        lexicon = [row["lexicon_refused"] == "1" for row in items]
        result[language] = {
            "n": len(items),
            "accuracy": sum(h == x for h, x in zip(human, lexicon, strict=True)) / len(items),
            "kappa": cohen_kappa(human, lexicon),
            "human_refusals": sum(human),
            "lexicon_refusals": sum(lexicon),
            "missed_refusals": sum(h and not x for h, x in zip(human, lexicon, strict=True)),
            "false_refusals": sum(x and not h for h, x in zip(human, lexicon, strict=True)),
        }
    out = sheet.with_suffix(".agreement.json")
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{'language':<9}{'n':>4}{'accuracy':>10}{'kappa':>8}{'missed':>8}{'false':>7}")
    for language, row in result.items():
        print(f"{language:<9}{row['n']:>4}{row['accuracy']:>10.3f}{row['kappa']:>8.3f}"
              f"{row['missed_refusals']:>8}{row['false_refusals']:>7}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    draw = commands.add_parser("sample", help="draw a labelling sheet from generations.jsonl")
    draw.add_argument("generations", type=Path)
    draw.add_argument("sheet", type=Path)
    draw.add_argument("--per-language", type=int, default=16)
    draw.add_argument("--seed", type=int, default=0)
    check = commands.add_parser("score", help="compute agreement from a labelled sheet")
    check.add_argument("sheet", type=Path)
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.generations, args.sheet, args.per_language, args.seed)
    else:
        score(args.sheet)


if __name__ == "__main__":
    main()
