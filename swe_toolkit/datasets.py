"""Parallel prompt sets of the project and loaders for public multilingual benchmarks.

Project sets
    ``swe_toolkit/data/harmful.jsonl``, ``harmless.jsonl`` and ``general.jsonl`` contain one JSON
    object per line. Each object has a unique ``uid`` and a ``text`` object that maps every code
    in :data:`LANGUAGES` to the same prompt in that language. Harmful items also have a
    ``category`` from :data:`HARMFUL_CATEGORIES`. Harmless items have a ``kind`` (``benign``, or
    ``contrastive`` for harmless prompts that look harmful) and a ``topic``. General items have a
    ``topic``. :func:`load_parallel_jsonl` reads user files in the same schema.

Splits
    Every item of a JSONL set gets one of :data:`SPLITS`: ``fit`` (localize neurons and solve the
    edit), ``dev`` (choose hyperparameters) and ``test`` (report results). The default fractions
    are 0.4 / 0.2 / 0.4, so the test split is large enough for confidence intervals.
    An item's split depends only on ``sha256(f"{seed}:{uid}")`` read as a number in [0, 1):

    * ``general`` items and user files of that label are cut at the fractions by that number
      (:func:`assign_split`). Adding items never moves other items to another split.
    * ``harmful`` items are stratified by ``category`` and ``harmless`` items by ``kind``. Within
      each stratum the items are ranked by the hash, and rank ``r`` of ``n`` goes to the split that
      contains ``(r + 0.5) / n``. With the default fractions every stratum of at least 3 items
      appears in every split. Adding an item to a stratum moves at most one existing item of that
      stratum across each of the two cut points.

    Splits are computed on all items of a file before languages are selected, so the requested
    languages never change an item's split.

Missing languages
    A requested language that an item lacks (absent or empty text) is never dropped silently. The
    set's ``missing`` maps each such language to the number of items that lack it. With
    ``strict=True`` (the default) loading raises :class:`ConfigurationError` naming the language,
    the count and the first uids. With ``strict=False`` a language that no item has is left out,
    only items that have every remaining language are kept, and a warning is logged.

Public benchmarks
    :func:`load_multijail`, :func:`load_strongreject`, :func:`load_mgsm` and :func:`load_mmmlu`
    read local files or, through the optional ``datasets`` package, the Hugging Face Hub. Their
    items are all in the ``test`` split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_FRACTIONS",
    "HARMFUL_CATEGORIES",
    "HARMLESS_KINDS",
    "LABELS",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "MGSM_LANGUAGES",
    "MMMLU_LOCALES",
    "MULTIJAIL_LANGUAGES",
    "SPLITS",
    "MGSMItem",
    "MGSMSet",
    "MultipleChoiceItem",
    "MultipleChoiceSet",
    "ParallelItem",
    "ParallelSet",
    "assign_split",
    "load_mgsm",
    "load_mmmlu",
    "load_multijail",
    "load_parallel_jsonl",
    "load_project_set",
    "load_strongreject",
    "parse_number",
]

logger = logging.getLogger(__name__)

# Languages of the project's parallel sets, high-resource first.
LANGUAGES: tuple[str, ...] = ("en", "zh", "vi", "ja", "th", "id", "bn", "he")

# English names of every language code that a loader of this module accepts: the project's
# languages first, then the other languages of MultiJail, MGSM and MMMLU.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English",
    "zh": "Chinese",
    "vi": "Vietnamese",
    "ja": "Japanese",
    "th": "Thai",
    "id": "Indonesian",
    "bn": "Bengali",
    "he": "Hebrew",
    "ar": "Arabic",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "hi": "Hindi",
    "it": "Italian",
    "jv": "Javanese",
    "ko": "Korean",
    "pt": "Portuguese",
    "ru": "Russian",
    "sw": "Swahili",
    "te": "Telugu",
    "yo": "Yoruba",
}

HARMFUL_CATEGORIES: tuple[str, ...] = (
    "non_violent_crimes",
    "violence",
    "disinformation_deception",
    "hate_harassment_discrimination",
    "illegal_goods_services",
    "sexual_content",
)
HARMLESS_KINDS: tuple[str, ...] = ("benign", "contrastive")
LABELS: tuple[str, ...] = ("harmful", "harmless", "general")
SPLITS: tuple[str, ...] = ("fit", "dev", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.4, 0.2, 0.4)

# Language columns of DAMO-NLP-SG/MultiJail, in the order of its CSV.
MULTIJAIL_LANGUAGES: tuple[str, ...] = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")
MULTIJAIL_HUB_ID = "DAMO-NLP-SG/MultiJail"

# Configs of juletxara/mgsm, one per language.
MGSM_LANGUAGES: tuple[str, ...] = ("en", "zh", "ja", "th", "bn", "de", "es", "fr", "ru", "sw", "te")
MGSM_HUB_ID = "juletxara/mgsm"

# Locales (Hub configs) of openai/MMMLU. It has no Thai, Vietnamese or Hebrew, and English comes
# from the original MMLU test split (cais/mmlu).
MMMLU_LOCALES: dict[str, str] = {
    "ar": "AR_XY",
    "bn": "BN_BD",
    "de": "DE_DE",
    "es": "ES_LA",
    "fr": "FR_FR",
    "hi": "HI_IN",
    "id": "ID_ID",
    "it": "IT_IT",
    "ja": "JA_JP",
    "ko": "KO_KR",
    "pt": "PT_BR",
    "sw": "SW_KE",
    "yo": "YO_NG",
    "zh": "ZH_CN",
}
MMMLU_HUB_ID = "openai/MMMLU"
MMLU_HUB_ID = "cais/mmlu"
_MMMLU_COLUMNS = ("Question", "A", "B", "C", "D", "Answer", "Subject")
_CHOICE_LETTERS = ("A", "B", "C", "D")

# Number of uids quoted in a missing-language error.
_QUOTED_UIDS = 5


# --------------------------------------------------------------------------------------------
# Items and sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParallelItem:
    """One prompt with its translations.

    ``category`` is the harmful category, the harmless kind (``benign`` or ``contrastive``) or the
    general topic. ``metadata`` keeps other string fields of the source, such as a harmless
    item's ``topic`` or MultiJail's ``source``.
    """

    uid: str
    text: Mapping[str, str]
    label: str
    category: str | None
    split: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MGSMItem:
    """One MGSM problem: the question in each language and the reference answer as written."""

    uid: str
    text: Mapping[str, str]
    answer: str
    split: str = "test"

    @property
    def answer_number(self) -> int | float | None:
        """Reference answer parsed by :func:`parse_number`."""
        return parse_number(self.answer)


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One four-option question of MMLU or MMMLU in one language.

    ``uid`` contains the row index in the source file, so rows that are translations of each
    other share a uid when the source keeps the row order of MMLU.
    """

    uid: str
    language: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str
    subject: str


