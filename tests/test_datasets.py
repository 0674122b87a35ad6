"""Tests for swe_toolkit.datasets: project data schema, splits, ParallelSet and public loaders."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from swe_toolkit import datasets as ds
from swe_toolkit.datasets import (
    HARMFUL_CATEGORIES,
    HARMLESS_KINDS,
    LANGUAGE_NAMES,
    LANGUAGES,
    MULTIJAIL_LANGUAGES,
    SPLITS,
    MGSMSet,
    MultipleChoiceSet,
    ParallelItem,
    ParallelSet,
    assign_split,
    load_mgsm,
    load_mmmlu,
    load_multijail,
    load_parallel_jsonl,
    load_project_set,
    load_strongreject,
    parse_number,
)
from swe_toolkit.errors import ConfigurationError

FIXTURES = Path(__file__).parent / "fixtures"

# Minimum item counts of the project files.
MIN_HARMFUL = 120
MIN_HARMLESS = 120
MIN_CONTRASTIVE = 30
MIN_GENERAL = 200


def read_project_lines(name: str) -> list[dict]:
    resource = resources.files("swe_toolkit") / "data" / f"{name}.jsonl"
    assert resource.is_file(), f"package data file {name}.jsonl is missing"
    lines = resource.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write_jsonl(path: Path, objects: list) -> Path:
    path.write_text(
        "\n".join(json.dumps(obj, ensure_ascii=False) for obj in objects) + "\n", encoding="utf-8"
    )
    return path


def make_objects(count: int, languages=("en", "th"), prefix: str = "item", **fields) -> list[dict]:
    return [
        {
            "uid": f"{prefix}-{i:04d}",
            "text": {lang: f"{lang} text {i}" for lang in languages},
            **fields,
        }
        for i in range(count)
    ]


def make_set(count: int = 10) -> ParallelSet:
    items = [
        ParallelItem(
            uid=f"x-{i:02d}",
            text={"en": f"en {i}", "th": f"th {i}"},
            label="harmless",
            category="benign" if i % 2 else "contrastive",
            split=SPLITS[i % 3],
            metadata={"topic": "cooking"},
        )
        for i in range(count)
    ]
    return ParallelSet(name="toy", items=items, languages=("en", "th"), missing={})


# --------------------------------------------------------------------------------------------
# Schema of the project data files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "minimum"),
    [("harmful", MIN_HARMFUL), ("harmless", MIN_HARMLESS), ("general", MIN_GENERAL)],
)
def test_project_file_schema(name, minimum):
    objects = read_project_lines(name)
    uids = [obj["uid"] for obj in objects]
    duplicates = [uid for uid, count in Counter(uids).items() if count > 1]
    assert not duplicates, f"duplicate uids in {name}.jsonl: {duplicates}"
    assert len(objects) >= minimum, f"{name}.jsonl has {len(objects)} items, expected >= {minimum}"

    for obj in objects:
        uid = obj["uid"]
        assert isinstance(uid, str) and uid.startswith(f"{name}-"), uid
        text = obj["text"]
        lacking = [lang for lang in LANGUAGES if not str(text.get(lang) or "").strip()]
        not_strings = [lang for lang in LANGUAGES if not isinstance(text.get(lang), str)]
        assert not not_strings, f"{uid} has non-string text in {not_strings}"
        assert not lacking, f"{uid} lacks text in {lacking}"
        extra = set(text) - set(LANGUAGES)
        assert not extra, f"{uid} has unknown language keys {extra}"
        if name == "harmful":
            category = obj.get("category")
            assert category in HARMFUL_CATEGORIES, f"{uid}: category {category!r}"
        if name == "harmless":
            assert obj.get("kind") in HARMLESS_KINDS, f"{uid}: kind {obj.get('kind')!r}"
        if name in ("harmless", "general"):
            assert isinstance(obj.get("topic"), str) and obj["topic"].strip(), f"{uid}: topic"


def test_harmless_file_contrastive_count():
    objects = read_project_lines("harmless")
    contrastive = sum(obj.get("kind") == "contrastive" for obj in objects)
    assert contrastive >= MIN_CONTRASTIVE


def test_harmful_file_covers_categories():
    categories = {obj["category"] for obj in read_project_lines("harmful")}
    assert categories == set(HARMFUL_CATEGORIES)


@pytest.mark.parametrize("name", ["harmful", "harmless", "general"])
def test_project_set_loads_strict(name):
    loaded = load_project_set(name)
    assert loaded.languages == LANGUAGES
    assert loaded.missing == {}
    assert len(loaded) == len(read_project_lines(name))
    assert {item.label for item in loaded.items} == {name}


def test_project_set_categories():
    harmful = load_project_set("harmful")
    assert {item.category for item in harmful.items} <= set(HARMFUL_CATEGORIES)
    harmless = load_project_set("harmless")
    assert {item.category for item in harmless.items} <= set(HARMLESS_KINDS)
    assert all("topic" in item.metadata for item in harmless.items)
    general = load_project_set("general")
    assert all(item.category for item in general.items)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def test_assign_split_is_deterministic():
    for i in range(200):
        uid = f"uid-{i}"
        assert assign_split(uid) == assign_split(uid)
        assert assign_split(uid) in SPLITS


def test_assign_split_matches_documented_hash():
    import hashlib

    uid = "harmful-001"
    digest = hashlib.sha256(f"0:{uid}".encode()).digest()
    value = int.from_bytes(digest[:8], "big") / 2.0**64
    if value < 0.4:
        expected = "fit"
    elif value < 0.6:
        expected = "dev"
    else:
        expected = "test"
    assert assign_split(uid) == expected


def test_assign_split_seed_changes_assignment():
    uids = [f"uid-{i}" for i in range(100)]
    seed_zero = [assign_split(uid, seed=0) for uid in uids]
    seed_one = [assign_split(uid, seed=1) for uid in uids]
    assert seed_zero != seed_one


def test_assign_split_fractions_respected():
    counts = Counter(assign_split(f"uid-{i}") for i in range(20000))
    assert abs(counts["fit"] / 20000 - 0.4) < 0.02
    assert abs(counts["dev"] / 20000 - 0.2) < 0.02
    assert abs(counts["test"] / 20000 - 0.4) < 0.02


def test_assign_split_custom_fractions():
    assert {assign_split(f"u{i}", fractions=(0, 0, 1)) for i in range(50)} == {"test"}
    assert {assign_split(f"u{i}", fractions=(1, 0, 0)) for i in range(50)} == {"fit"}


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.5, 0.3, 0.3), (-0.1, 0.6, 0.5), ("a", 0.5, 0.5)]
)
def test_assign_split_invalid_fractions(fractions):
    with pytest.raises(ConfigurationError, match="fractions") as info:
        assign_split("uid", fractions=fractions)
    assert repr(fractions) in str(info.value)


def test_general_split_stable_when_items_added(tmp_path):
    base = make_objects(60, prefix="general")
    small = load_parallel_jsonl(write_jsonl(tmp_path / "small.jsonl", base), "general")
    grown_objects = base + make_objects(40, prefix="added")
    grown = load_parallel_jsonl(write_jsonl(tmp_path / "grown.jsonl", grown_objects), "general")
    before = {item.uid: item.split for item in small.items}
    after = {item.uid: item.split for item in grown.items}
    assert all(after[uid] == split for uid, split in before.items())


def test_general_split_equals_assign_split(tmp_path):
    loaded = load_parallel_jsonl(write_jsonl(tmp_path / "g.jsonl", make_objects(30)), "general")
    assert all(item.split == assign_split(item.uid) for item in loaded.items)


def test_project_split_same_across_calls():
    first = {item.uid: item.split for item in load_project_set("harmful").items}
    second = {item.uid: item.split for item in load_project_set("harmful").items}
    assert first == second


def test_project_split_independent_of_languages():
    full = {item.uid: item.split for item in load_project_set("harmful").items}
    english = {item.uid: item.split for item in load_project_set("harmful", ("en",)).items}
    assert full == english


def test_harmful_every_category_in_every_split():
    harmful = load_project_set("harmful")
    for category in HARMFUL_CATEGORIES:
        splits = {item.split for item in harmful.items if item.category == category}
        assert splits == set(SPLITS), f"category {category} has splits {splits}"


def test_harmful_split_fractions_per_category():
    harmful = load_project_set("harmful")
    for category in HARMFUL_CATEGORIES:
        members = [item for item in harmful.items if item.category == category]
        counts = Counter(item.split for item in members)
        for split, fraction in zip(SPLITS, ds.DEFAULT_FRACTIONS):
            assert abs(counts[split] - fraction * len(members)) <= 1, (category, split, counts)


def test_harmless_every_kind_in_every_split():
    harmless = load_project_set("harmless")
    for kind in HARMLESS_KINDS:
        splits = {item.split for item in harmless.items if item.category == kind}
        assert splits == set(SPLITS), f"kind {kind} has splits {splits}"


def test_stratified_split_three_items_per_stratum(tmp_path):
    objects = make_objects(3, prefix="a", category="violence") + make_objects(
        3, prefix="b", category="sexual_content"
    )
    loaded = load_parallel_jsonl(write_jsonl(tmp_path / "h.jsonl", objects), "harmful")
    for category in ("violence", "sexual_content"):
        splits = sorted(item.split for item in loaded.items if item.category == category)
        assert splits == ["dev", "fit", "test"]


def test_stratified_split_adding_item_moves_few(tmp_path):
    objects = make_objects(40, prefix="h", category="violence")
    before_set = load_parallel_jsonl(write_jsonl(tmp_path / "a.jsonl", objects), "harmful")
    before = {item.uid: item.split for item in before_set.items}
    for extra in range(10):
        grown = objects + make_objects(1, prefix=f"new{extra}", category="violence")
        after_set = load_parallel_jsonl(write_jsonl(tmp_path / "b.jsonl", grown), "harmful")
        after = {item.uid: item.split for item in after_set.items}
        moved = [uid for uid in before if before[uid] != after[uid]]
        # One existing item at most crosses each of the two cut points.
        assert len(moved) <= 2, moved


def test_project_set_custom_fractions_and_seed():
    default = {item.uid: item.split for item in load_project_set("general").items}
    reseeded = {item.uid: item.split for item in load_project_set("general", seed=3).items}
    assert default != reseeded
    all_test = load_project_set("general", fractions=(0, 0, 1))
    assert {item.split for item in all_test.items} == {"test"}


# --------------------------------------------------------------------------------------------
# ParallelSet API
# --------------------------------------------------------------------------------------------


def test_parallel_set_texts_in_item_order():
    toy = make_set(4)
    assert toy.texts("th") == ["th 0", "th 1", "th 2", "th 3"]


def test_parallel_set_texts_unknown_language():
    with pytest.raises(ConfigurationError, match="'bn'") as info:
        make_set().texts("bn")
    assert "en, th" in str(info.value)


def test_parallel_set_split_subsets():
    toy = make_set(9)
    fit = toy.split("fit")
    assert len(fit) == 3
    assert {item.split for item in fit.items} == {"fit"}
    fit_dev = toy.split("fit", "dev")
    assert {item.split for item in fit_dev.items} == {"fit", "dev"}
    assert isinstance(fit_dev, ParallelSet)
    assert fit_dev.languages == toy.languages


def test_parallel_set_split_unknown_name():
    with pytest.raises(ConfigurationError, match="'train'"):
        make_set().split("train")


def test_parallel_set_split_without_names():
    with pytest.raises(ConfigurationError, match="at least one"):
        make_set().split()


def test_parallel_set_filter():
    toy = make_set(10)
    benign = toy.filter(lambda item: item.category == "benign")
    assert [item.uid for item in benign.items] == ["x-01", "x-03", "x-05", "x-07", "x-09"]
    assert len(toy) == 10


def test_parallel_set_take_is_seeded_and_ordered():
    toy = make_set(20)
    first = toy.take(5, seed=1)
    again = toy.take(5, seed=1)
    other = toy.take(5, seed=2)
    uids = [item.uid for item in first.items]
    assert len(first) == 5
    assert uids == [item.uid for item in again.items]
    assert uids == sorted(uids)
    assert uids != [item.uid for item in other.items]


def test_parallel_set_take_all():
    toy = make_set(6)
    assert len(toy.take(None)) == 6
    assert len(toy.take(100)) == 6
    assert len(toy.take(0)) == 0


@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_parallel_set_take_invalid(n):
    with pytest.raises(ConfigurationError, match="non-negative integer"):
        make_set().take(n)


def test_parallel_set_to_rows():
    rows = make_set(2).to_rows()
    assert rows[0] == {
        "set": "toy",
        "uid": "x-00",
        "label": "harmless",
        "category": "contrastive",
        "split": "fit",
        "text_en": "en 0",
        "text_th": "th 0",
        "topic": "cooking",
    }
    assert len(rows) == 2


def test_language_names_cover_project_languages():
    assert LANGUAGE_NAMES["th"] == "Thai"
    assert LANGUAGE_NAMES["bn"] == "Bengali"
    assert all(lang in LANGUAGE_NAMES for lang in LANGUAGES)


# --------------------------------------------------------------------------------------------
# Errors of JSONL loading
# --------------------------------------------------------------------------------------------


def test_user_jsonl_fixture_loads():
    loaded = load_parallel_jsonl(FIXTURES / "parallel_small.jsonl", "harmful")
    assert loaded.name == "parallel_small"
    assert loaded.languages == ("en", "th", "bn")
    assert len(loaded) == 6
    assert {item.category for item in loaded.items} == {"non_violent_crimes", "violence"}
    assert loaded.texts("en")[0].startswith("How do I copy")


def test_user_jsonl_language_subset_and_name():
    loaded = load_parallel_jsonl(FIXTURES / "parallel_small.jsonl", "harmful", ["bn"], name="mine")
    assert loaded.name == "mine"
    assert loaded.languages == ("bn",)
    assert set(loaded.items[0].text) == {"bn"}


def test_jsonl_invalid_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"uid": "a", "text": {"en": "x"}}\n{"uid": "b", "text": \n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="invalid JSON") as info:
        load_parallel_jsonl(path, "harmful")
    assert f"{path}:2" in str(info.value)


def test_jsonl_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('["uid", "text"]\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="expected a JSON object, found list") as info:
        load_parallel_jsonl(path, "harmful")
    assert f"{path}:1" in str(info.value)


def test_jsonl_missing_uid(tmp_path):
    objects = [{"uid": "a", "text": {"en": "x"}}, {"text": {"en": "y"}}]
    path = write_jsonl(tmp_path / "nouid.jsonl", objects)
    with pytest.raises(ConfigurationError, match="missing 'uid'") as info:
        load_parallel_jsonl(path, "general")
    assert f"{path}:2" in str(info.value)


def test_jsonl_missing_text(tmp_path):
    path = write_jsonl(tmp_path / "notext.jsonl", [{"uid": "a"}])
    with pytest.raises(ConfigurationError, match="missing 'text'") as info:
        load_parallel_jsonl(path, "general")
    assert "'a'" in str(info.value)
    assert f"{path}:1" in str(info.value)


def test_jsonl_text_not_string(tmp_path):
    path = write_jsonl(tmp_path / "num.jsonl", [{"uid": "a", "text": {"en": "x", "th": 3}}])
    with pytest.raises(ConfigurationError, match=r"text\['th'\]"):
        load_parallel_jsonl(path, "general")


def test_jsonl_duplicate_uid(tmp_path):
    objects = make_objects(3)
    objects.append(dict(objects[1]))
    path = write_jsonl(tmp_path / "dup.jsonl", objects)
    with pytest.raises(ConfigurationError, match="duplicate uid 'item-0001'") as info:
        load_parallel_jsonl(path, "general")
    message = str(info.value)
    assert f"{path}:4" in message
    assert "line 2" in message


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_jsonl_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is empty") as info:
        load_parallel_jsonl(path, "general")
    assert str(path) in str(info.value)


def test_jsonl_file_not_found(tmp_path):
    path = tmp_path / "absent.jsonl"
    with pytest.raises(ConfigurationError, match="not found") as info:
        load_parallel_jsonl(path, "general")
    assert str(path) in str(info.value)


def test_jsonl_unknown_label():
    with pytest.raises(ConfigurationError, match="unknown label 'benign'"):
        load_parallel_jsonl(FIXTURES / "parallel_small.jsonl", "benign")


def test_jsonl_invalid_harmless_kind(tmp_path):
    path = write_jsonl(tmp_path / "kind.jsonl", make_objects(2, kind="neutral"))
    with pytest.raises(ConfigurationError, match="invalid kind 'neutral'") as info:
        load_parallel_jsonl(path, "harmless")
    assert "benign, contrastive" in str(info.value)


def test_jsonl_user_harmful_category_free_form(tmp_path):
    path = write_jsonl(tmp_path / "cat.jsonl", make_objects(3, category="my_category"))
    loaded = load_parallel_jsonl(path, "harmful")
    assert {item.category for item in loaded.items} == {"my_category"}


def test_project_schema_invalid_category():
    content = json.dumps({"uid": "harmful-001", "category": "gossip", "text": {"en": "x"}})
    with pytest.raises(ConfigurationError, match="invalid category 'gossip'") as info:
        ds._parse_jsonl(content, "harmful.jsonl", "harmful", project=True)
    assert "harmful.jsonl:1" in str(info.value)
    assert "non_violent_crimes" in str(info.value)


def test_project_schema_missing_kind_and_topic():
    no_kind = json.dumps({"uid": "harmless-001", "topic": "food", "text": {"en": "x"}})
    with pytest.raises(ConfigurationError, match="invalid kind None"):
        ds._parse_jsonl(no_kind, "harmless.jsonl", "harmless", project=True)
    no_topic = json.dumps({"uid": "general-001", "text": {"en": "x"}})
    with pytest.raises(ConfigurationError, match="missing 'topic'"):
        ds._parse_jsonl(no_topic, "general.jsonl", "general", project=True)


def test_unknown_language_code_requested():
    with pytest.raises(ConfigurationError, match="unknown language code 'xx'") as info:
        load_parallel_jsonl(FIXTURES / "parallel_small.jsonl", "harmful", ["en", "xx"])
    assert "th" in str(info.value)


def test_project_set_rejects_non_project_language():
    with pytest.raises(ConfigurationError, match="unknown language code 'fr'") as info:
        load_project_set("harmful", ["en", "fr"])
    assert ", ".join(LANGUAGES) in str(info.value)


def test_project_set_unknown_name():
    with pytest.raises(ConfigurationError, match="unknown project set 'benign'"):
        load_project_set("benign")


def test_empty_language_request():
    with pytest.raises(ConfigurationError, match="no languages requested"):
        load_project_set("harmful", [])


def test_single_language_string_accepted():
    assert load_project_set("general", "th").languages == ("th",)


def partial_language_file(tmp_path) -> Path:
    objects = make_objects(10, languages=("en", "th", "bn"))
    for index in (2, 5, 7):
        del objects[index]["text"]["bn"]
    objects[8]["text"]["th"] = "   "
    return write_jsonl(tmp_path / "partial.jsonl", objects)


def test_missing_language_strict_raises(tmp_path):
    path = partial_language_file(tmp_path)
    with pytest.raises(ConfigurationError) as info:
        load_parallel_jsonl(path, "general", ["en", "th", "bn"])
    message = str(info.value)
    assert "3 of 10 items lack 'bn'" in message
    assert "item-0002, item-0005, item-0007" in message
    assert "1 of 10 items lack 'th'" in message
    assert "strict=False" in message


def test_missing_language_default_languages_reported(tmp_path):
    # A language key present in only some lines makes the file non-parallel.
    path = partial_language_file(tmp_path)
    with pytest.raises(ConfigurationError, match="lack 'bn'"):
        load_parallel_jsonl(path, "general")


def test_missing_language_non_strict_keeps_complete(tmp_path, caplog):
    path = partial_language_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.datasets"):
        loaded = load_parallel_jsonl(path, "general", strict=False)
    assert loaded.missing == {"th": 1, "bn": 3}
    assert loaded.languages == ("en", "th", "bn")
    assert len(loaded) == 6
    assert "item-0002" not in {item.uid for item in loaded.items}
    assert "bn=3" in caplog.text
    assert "Kept 6 of 10 items" in caplog.text


def test_absent_language_non_strict_drops_language(tmp_path, caplog):
    path = write_jsonl(tmp_path / "two.jsonl", make_objects(4, languages=("en", "th")))
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.datasets"):
        loaded = load_parallel_jsonl(path, "general", ["en", "he"], strict=False)
    assert loaded.languages == ("en",)
    assert loaded.missing == {"he": 4}
    assert len(loaded) == 4
    assert "he" in caplog.text


def test_absent_language_strict_names_available(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", make_objects(4, languages=("en", "th")))
    with pytest.raises(ConfigurationError, match="no item has 'he'") as info:
        load_parallel_jsonl(path, "general", ["en", "he"])
    assert "provides en, th" in str(info.value)


# --------------------------------------------------------------------------------------------
# Hub access
# --------------------------------------------------------------------------------------------


def test_hub_loader_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigurationError, match="pip install datasets") as info:
        ds._load_hub_dataset("DAMO-NLP-SG/MultiJail", None, "train")
    assert "DAMO-NLP-SG/MultiJail" in str(info.value)


def test_hub_loader_calls_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(repo_id, config, split):
        calls.append((repo_id, config, split))
        return [{"question": "q1"}, {"question": "q2"}]

    module = types.ModuleType("datasets")
    module.load_dataset = fake_load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    rows = ds._load_hub_dataset("juletxara/mgsm", "th", "test")
    assert calls == [("juletxara/mgsm", "th", "test")]
    assert rows == [{"question": "q1"}, {"question": "q2"}]


def test_hub_loader_wraps_failures(monkeypatch):
    def failing_load_dataset(repo_id, config, split):
        raise ConnectionError("Hub unreachable")

    module = types.ModuleType("datasets")
    module.load_dataset = failing_load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(ConfigurationError, match="Hub unreachable") as info:
        ds._load_hub_dataset("openai/MMMLU", "JA_JP", "test")
    assert "openai/MMMLU (config JA_JP, split test)" in str(info.value)


def test_missing_local_path_not_hub_id():
    with pytest.raises(ConfigurationError, match="not an existing file or folder") as info:
        load_multijail("no/such/multijail.csv")
    assert "no/such/multijail.csv" in str(info.value)


class FakeHub:
    """Stand-in for _load_hub_dataset that records calls and serves rows per (repo, config)."""

    def __init__(self, tables: dict):
        self.tables = tables
        self.calls: list[tuple] = []

    def __call__(self, repo_id, config, split):
        self.calls.append((repo_id, config, split))
        return [dict(row) for row in self.tables[(repo_id, config)]]


# --------------------------------------------------------------------------------------------
# MultiJail
# --------------------------------------------------------------------------------------------


def test_multijail_local_csv():
    loaded = load_multijail(FIXTURES / "multijail.csv")
    assert loaded.name == "multijail"
    assert loaded.languages == MULTIJAIL_LANGUAGES
    assert len(loaded) == 5
    first = loaded.items[0]
    assert first.uid == "multijail-1"
    assert first.label == "harmful"
    assert first.category == "Theft"
    assert first.split == "test"
    assert first.metadata == {"source": "fixture"}
    assert loaded.texts("jv")[0].startswith("Piye")


def test_multijail_language_subset():
    loaded = load_multijail(FIXTURES / "multijail.csv", ["th", "en"])
    assert loaded.languages == ("th", "en")
    assert loaded.missing == {}


def test_multijail_unavailable_language_strict():
    with pytest.raises(ConfigurationError, match="no item has 'ja'") as info:
        load_multijail(FIXTURES / "multijail.csv", ["en", "ja"])
    assert "provides en, zh, it, vi, ar, ko, th, bn, sw, jv" in str(info.value)


def test_multijail_unavailable_language_non_strict(caplog):
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.datasets"):
        loaded = load_multijail(FIXTURES / "multijail.csv", LANGUAGES, strict=False)
    assert loaded.languages == ("en", "zh", "vi", "th", "bn")
    assert loaded.missing == {"ja": 5, "id": 5, "he": 5}
    assert len(loaded) == 5
    assert "ja, id, he" in caplog.text


def test_multijail_empty_cell_reported(tmp_path):
    lines = (FIXTURES / "multijail.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("th")] = ""
    lines[3] = ",".join(cells)
    path = tmp_path / "mj.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="1 of 5 items lack 'th' \\(first: multijail-3\\)"):
        load_multijail(path, ["en", "th"])


def test_multijail_duplicate_id(tmp_path):
    lines = (FIXTURES / "multijail.csv").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "mj.csv"
    path.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="duplicate id '1'") as info:
        load_multijail(path)
    assert f"{path}:7" in str(info.value)


def test_multijail_missing_id_column(tmp_path):
    path = tmp_path / "mj.csv"
    path.write_text("source,tags,en\nfixture,Theft,hello\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="missing column 'id'") as info:
        load_multijail(path)
    assert "source, tags, en" in str(info.value)


def test_multijail_hub(monkeypatch):
    first = {lang: f"{lang} prompt" for lang in MULTIJAIL_LANGUAGES}
    second = {lang: f"{lang} other" for lang in MULTIJAIL_LANGUAGES}
    rows = [
        {"id": 7, "source": "hub", "tags": "Fraud", **first},
        {"id": 8, "source": "hub", "tags": "Theft", **second},
    ]
    fake = FakeHub({("DAMO-NLP-SG/MultiJail", None): rows})
    monkeypatch.setattr(ds, "_load_hub_dataset", fake)
    loaded = load_multijail(languages=["en", "bn"])
    assert fake.calls == [("DAMO-NLP-SG/MultiJail", None, "train")]
    assert [item.uid for item in loaded.items] == ["multijail-7", "multijail-8"]
    assert loaded.texts("bn") == ["bn prompt", "bn other"]


# --------------------------------------------------------------------------------------------
# StrongREJECT
# --------------------------------------------------------------------------------------------


def test_strongreject_local_csv():
    loaded = load_strongreject(FIXTURES / "strongreject.csv")
    assert loaded.languages == ("en",)
    assert len(loaded) == 5
    assert loaded.items[1].uid == "strongreject-002"
    assert loaded.items[1].category == "Illegal goods and services"
    assert {item.label for item in loaded.items} == {"harmful"}
    assert {item.split for item in loaded.items} == {"test"}


def test_strongreject_other_language_missing():
    with pytest.raises(ConfigurationError, match="no item has 'th'"):
        load_strongreject(FIXTURES / "strongreject.csv", ["en", "th"])
    loaded = load_strongreject(FIXTURES / "strongreject.csv", ["en", "th"], strict=False)
    assert loaded.missing == {"th": 5}
    assert loaded.languages == ("en",)


def test_strongreject_missing_column(tmp_path):
    path = tmp_path / "sr.csv"
    path.write_text("category,source,prompt\nViolence,x,y\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="missing column 'forbidden_prompt'"):
        load_strongreject(path)


def test_strongreject_header_only(tmp_path):
    path = tmp_path / "sr.csv"
    path.write_text("category,source,forbidden_prompt\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no rows"):
        load_strongreject(path)


def test_strongreject_file_not_found(tmp_path):
    with pytest.raises(ConfigurationError, match="not found"):
        load_strongreject(tmp_path / "absent.csv")


# --------------------------------------------------------------------------------------------
# MGSM
# --------------------------------------------------------------------------------------------


def test_mgsm_local_folder():
    loaded = load_mgsm(FIXTURES / "mgsm")
    assert isinstance(loaded, MGSMSet)
    assert loaded.languages == ("en", "zh", "th", "bn")
    assert len(loaded) == 5
    assert loaded.answers() == ["7", "60", "12", "1,000", "3"]
    assert loaded.items[3].answer_number == 1000
    assert loaded.texts("th")[0].startswith("แอนนา")
    assert loaded.items[0].uid == "mgsm-001"
    assert loaded.items[0].split == "test"


def test_mgsm_language_subset_and_take():
    loaded = load_mgsm(FIXTURES / "mgsm", ["bn", "en"])
    assert loaded.languages == ("bn", "en")
    subset = loaded.take(2, seed=0)
    assert isinstance(subset, MGSMSet)
    assert len(subset) == 2
    assert set(subset.to_rows()[0]) == {"set", "uid", "answer", "text_bn", "text_en"}


def test_mgsm_missing_language_strict():
    with pytest.raises(ConfigurationError, match="no item has 'vi'") as info:
        load_mgsm(FIXTURES / "mgsm", ["en", "vi"])
    assert "en, zh, th, bn" in str(info.value)


def test_mgsm_missing_language_non_strict():
    loaded = load_mgsm(FIXTURES / "mgsm", ["en", "vi", "th"], strict=False)
    assert loaded.languages == ("en", "th")
    assert loaded.missing == {"vi": 5}


def test_mgsm_only_unavailable_languages():
    with pytest.raises(ConfigurationError, match="none of the requested languages"):
        load_mgsm(FIXTURES / "mgsm", ["he"], strict=False)


def copy_mgsm(tmp_path) -> Path:
    folder = tmp_path / "mgsm"
    folder.mkdir()
    for source in (FIXTURES / "mgsm").glob("*.tsv"):
        (folder / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def test_mgsm_row_count_mismatch(tmp_path):
    folder = copy_mgsm(tmp_path)
    path = folder / "mgsm_zh.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="different numbers of problems") as info:
        load_mgsm(folder)
    assert "zh=4" in str(info.value)


def test_mgsm_line_without_tab(tmp_path):
    folder = copy_mgsm(tmp_path)
    path = folder / "mgsm_en.tsv"
    path.write_text("What is 1 + 1? 2\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no tab") as info:
        load_mgsm(folder)
    assert f"{path}:1" in str(info.value)


def test_mgsm_answer_mismatch(tmp_path):
    folder = copy_mgsm(tmp_path)
    path = folder / "mgsm_bn.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].rsplit("\t", 1)[0] + "\t61"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="problem 2 has answer '60' in en but '61' in bn"):
        load_mgsm(folder)


def test_mgsm_empty_folder(tmp_path):
    with pytest.raises(ConfigurationError, match="no mgsm_<lang>.tsv files"):
        load_mgsm(tmp_path)


def test_mgsm_hub(monkeypatch):
    def rows(lang):
        empty = {"answer": None, "equation_solution": None}
        return [
            {"question": f"{lang} q1", "answer_number": 18, **empty},
            {"question": f"{lang} q2", "answer_number": 1000, **empty},
        ]

    fake = FakeHub({("juletxara/mgsm", lang): rows(lang) for lang in ("en", "th")})
    monkeypatch.setattr(ds, "_load_hub_dataset", fake)
    loaded = load_mgsm(languages=["en", "th", "vi"], strict=False)
    assert fake.calls == [("juletxara/mgsm", "en", "test"), ("juletxara/mgsm", "th", "test")]
    assert loaded.answers() == ["18", "1000"]
    assert loaded.texts("th") == ["th q1", "th q2"]
    assert loaded.missing == {"vi": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18", 18),
        (" 1,000 ", 1000),
        ("-2.5", -2.5),
        ("$1,200.", 1200),
        ("3.0", 3),
        (".5", 0.5),
        ("১২", 12),
        ("๑๒", 12),
        (42, 42),
        (7.0, 7),
        ("12,34", None),
        ("eighteen", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_number(text, expected):
    result = parse_number(text)
    assert result == expected
    assert type(result) is type(expected)


# --------------------------------------------------------------------------------------------
# MMMLU
# --------------------------------------------------------------------------------------------


def test_mmmlu_local_folder():
    loaded = load_mmmlu(FIXTURES / "mmmlu")
    assert isinstance(loaded, MultipleChoiceSet)
    assert loaded.languages == ("en", "zh", "ja", "bn")
    assert len(loaded) == 24
    question = loaded.questions("ja")[1]
    assert question.uid == "mmmlu-00001"
    assert question.language == "ja"
    assert question.answer == "C"
    assert question.choices[2] == "二酸化炭素"
    assert question.subject == "high_school_biology"


def test_mmmlu_subjects_and_limit():
    loaded = load_mmmlu(FIXTURES / "mmmlu", ["en", "zh"], subjects=["high_school_biology"], limit=2)
    english = loaded.questions("en")
    chinese = loaded.questions("zh")
    assert len(english) == 2
    assert {item.subject for item in english} == {"high_school_biology"}
    # Rows with the same index are chosen in every language.
    assert [item.uid for item in english] == [item.uid for item in chinese]


def test_mmmlu_unknown_subject():
    with pytest.raises(ConfigurationError, match="unknown subject 'astrology'"):
        load_mmmlu(FIXTURES / "mmmlu", ["en"], subjects=["astrology"])


def test_mmmlu_invalid_limit():
    with pytest.raises(ConfigurationError, match="limit must be a non-negative integer"):
        load_mmmlu(FIXTURES / "mmmlu", ["en"], limit=-3)


def test_mmmlu_missing_languages_strict():
    with pytest.raises(ConfigurationError, match="no questions in th, he") as info:
        load_mmmlu(FIXTURES / "mmmlu", ["en", "th", "he"])
    assert "en, zh, ja, bn" in str(info.value)


def test_mmmlu_missing_languages_non_strict(caplog):
    with caplog.at_level(logging.WARNING, logger="swe_toolkit.datasets"):
        loaded = load_mmmlu(FIXTURES / "mmmlu", LANGUAGES, strict=False)
    assert loaded.languages == ("en", "zh", "ja", "bn")
    assert loaded.missing == {"vi": 6, "th": 6, "id": 6, "he": 6}
    assert "vi, th, id, he" in caplog.text


def test_mmmlu_questions_unknown_language():
    loaded = load_mmmlu(FIXTURES / "mmmlu", ["en"])
    with pytest.raises(ConfigurationError, match="no language 'th'"):
        loaded.questions("th")


def test_mmmlu_invalid_answer_letter(tmp_path):
    path = tmp_path / "en.csv"
    path.write_text(
        ",Question,A,B,C,D,Answer,Subject\n0,What?,a,b,c,d,E,misc\n", encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match="invalid answer 'E'") as info:
        load_mmmlu(tmp_path, ["en"])
    assert f"{path}:2" in str(info.value)


def test_mmmlu_to_rows():
    rows = load_mmmlu(FIXTURES / "mmmlu", ["en"], limit=1).to_rows()
    assert len(rows) == 1
    columns = {"set", "uid", "language", "subject", "question", "A", "B", "C", "D", "answer"}
    assert set(rows[0]) == columns


def test_mmmlu_hub(monkeypatch):
    english = [
        {
            "question": "2 + 2?",
            "subject": "elementary_mathematics",
            "choices": ["3", "4", "5", "6"],
            "answer": 1,
        },
    ]
    japanese = [
        {"Unnamed: 0": 0, "Question": "2 + 2は？", "A": "3", "B": "4", "C": "5", "D": "6",
         "Answer": "B", "Subject": "elementary_mathematics"},
    ]
    fake = FakeHub({("cais/mmlu", "all"): english, ("openai/MMMLU", "JA_JP"): japanese})
    monkeypatch.setattr(ds, "_load_hub_dataset", fake)
    loaded = load_mmmlu(languages=["en", "ja", "th"], strict=False)
    assert fake.calls == [("cais/mmlu", "all", "test"), ("openai/MMMLU", "JA_JP", "test")]
    assert loaded.questions("en")[0].answer == "B"
    assert loaded.questions("en")[0].choices == ("3", "4", "5", "6")
    assert loaded.questions("ja")[0].question == "2 + 2は？"
    assert loaded.missing == {"th": 1}


def test_mmmlu_hub_invalid_english_row(monkeypatch):
    english = [{"question": "q", "subject": "s", "choices": ["a", "b"], "answer": 0}]
    monkeypatch.setattr(ds, "_load_hub_dataset", FakeHub({("cais/mmlu", "all"): english}))
    with pytest.raises(ConfigurationError, match="expected 4 choices"):
        load_mmmlu(languages=["en"])
