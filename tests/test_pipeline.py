"""Tests of the main job and its CLI on a tiny random model saved to a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_tiny_model, make_tiny_tokenizer
from swe_toolkit.cli import main
from swe_toolkit.errors import ConfigurationError
from swe_toolkit.pipeline import RunConfig, parse_languages, run, truncate_reply

FAST = [
    "--num-fit", "4", "--num-test", "3", "--num-general", "3", "--num-kl", "2", "--max-new-tokens", "3",
    "--neurons", "8", "--rank", "2", "--layer", "2", "--no-progress",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run_cli(model_dir: Path, out: Path, *extra: str) -> int:
    return main(["run", "--model", str(model_dir), "--out", str(out), "--languages", "en,th,bn", *FAST, *extra])


def test_run_writes_every_artifact(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _run_cli(model_dir, out) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["report.json", "report.md", "asr_by_language.png", "neurons_per_layer.png",
         "edit.safetensors", "generations.jsonl"]
    )
    report = json.loads((out / "report.json").read_text())
    assert list(report["metrics"]) == ["en", "th", "bn"]
    row = report["metrics"]["th"]
    for key in ("asr_before", "asr_after", "over_refusal_before", "over_refusal_after"):
        assert 0.0 <= row[key]["low"] <= row[key]["value"] <= row[key]["high"] <= 1.0
        assert row[key]["n"] == 3
    assert row["kl_general"] >= 0.0
    assert report["settings"]["layers"] == [2]
    assert set(report["timings"]) >= {"baseline_eval", "localize", "fit_edit", "edited_eval", "utility_kl", "total"}
    assert report["versions"]["torch"]
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 3 * 3  # phases x sets x languages x prompts
    assert "| th (Thai) |" in (out / "report.md").read_text()
    assert "mean non-English ASR" in capsys.readouterr().out
    assert not list(tmp_path.glob(".run.partial-*"))


def test_existing_output_is_refused_and_kept(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("earlier")
    assert _run_cli(model_dir, out) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err
    assert "Traceback" not in err
    assert (out / "report.json").read_text() == "earlier"


def test_overwrite_replaces_earlier_run(model_dir, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text("earlier")
    (out / "stale.txt").write_text("earlier")
    assert _run_cli(model_dir, out, "--overwrite") == 0
    assert not (out / "stale.txt").exists()
    assert (out / "report.json").read_text() != "earlier"


def test_overwrite_keeps_folder_that_is_no_run(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "data"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "a.txt").write_text("mine too")
    assert _run_cli(model_dir, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "no report.json" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sub" / "a.txt").read_text() == "mine too"


def test_finished_run_has_usual_permissions(model_dir, tmp_path) -> None:
    import os

    out = tmp_path / "run"
    assert _run_cli(model_dir, out) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--languages", "en,xx"], "unknown language code 'xx'"),
        (["--languages", "th,bn"], "lacks 'en'"),
        (["--layer", "99"], "--layer 99 is out of range"),
        (["--rank", "100000"], "--rank 100000 is larger than possible"),
        (["--rank", "-3"], "invalid rank '-3'"),
        (["--rank", "0"], "invalid rank '0'"),
        (["--model", "qwen2.5-coder-0.5b-instrct"], "did you mean 'qwen2.5-coder-0.5b-instruct'"),
        (["--neurons", "0"], "--neurons 0 is invalid"),
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--model", "no-such-offline-model-name"], "no-such-offline-model-name"),
    ],
)
def test_bad_input_exits_2_with_one_line(model_dir, tmp_path, capsys, args, message) -> None:
    out = tmp_path / "run"
    argv = ["run", "--model", str(model_dir), "--out", str(out), "--languages", "en,th", *FAST, *args]
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse rejects malformed values before main returns
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_data_files_exit_2(model_dir, tmp_path, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "run"
    assert _run_cli(model_dir, out, "--harmful", str(empty)) == 2
    assert "empty" in capsys.readouterr().err.lower()

    partial = tmp_path / "partial.jsonl"
    rows = [
        {"uid": f"h{i}", "category": "violence", "text": {"en": f"request {i}", "th": f"คำขอ {i}"}}
        for i in range(6)
    ]
    partial.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    assert _run_cli(model_dir, out, "--harmful", str(partial)) == 2
    err = capsys.readouterr().err
    assert "bn" in err
    assert "strict=False" not in err
    assert "--languages" in err
    assert not out.exists()


def test_run_help_lists_units_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--languages", "--layer", "--neurons", "--rank", "--alpha", "--out", "--overwrite"):
        assert option in text
    assert "default: qwen2.5-coder-1.5b-instruct" in text
    assert "default: full" in text
    assert "(default: None)" not in " ".join(text.split())
    assert "(default: True)" not in " ".join(text.split())
    assert "(default: False)" not in " ".join(text.split())


def test_parse_languages_puts_english_first() -> None:
    assert parse_languages("th,en,bn") == ("en", "th", "bn")
    with pytest.raises(ConfigurationError, match="repeats"):
        parse_languages("en,th,th")


def test_truncate_reply_shortens_long_text() -> None:
    text = "step " * 100
    short = truncate_reply(text)
    assert short.endswith("[truncated]")
    assert len(short) < 100
    assert truncate_reply("I'm sorry.") == "I'm sorry."


def test_run_function_returns_report(model_dir, tmp_path) -> None:
    config = RunConfig(
        model=str(model_dir), languages=("en", "th"), layers=(1,), neurons=8, rank=2, num_fit=4,
        num_test=3, num_general=3, num_kl=2, max_new_tokens=2, out=tmp_path / "r", progress=False, side="output",
    )
    import matplotlib

    backend = matplotlib.get_backend()
    report = run(config)
    assert matplotlib.get_backend() == backend
    assert report["settings"]["side"] == "output"
    assert report["edit"]["layers"][0]["side"] == "output"


def test_logit_judge_run_skips_generation(model_dir, tmp_path) -> None:
    out = tmp_path / "run"
    assert _run_cli(model_dir, out, "--judge", "logit") == 0
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert all(record["reply"] is None for record in records)
    assert all(0.0 <= record["score"] <= 1.0 for record in records)


def test_unknown_judge_exits_2(model_dir, tmp_path, capsys) -> None:
    assert _run_cli(model_dir, tmp_path / "run", "--judge", "oracle") == 2
    assert "--judge 'oracle' is unknown" in capsys.readouterr().err