class _ParallelItems:
    """Methods shared by sets whose items have ``uid``, ``text`` and ``split``."""

    name: str
    items: list[Any]
    languages: tuple[str, ...]
    missing: dict[str, int]

    def __len__(self) -> int:
        return len(self.items)

    def _with_items(self, items: list[Any]) -> Any:
        """Return a copy of this set with other items and its own copy of ``missing``."""
        return dataclasses.replace(self, items=items, missing=dict(self.missing))

    def texts(self, lang: str) -> list[str]:
        """Return the text of every item in language ``lang``, in item order."""
        if lang not in self.languages:
            raise ConfigurationError(
                f"{self.name} has no language {lang!r}. Available languages: "
                f"{', '.join(self.languages) or 'none'}."
            )
        return [item.text[lang] for item in self.items]

    def split(self, *names: str) -> Any:
        """Return the subset of items in any of the splits ``names``."""
        if not names:
            raise ConfigurationError(f"split() needs at least one of {', '.join(SPLITS)}.")
        unknown = [name for name in names if name not in SPLITS]
        if unknown:
            raise ConfigurationError(
                f"unknown split {', '.join(map(repr, unknown))}. Valid splits: {', '.join(SPLITS)}."
            )
        return self.filter(lambda item: item.split in names)

    def filter(self, predicate: Callable[[Any], bool]) -> Any:
        """Return the subset of items for which ``predicate(item)`` is true, in item order."""
        return self._with_items([item for item in self.items if predicate(item)])

    def take(self, n: int | None, seed: int = 0) -> Any:
        """Return ``n`` items chosen by seeded hash of their uid, kept in their original order.

        ``None`` or an ``n`` of at least ``len(self)`` keeps every item. The choice depends only on
        the seed and the uids, so the same call on the same set always returns the same items.
        """
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ConfigurationError(f"take() needs a non-negative integer or None, got {n!r}.")
        if n is None or n >= len(self.items):
            return self._with_items(list(self.items))
        ranked = sorted(range(len(self.items)), key=lambda i: _uid_hash(self.items[i].uid, seed))
        chosen = sorted(ranked[:n])
        return self._with_items([self.items[i] for i in chosen])


@dataclass
class ParallelSet(_ParallelItems):
    """Items that have text in every language of ``languages``.

    ``missing`` maps each requested language that some items lack to the number of items that
    lacked it when the set was loaded. Subsets keep the counts of the loaded set.
    """

    name: str
    items: list[ParallelItem]
    languages: tuple[str, ...]
    missing: dict[str, int] = field(default_factory=dict)

    def to_rows(self) -> list[dict[str, Any]]:
        """Return one flat dict per item, with ``text_<lang>`` columns, for pandas or reports."""
        rows = []
        for item in self.items:
            row: dict[str, Any] = {
                "set": self.name,
                "uid": item.uid,
                "label": item.label,
                "category": item.category,
                "split": item.split,
            }
            for lang in self.languages:
                row[f"text_{lang}"] = item.text[lang]
            for key, value in item.metadata.items():
                row.setdefault(key, value)
            rows.append(row)
        return rows


@dataclass
class MGSMSet(_ParallelItems):
    """MGSM problems that have a question in every language of ``languages``."""

    name: str
    items: list[MGSMItem]
    languages: tuple[str, ...]
    missing: dict[str, int] = field(default_factory=dict)

    def answers(self) -> list[str]:
        """Return the reference answer of every item as written in the source."""
        return [item.answer for item in self.items]

    def to_rows(self) -> list[dict[str, Any]]:
        """Return one flat dict per problem, with ``text_<lang>`` columns."""
        rows = []
        for item in self.items:
            row: dict[str, Any] = {"set": self.name, "uid": item.uid, "answer": item.answer}
            for lang in self.languages:
                row[f"text_{lang}"] = item.text[lang]
            rows.append(row)
        return rows


@dataclass
class MultipleChoiceSet:
    """Four-option questions per language.

    ``missing`` maps each requested language that the source lacks to the number of questions
    loaded for the largest present language, because every one of them lacks it.
    """

    name: str
    items: dict[str, list[MultipleChoiceItem]]
    languages: tuple[str, ...]
    missing: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        """Return the number of questions summed over languages."""
        return sum(len(questions) for questions in self.items.values())

    def questions(self, lang: str) -> list[MultipleChoiceItem]:
        """Return the questions in language ``lang``."""
        if lang not in self.languages:
            raise ConfigurationError(
                f"{self.name} has no language {lang!r}. Available languages: "
                f"{', '.join(self.languages) or 'none'}."
            )
        return list(self.items[lang])

    def to_rows(self) -> list[dict[str, Any]]:
        """Return one flat dict per question and language."""
        rows = []
        for lang in self.languages:
            for item in self.items[lang]:
                row = {"set": self.name, "uid": item.uid, "language": lang}
                row["subject"] = item.subject
                row["question"] = item.question
                row.update(zip(_CHOICE_LETTERS, item.choices))
                row["answer"] = item.answer
                rows.append(row)
        return rows


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def _uid_hash(uid: str, seed: int) -> float:
    """Map ``sha256(f"{seed}:{uid}")`` to a number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{uid}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(fractions)
    valid = len(values) == len(SPLITS) and all(
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        for value in values
    )
    if not valid or abs(sum(values) - 1.0) > 1e-9:
        raise ConfigurationError(
            f"split fractions must be three non-negative numbers for {'/'.join(SPLITS)} that sum "
            f"to 1, got {fractions!r}."
        )
    return values  # type: ignore[return-value]


def _split_at(position: float, fractions: tuple[float, float, float]) -> str:
    if position < fractions[0]:
        return "fit"
    if position < fractions[0] + fractions[1]:
        return "dev"
    return "test"


def assign_split(uid: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> str:
    """Assign ``uid`` to ``fit``, ``dev`` or ``test`` by the hash of ``f"{seed}:{uid}"``.

    The SHA-256 digest is read as a number ``h`` in [0, 1). The item is in ``fit`` when
    ``h < fractions[0]``, in ``dev`` when ``h < fractions[0] + fractions[1]`` and in ``test``
    otherwise. The result depends only on the uid, the fractions and the seed.
    """
    return _split_at(_uid_hash(uid, seed), _check_fractions(fractions))


def _stratified_splits(
    uids: Sequence[str],
    strata: Sequence[str | None],
    fractions: tuple[float, float, float],
    seed: int,
) -> list[str]:
    """Rank the uids of each stratum by hash and cut each stratum at the fractions."""
    members: dict[str | None, list[str]] = {}
    for uid, stratum in zip(uids, strata):
        members.setdefault(stratum, []).append(uid)

    split_of: dict[str, str] = {}
    for group in members.values():
        ranked = sorted(group, key=lambda uid: (_uid_hash(uid, seed), uid))
        for rank, uid in enumerate(ranked):
            split_of[uid] = _split_at((rank + 0.5) / len(ranked), fractions)
    return [split_of[uid] for uid in uids]


# --------------------------------------------------------------------------------------------
# Language selection shared by every loader
# --------------------------------------------------------------------------------------------


def _check_language_codes(
    languages: str | Iterable[str], valid: Iterable[str]
) -> tuple[str, ...]:
    """Return the requested codes without duplicates, or raise for an unknown code."""
    requested = (languages,) if isinstance(languages, str) else tuple(languages)
    if not requested:
        raise ConfigurationError("no languages requested. Pass at least one language code.")
    valid = tuple(valid)
    unknown = [lang for lang in requested if lang not in valid]
    if unknown:
        raise ConfigurationError(
            f"unknown language code {', '.join(map(repr, unknown))}. Valid codes: "
            f"{', '.join(valid)}."
        )
    return tuple(dict.fromkeys(requested))


def _order_languages(codes: Iterable[str]) -> tuple[str, ...]:
    """Sort codes in the order of LANGUAGE_NAMES, then unknown codes alphabetically."""
    known = list(LANGUAGE_NAMES)

    def sort_key(lang: str) -> tuple[int, str]:
        return (known.index(lang), "") if lang in known else (len(known), lang)

    return tuple(sorted(set(codes), key=sort_key))


def _has_text(item: Any, lang: str) -> bool:
    value = item.text.get(lang)
    return isinstance(value, str) and bool(value.strip())


def _select_languages(
    set_name: str,
    items: list[Any],
    requested: tuple[str, ...],
    provided: tuple[str, ...],
    strict: bool,
) -> tuple[list[Any], tuple[str, ...], dict[str, int]]:
    """Keep the requested languages in every item, or report the items that lack them.

    ``provided`` lists the languages the source has at all, and only appears in messages.
    Returns the kept items (their ``text`` reduced to the kept languages), the kept languages and
    the missing counts.
    """
    lacking = {
        lang: [item.uid for item in items if not _has_text(item, lang)] for lang in requested
    }
    missing = {lang: len(uids) for lang, uids in lacking.items() if uids}
    absent = [lang for lang in missing if missing[lang] == len(items)]
    complete = tuple(lang for lang in requested if lang not in missing)

    if missing and strict:
        problems = []
        for lang, uids in lacking.items():
            if not uids:
                continue
            if lang in absent:
                problems.append(f"no item has {lang!r}")
            else:
                quoted = ", ".join(uids[:_QUOTED_UIDS])
                if len(uids) > _QUOTED_UIDS:
                    quoted += ", ..."
                problems.append(
                    f"{len(uids)} of {len(items)} items lack {lang!r} (first: {quoted})"
                )
        raise ConfigurationError(
            f"{set_name}: {'; '.join(problems)}. The source provides "
            f"{', '.join(provided) or 'no languages'}. Requested languages that every item has: "
            f"{', '.join(complete) or 'none'}. Add the missing text, request only those "
            f"languages, or pass strict=False to keep only the items that have every requested "
            f"language the source provides."
        )

    kept_languages = tuple(lang for lang in requested if lang not in absent)
    kept = [item for item in items if all(_has_text(item, lang) for lang in kept_languages)]
    if missing:
        logger.warning(
            "%s: languages missing from some items: %s. Left out languages that no item has: %s. "
            "Kept %d of %d items.",
            set_name,
            ", ".join(f"{lang}={count}" for lang, count in missing.items()),
            ", ".join(absent) or "none",
            len(kept),
            len(items),
        )
    if not kept_languages or not kept:
        raise ConfigurationError(
            f"{set_name}: no item has text in every requested language "
            f"({', '.join(requested)}). The source provides "
            f"{', '.join(provided) or 'no languages'}."
        )

    reduced = [
        dataclasses.replace(item, text={lang: item.text[lang] for lang in kept_languages})
        for item in kept
    ]
    return reduced, kept_languages, missing


# --------------------------------------------------------------------------------------------
# Project and user JSONL sets
# --------------------------------------------------------------------------------------------


@dataclass
class _Record:
    """One validated JSONL line before its split is known."""

    uid: str
    text: dict[str, str]
    category: str | None
    metadata: dict[str, str]


def _optional_string(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: {key!r} must be a non-empty string, got {value!r}.")
    return value


def _required_string(obj: dict[str, Any], key: str, where: str, fix: str) -> str:
    value = _optional_string(obj, key, where)
    if value is None:
        raise ConfigurationError(f"{where}: missing {key!r}. {fix}")
    return value


def _parse_record(obj: Any, label: str, project: bool, where: str) -> _Record:
    """Validate one decoded JSONL object against the schema of ``label``."""
    if not isinstance(obj, dict):
        raise ConfigurationError(
            f"{where}: expected a JSON object, found {type(obj).__name__}. Write one object per "
            f"line with 'uid' and 'text'."
        )
    uid = _required_string(obj, "uid", where, "Give every item a unique string 'uid'.")

    text = obj.get("text")
    if not isinstance(text, dict):
        raise ConfigurationError(
            f"{where}: missing 'text' object for uid {uid!r}. Add 'text' mapping language codes "
            f"to strings, for example {{\"en\": \"...\"}}."
        )
    for lang, value in text.items():
        if not isinstance(value, str):
            raise ConfigurationError(
                f"{where}: text[{lang!r}] of uid {uid!r} must be a string, got "
                f"{type(value).__name__}."
            )

    category: str | None
    metadata: dict[str, str] = {}
    if label == "harmful":
        category = _optional_string(obj, "category", where)
        if project and category not in HARMFUL_CATEGORIES:
            raise ConfigurationError(
                f"{where}: invalid category {category!r} for uid {uid!r}. Use one of "
                f"{', '.join(HARMFUL_CATEGORIES)}."
            )
    elif label == "harmless":
        category = _optional_string(obj, "kind", where)
        if (project or category is not None) and category not in HARMLESS_KINDS:
            raise ConfigurationError(
                f"{where}: invalid kind {category!r} for uid {uid!r}. Use one of "
                f"{', '.join(HARMLESS_KINDS)}."
            )
    else:
        category = None
    topic = _optional_string(obj, "topic", where)
    if topic is None and project and label != "harmful":
        raise ConfigurationError(f"{where}: missing 'topic' for uid {uid!r}. Add a short topic.")
    if label == "general":
        category = topic
    elif topic is not None:
        metadata["topic"] = topic
    return _Record(uid=uid, text=dict(text), category=category, metadata=metadata)


def _parse_jsonl(content: str, source: str, label: str, project: bool) -> list[_Record]:
    """Parse JSONL text and skip blank lines. Errors name ``source`` and the line number."""
    records: list[_Record] = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{line_number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one "
                f"complete JSON object."
            ) from exc
        record = _parse_record(obj, label, project, where)
        if record.uid in first_line:
            raise ConfigurationError(
                f"{where}: duplicate uid {record.uid!r}, first used on line "
                f"{first_line[record.uid]}. Give every item a unique uid."
            )
        first_line[record.uid] = line_number
        records.append(record)
    if not records:
        raise ConfigurationError(
            f"{source} is empty. It must contain one JSON object per line with 'uid' and 'text'."
        )
    return records


def _build_jsonl_set(
    records: list[_Record],
    label: str,
    set_name: str,
    languages: tuple[str, ...] | None,
    strict: bool,
    fractions: Sequence[float],
    seed: int,
) -> ParallelSet:
    checked = _check_fractions(fractions)
    uids = [record.uid for record in records]
    if label in ("harmful", "harmless"):
        splits = _stratified_splits(uids, [record.category for record in records], checked, seed)
    else:
        splits = [_split_at(_uid_hash(uid, seed), checked) for uid in uids]

    items = [
        ParallelItem(
            uid=record.uid,
            text=record.text,
            label=label,
            category=record.category,
            split=split,
            metadata=record.metadata,
        )
        for record, split in zip(records, splits)
    ]
    provided = _order_languages(lang for record in records for lang in record.text)
    requested = provided if languages is None else languages
    kept, kept_languages, missing = _select_languages(set_name, items, requested, provided, strict)
    return ParallelSet(name=set_name, items=kept, languages=kept_languages, missing=missing)


def load_project_set(
    name: Literal["harmful", "harmless", "general"],
    languages: str | Iterable[str] = LANGUAGES,
    *,
    strict: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> ParallelSet:
    """Load one of the project's parallel sets from the package data.

    The file is validated against the project schema (see the module docstring), so an invalid
    category, kind or missing topic raises. Splits follow the module docstring: harmful items are
    stratified by category and harmless items by kind.
    """
    if name not in LABELS:
        raise ConfigurationError(f"unknown project set {name!r}. Valid sets: {', '.join(LABELS)}.")
    requested = _check_language_codes(languages, LANGUAGES)

    resource = resources.files("swe_toolkit") / "data" / f"{name}.jsonl"
    if not resource.is_file():
        raise ConfigurationError(
            f"package data file {resource} not found. Reinstall swe_toolkit with its data files."
        )
    content = resource.read_text(encoding="utf-8")
    records = _parse_jsonl(content, str(resource), name, project=True)
    return _build_jsonl_set(records, name, name, requested, strict, fractions, seed)


def load_parallel_jsonl(
    path: str | PathLike[str],
    label: str,
    languages: str | Iterable[str] | None = None,
    name: str | None = None,
    *,
    strict: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> ParallelSet:
    """Load a user JSONL file in the project schema as a set of ``label`` items.

    Unlike the project files, ``category`` (harmful), ``kind`` (harmless) and ``topic`` are
    optional, and a harmful category may be any string. ``languages=None`` requests every
    language that appears in the file, so a language that only some items have is reported as
    missing. Splits are assigned as for the project set of the same label.
    """
    if label not in LABELS:
        raise ConfigurationError(f"unknown label {label!r}. Valid labels: {', '.join(LABELS)}.")
    requested = None if languages is None else _check_language_codes(languages, LANGUAGE_NAMES)

    file_path = Path(path).expanduser()
    if not file_path.is_file():
        raise ConfigurationError(
            f"{file_path} not found or not a file. Pass the path of a JSONL file."
        )
    try:
        content = file_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{file_path} is not valid UTF-8 ({exc}). Save it as UTF-8."
        ) from exc
    records = _parse_jsonl(content, str(file_path), label, project=False)
    set_name = name or file_path.stem
    return _build_jsonl_set(records, label, set_name, requested, strict, fractions, seed)


# --------------------------------------------------------------------------------------------
# Public benchmarks: file and Hub access
# --------------------------------------------------------------------------------------------

_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_FILE_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"}


def _resolve_source(path_or_hub_id: str | PathLike[str], dataset: str) -> Path | str:
    """Return an existing local Path, or the string itself when it looks like a Hub id."""
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_hub_id)
    if (
        isinstance(path_or_hub_id, str)
        and _HUB_ID_PATTERN.match(text)
        and Path(text).suffix.lower() not in _FILE_SUFFIXES
    ):
        return text
    raise ConfigurationError(
        f"{dataset}: {text} is not an existing file or folder, nor a Hugging Face Hub dataset id "
        f"of the form owner/name."
    )


def _load_hub_dataset(repo_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Download one split of a Hub dataset with the ``datasets`` package and return its rows."""
    try:
        import datasets as hf_datasets
    except ImportError as exc:
        raise ConfigurationError(
            f"loading {repo_id} from the Hugging Face Hub needs the 'datasets' package. Install it "
            f"with `pip install datasets`, or pass the path of a local copy."
        ) from exc
    try:
        dataset = hf_datasets.load_dataset(repo_id, config, split=split)
    # The Hub client raises many unrelated types (network, missing config, authentication), so
    # every one is reported with the dataset coordinates and chained.
    except Exception as exc:
        raise ConfigurationError(
            f"failed to load {repo_id} (config {config}, split {split}) from the Hugging Face Hub: "
            f"{exc}. Check network access and the dataset id, or pass the path of a local copy."
        ) from exc
    return [dict(row) for row in dataset]


def _read_csv(
    path: Path, required: Sequence[str], dataset: str
) -> list[tuple[int, dict[str, Any]]]:
    """Read a CSV with a header row and return (line number, row) pairs."""
    if not path.is_file():
        raise ConfigurationError(f"{dataset}: {path} is not a file. Pass the path of a CSV file.")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames
            if not columns:
                raise ConfigurationError(
                    f"{path} is empty. {dataset} needs a CSV with a header row."
                )
            absent = [column for column in required if column not in columns]
            if absent:
                raise ConfigurationError(
                    f"{path}: missing column {', '.join(map(repr, absent))} for {dataset}. Found "
                    f"columns: {', '.join(columns)}."
                )
            rows = [(reader.line_num, row) for row in reader]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: invalid CSV ({exc}). Save it as UTF-8 CSV.") from exc
    if not rows:
        raise ConfigurationError(f"{path} has a header but no rows. {dataset} needs data rows.")
    return rows


def _cell(row: Mapping[str, Any], column: str) -> str:
    """Return a CSV or Hub cell as a stripped string, with None and missing cells as ''."""
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _requested_public(
    languages: str | Iterable[str] | None, provided: tuple[str, ...]
) -> tuple[str, ...]:
    return provided if languages is None else _check_language_codes(languages, LANGUAGE_NAMES)


# --------------------------------------------------------------------------------------------
# MultiJail and StrongREJECT
# --------------------------------------------------------------------------------------------


def load_multijail(
    path_or_hub_id: str | PathLike[str] = MULTIJAIL_HUB_ID,
    languages: str | Iterable[str] | None = None,
    *,
    strict: bool = True,
) -> ParallelSet:
    """Load MultiJail (315 harmful prompts in 10 languages) from a local CSV or the Hub.

    The CSV has columns ``id, source, tags`` and one column per code in
    :data:`MULTIJAIL_LANGUAGES`. ``languages=None`` requests every language column present. A
    requested language MultiJail does not have, such as ``ja``, ``id`` or ``he``, is missing from
    every item. Items are labelled ``harmful`` with ``tags`` as category and ``source`` in
    metadata, all in the ``test`` split.
    """
    source = _resolve_source(path_or_hub_id, "MultiJail")
    if isinstance(source, Path):
        numbered = _read_csv(source, ("id",), "MultiJail")
        columns = set(numbered[0][1])
        locations = [f"{source}:{line_number}" for line_number, _ in numbered]
    else:
        # NOTE: this assumes the Hub copy has a single "train" split. The tests cover this call
        # only with a stub of _load_hub_dataset.
        hub_rows = _load_hub_dataset(source, None, "train")
        if not hub_rows:
            raise ConfigurationError(f"MultiJail: {source} returned no rows.")
        numbered = list(enumerate(hub_rows, start=1))
        columns = set(hub_rows[0])
        locations = [f"{source} row {row_number}" for row_number, _ in numbered]
    provided = tuple(lang for lang in MULTIJAIL_LANGUAGES if lang in columns)
    requested = _requested_public(languages, provided)

    items = []
    first_location: dict[str, str] = {}
    for where, (_, row) in zip(locations, numbered):
        item_id = _cell(row, "id")
        if not item_id:
            raise ConfigurationError(f"{where}: missing 'id'. Give every row a unique id.")
        if item_id in first_location:
            raise ConfigurationError(
                f"{where}: duplicate id {item_id!r}, first used at {first_location[item_id]}. "
                f"Give every row a unique id."
            )
        first_location[item_id] = where
        metadata = {"source": _cell(row, "source")} if _cell(row, "source") else {}
        items.append(
            ParallelItem(
                uid=f"multijail-{item_id}",
                text={lang: _cell(row, lang) for lang in provided},
                label="harmful",
                category=_cell(row, "tags") or None,
                split="test",
                metadata=metadata,
            )
        )
    kept, kept_languages, missing = _select_languages(
        "MultiJail", items, requested, provided, strict
    )
    return ParallelSet(name="multijail", items=kept, languages=kept_languages, missing=missing)


def load_strongreject(
    path: str | PathLike[str],
    languages: str | Iterable[str] | None = None,
    *,
    strict: bool = True,
) -> ParallelSet:
    """Load StrongREJECT from its CSV (``category, source, forbidden_prompt``, English only).

    Items are labelled ``harmful`` with the CSV's category, uids ``strongreject-<row>`` counted
    from 1, and all are in the ``test`` split. Requesting a language other than ``en`` reports it
    as missing.
    """
    file_path = Path(path).expanduser()
    if not file_path.exists():
        raise ConfigurationError(f"StrongREJECT: {file_path} not found. Pass the path of its CSV.")
    numbered = _read_csv(file_path, ("category", "forbidden_prompt"), "StrongREJECT")
    requested = _requested_public(languages, ("en",))

    items = []
    for index, (_, row) in enumerate(numbered, start=1):
        metadata = {"source": _cell(row, "source")} if _cell(row, "source") else {}
        items.append(
            ParallelItem(
                uid=f"strongreject-{index:03d}",
                text={"en": _cell(row, "forbidden_prompt")},
                label="harmful",
                category=_cell(row, "category") or None,
                split="test",
                metadata=metadata,
            )
        )
    kept, kept_languages, missing = _select_languages(
        "StrongREJECT", items, requested, ("en",), strict
    )
    return ParallelSet(name="strongreject", items=kept, languages=kept_languages, missing=missing)


# --------------------------------------------------------------------------------------------
# MGSM
# --------------------------------------------------------------------------------------------

_NUMBER_PATTERN = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def parse_number(text: str | int | float | None) -> int | float | None:
    """Parse a whole string such as ``"18"``, ``"1,000"``, ``"-2.5"`` or ``"$1,200."`` as a number.

    Surrounding whitespace, one leading ``$`` and one trailing period are ignored, and commas
    are accepted only as thousands separators. Unicode decimal digits (Bengali, Thai, full
    width) are read as digits. Returns an ``int`` when the value is integral, a ``float``
    otherwise, and ``None`` when the string is not a number.
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return int(text) if float(text).is_integer() else text
    cleaned = str(text).strip()
    cleaned = cleaned.removeprefix("$").strip()
    if cleaned.endswith(".") and not cleaned.endswith(".."):
        cleaned = cleaned[:-1]
    if not _NUMBER_PATTERN.fullmatch(cleaned):
        return None
    value = float(cleaned.replace(",", ""))
    return int(value) if value.is_integer() else value


def _read_mgsm_tsv(path: Path) -> list[tuple[str, str]]:
    """Read ``question<TAB>answer`` lines without a header, skipping blank lines."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid UTF-8 ({exc}). Save it as UTF-8.") from exc
    rows = []
    for line_number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ConfigurationError(
                f"{path}:{line_number}: expected 'question<TAB>answer', found no tab character."
            )
        question, answer = line.rsplit("\t", 1)
        rows.append((question.strip(), answer.strip()))
    if not rows:
        raise ConfigurationError(
            f"{path} is empty. MGSM files contain one 'question<TAB>answer' per line."
        )
    return rows


def _mgsm_rows_from_folder(
    folder: Path, requested: tuple[str, ...] | None
) -> tuple[dict[str, list[tuple[str, str]]], tuple[str, ...]]:
    files = {path.stem.removeprefix("mgsm_"): path for path in folder.glob("mgsm_*.tsv")}
    if not files:
        raise ConfigurationError(
            f"MGSM: {folder} contains no mgsm_<lang>.tsv files. Pass the folder of the MGSM TSVs."
        )
    provided = _order_languages(files)
    wanted = provided if requested is None else requested
    rows = {lang: _read_mgsm_tsv(files[lang]) for lang in wanted if lang in files}
    return rows, provided


def _mgsm_rows_from_hub(
    repo_id: str, requested: tuple[str, ...] | None
) -> tuple[dict[str, list[tuple[str, str]]], tuple[str, ...]]:
    wanted = MGSM_LANGUAGES if requested is None else requested
    rows = {}
    for lang in wanted:
        if lang not in MGSM_LANGUAGES:
            continue
        # The test split's "answer" column is empty, so the reference is "answer_number".
        hub_rows = _load_hub_dataset(repo_id, lang, "test")
        rows[lang] = [
            (_cell(row, "question"), _cell(row, "answer_number") or _cell(row, "answer"))
            for row in hub_rows
        ]
    return rows, MGSM_LANGUAGES


def load_mgsm(
    path_or_hub_id: str | PathLike[str] = MGSM_HUB_ID,
    languages: str | Iterable[str] | None = None,
    *,
    strict: bool = True,
) -> MGSMSet:
    """Load MGSM grade-school math problems from a folder of TSVs or the Hub.

    A local folder contains ``mgsm_<lang>.tsv`` files without a header, one
    ``question<TAB>answer`` per line, where line ``i`` is the same problem in every file. From the
    Hub, each language is a config of ``juletxara/mgsm`` with ``question`` and ``answer_number``.
    ``languages=None`` requests every language present. Answers are kept as written. Use
    :func:`parse_number` or ``MGSMItem.answer_number`` to compare them.
    """
    source = _resolve_source(path_or_hub_id, "MGSM")
    requested = None if languages is None else _check_language_codes(languages, LANGUAGE_NAMES)
    if isinstance(source, Path):
        if not source.is_dir():
            raise ConfigurationError(f"MGSM: {source} is not a folder of mgsm_<lang>.tsv files.")
        rows, provided = _mgsm_rows_from_folder(source, requested)
    else:
        rows, provided = _mgsm_rows_from_hub(source, requested)
    if requested is None:
        requested = provided

    counts = {lang: len(lang_rows) for lang, lang_rows in rows.items()}
    if len(set(counts.values())) > 1:
        raise ConfigurationError(
            f"MGSM: languages have different numbers of problems "
            f"({', '.join(f'{lang}={count}' for lang, count in counts.items())}), so rows cannot "
            f"be matched across languages. Use files where line i is the same problem everywhere."
        )
    size = next(iter(counts.values()), 0)
    reference_lang = "en" if "en" in rows else next(iter(rows), None)

    items = []
    for index in range(size):
        answer = rows[reference_lang][index][1] if reference_lang else ""
        for lang, lang_rows in rows.items():
            other = lang_rows[index][1]
            if _normalize_answer(other) != _normalize_answer(answer):
                raise ConfigurationError(
                    f"MGSM: problem {index + 1} has answer {answer!r} in {reference_lang} but "
                    f"{other!r} in {lang}. Check that the files list problems in the same order."
                )
        text = {lang: lang_rows[index][0] for lang, lang_rows in rows.items()}
        items.append(MGSMItem(uid=f"mgsm-{index + 1:03d}", text=text, answer=answer))

    # A requested language without a file or Hub config is absent from every item's text, so
    # _select_languages reports it as missing from all of them.
    if not items:
        raise ConfigurationError(
            f"MGSM: none of the requested languages ({', '.join(requested)}) is available. "
            f"Available: {', '.join(provided)}."
        )
    kept, kept_languages, missing = _select_languages("MGSM", items, requested, provided, strict)
    return MGSMSet(name="mgsm", items=kept, languages=kept_languages, missing=missing)


def _normalize_answer(answer: str) -> int | float | str:
    number = parse_number(answer)
    return answer.strip() if number is None else number


# --------------------------------------------------------------------------------------------
# MMMLU (and MMLU for English)
# --------------------------------------------------------------------------------------------


def _mmmlu_file(folder: Path, lang: str) -> Path | None:
    """Find the CSV of ``lang`` in a local folder.

    Accepted names are ``<lang>.csv``, ``mmmlu_<LOCALE>.csv`` and ``mmlu_<LOCALE>.csv`` with the
    locale written ``AB_CD`` or ``AB-CD`` (``EN_US`` for English).
    """
    locale = "EN_US" if lang == "en" else MMMLU_LOCALES.get(lang)
    names = [f"{lang}.csv"]
    if locale:
        for written in (locale, locale.replace("_", "-")):
            names += [f"mmmlu_{written}.csv", f"mmlu_{written}.csv"]
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _mc_item(
    lang: str,
    index: int,
    question: str,
    choices: Sequence[str],
    answer: str,
    subject: str,
    where: str,
) -> MultipleChoiceItem:
    if answer not in _CHOICE_LETTERS:
        raise ConfigurationError(f"{where}: invalid answer {answer!r}. Use one of A, B, C, D.")
    if not question:
        raise ConfigurationError(f"{where}: empty question. Every row needs question text.")
    return MultipleChoiceItem(
        uid=f"mmmlu-{index:05d}",
        language=lang,
        question=question,
        choices=tuple(choices),  # type: ignore[arg-type]
        answer=answer,
        subject=subject,
    )


def _mmmlu_rows_from_csv(path: Path, lang: str) -> list[MultipleChoiceItem]:
    numbered = _read_csv(path, _MMMLU_COLUMNS, "MMMLU")
    return [
        _mc_item(
            lang,
            index,
            _cell(row, "Question"),
            [_cell(row, letter) for letter in _CHOICE_LETTERS],
            _cell(row, "Answer").upper(),
            _cell(row, "Subject"),
            f"{path}:{line_number}",
        )
        for index, (line_number, row) in enumerate(numbered)
    ]


def _mmmlu_rows_from_hub(repo_id: str, english_hub_id: str, lang: str) -> list[MultipleChoiceItem]:
    if lang == "en":
        # cais/mmlu stores the choices as a list and the answer as an index 0-3.
        rows = _load_hub_dataset(english_hub_id, "all", "test")
        items = []
        for index, row in enumerate(rows):
            where = f"{english_hub_id} row {index + 1}"
            choices = list(row.get("choices") or [])
            answer = row.get("answer")
            if len(choices) != 4 or not isinstance(answer, int) or not 0 <= answer < 4:
                raise ConfigurationError(
                    f"{where}: expected 4 choices and an answer index 0-3, got {len(choices)} "
                    f"choices and answer {answer!r}."
                )
            item = _mc_item(
                lang,
                index,
                _cell(row, "question"),
                [str(choice) for choice in choices],
                _CHOICE_LETTERS[answer],
                _cell(row, "subject"),
                where,
            )
            items.append(item)
        return items

    rows = _load_hub_dataset(repo_id, MMMLU_LOCALES[lang], "test")
    return [
        _mc_item(
            lang,
            index,
            _cell(row, "Question"),
            [_cell(row, letter) for letter in _CHOICE_LETTERS],
            _cell(row, "Answer").upper(),
            _cell(row, "Subject"),
            f"{repo_id} {MMMLU_LOCALES[lang]} row {index + 1}",
        )
        for index, row in enumerate(rows)
    ]


def _limit_questions(
    items: list[MultipleChoiceItem], limit: int, seed: int
) -> list[MultipleChoiceItem]:
    """Keep ``limit`` questions chosen by seeded hash of their uid, in their original order."""
    if limit >= len(items):
        return items
    chosen = set(sorted(range(len(items)), key=lambda i: _uid_hash(items[i].uid, seed))[:limit])
    return [item for i, item in enumerate(items) if i in chosen]


def load_mmmlu(
    path_or_hub_id: str | PathLike[str] = MMMLU_HUB_ID,
    languages: str | Iterable[str] | None = None,
    subjects: Iterable[str] | None = None,
    limit: int | None = None,
    *,
    strict: bool = True,
    seed: int = 0,
    english_hub_id: str = MMLU_HUB_ID,
) -> MultipleChoiceSet:
    """Load MMMLU multiple-choice questions per language from a local folder or the Hub.

    Each source has the columns ``Question, A, B, C, D, Answer, Subject``, with ``Answer`` a
    letter. From the Hub, language ``xx`` is config ``MMMLU_LOCALES[xx]`` of ``openai/MMMLU``
    (split ``test``), and English is the ``all`` config of ``cais/mmlu``. A local folder contains
    one CSV per language (names in ``_mmmlu_file``). MMMLU has no Thai, Vietnamese or Hebrew, so
    requesting them reports them as missing.

    ``subjects`` keeps only those MMLU subjects (for example ``"college_physics"``). ``limit``
    keeps at most that many questions per language, chosen by seeded hash of the row index, so
    languages whose files have the same rows keep the same questions.
    """
    source = _resolve_source(path_or_hub_id, "MMMLU")
    hub_languages = ("en", *MMMLU_LOCALES)
    if isinstance(source, Path):
        if not source.is_dir():
            raise ConfigurationError(f"MMMLU: {source} is not a folder of per-language CSV files.")
        files = {lang: _mmmlu_file(source, lang) for lang in LANGUAGE_NAMES}
        provided = _order_languages(lang for lang, path in files.items() if path is not None)
    else:
        provided = _order_languages(hub_languages)
    requested = _requested_public(languages, provided)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigurationError(
            f"MMMLU: limit must be a non-negative integer or None, got {limit!r}."
        )

    items: dict[str, list[MultipleChoiceItem]] = {}
    for lang in requested:
        if lang not in provided:
            continue
        if isinstance(source, Path):
            items[lang] = _mmmlu_rows_from_csv(files[lang], lang)  # type: ignore[arg-type]
        else:
            items[lang] = _mmmlu_rows_from_hub(source, english_hub_id, lang)

    if subjects is not None:
        wanted = {subjects} if isinstance(subjects, str) else set(subjects)
        found = {item.subject for questions in items.values() for item in questions}
        unknown = sorted(wanted - found)
        if unknown:
            raise ConfigurationError(
                f"MMMLU: unknown subject {', '.join(map(repr, unknown))}. Found subjects include: "
                f"{', '.join(sorted(found)[:10])}."
            )
        items = {
            lang: [item for item in questions if item.subject in wanted]
            for lang, questions in items.items()
        }
    if limit is not None:
        items = {
            lang: _limit_questions(questions, limit, seed) for lang, questions in items.items()
        }

    absent = [lang for lang in requested if lang not in items]
    largest = max((len(questions) for questions in items.values()), default=0)
    missing = {lang: largest for lang in absent}
    if absent and strict:
        raise ConfigurationError(
            f"MMMLU: no questions in {', '.join(absent)}. The source provides "
            f"{', '.join(provided)}. Request only those languages or pass strict=False."
        )
    if absent:
        logger.warning(
            "MMMLU: languages %s are not in the source and were left out.", ", ".join(absent)
        )
    if not items:
        raise ConfigurationError(
            f"MMMLU: none of the requested languages ({', '.join(requested)}) is available. "
            f"The source provides {', '.join(provided) or 'no languages'}."
        )
    return MultipleChoiceSet(name="mmmlu", items=items, languages=tuple(items), missing=missing)
