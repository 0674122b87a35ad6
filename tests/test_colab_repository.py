"""Tests of the book extension that finds the GitHub repository for the Colab buttons."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sphinx.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import colab_repository  # noqa: E402

VARIABLE = colab_repository.ENVIRONMENT_VARIABLE


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("https://github.com/some-org/swe_toolkit", "https://github.com/some-org/swe_toolkit"),
        ("https://github.com/some-org/swe_toolkit.git", "https://github.com/some-org/swe_toolkit"),
        ("https://github.com/some-org/swe_toolkit/", "https://github.com/some-org/swe_toolkit"),
        ("git@github.com:a-b/swe-toolkit.git", "https://github.com/a-b/swe-toolkit"),
        ("HTTPS://GitHub.com/a/b.GIT", "https://github.com/a/b"),
        ("http://www.github.com/a/b//", "https://github.com/a/b"),
        ("https://github.com:443/a/b", "https://github.com/a/b"),
        ("ssh://git@github.com:22/a/b.git", "https://github.com/a/b"),
        ("https://x-access-token:secret@github.com/a/b.git", "https://github.com/a/b"),
        ("https://github.com/a/..", None),
        ("https://github.com/../b", None),
        ("https://github.com/a.b/c", None),
        ("https://github.com/ä/b", None),
        ("https://github.com.evil.com/a/b", None),
        ("ssh://git@github.com/a/b.git", "https://github.com/a/b"),
        ("https://gitlab.com/a/b", None),
        ("/srv/git/swe_toolkit", None),
        ("https://github.com/only-account", None),
        ("", None),
    ],
)
def test_github_url(remote: str, expected: str | None) -> None:
    assert colab_repository.github_url(remote) == expected


def _git(folder: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(folder), *arguments], check=True, capture_output=True)


def test_origin_remote_is_used(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/swe_toolkit.git")
    assert colab_repository.repository_url(tmp_path, {}) == "https://github.com/someone/swe_toolkit"


def test_environment_comes_before_origin(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/swe_toolkit.git")
    environ = {VARIABLE: "https://github.com/fork/swe_toolkit"}
    assert colab_repository.repository_url(tmp_path, environ) == "https://github.com/fork/swe_toolkit"


def test_no_repository_without_github_origin(tmp_path: Path) -> None:
    assert colab_repository.repository_url(tmp_path, {}) is None
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "/srv/git/swe_toolkit")
    assert colab_repository.repository_url(tmp_path, {}) is None


def test_bad_environment_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not-a-url"):
        colab_repository.repository_url(tmp_path, {VARIABLE: "not-a-url"})


def test_credentials_are_masked_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        colab_repository.repository_url(tmp_path, {VARIABLE: "https://user:ghs_SECRET@gitlab.com/a/b"})
    assert "ghs_SECRET" not in str(raised.value)
    assert "***@gitlab.com" in str(raised.value)


def test_none_turns_the_buttons_off(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/swe_toolkit.git")
    assert colab_repository.repository_url(tmp_path, {VARIABLE: "None"}) is None


class _Config:
    def __init__(self, options: dict) -> None:
        self.html_theme_options = options


class _App:
    def __init__(self, srcdir: Path) -> None:
        self.srcdir = str(srcdir)


def test_buttons_are_dropped_without_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    config = _Config({"repository_url": "", "launch_buttons": {"colab_url": "https://colab.research.google.com"}})
    colab_repository._set_repository(_App(tmp_path), config)
    assert "colab_url" not in config.html_theme_options["launch_buttons"]
    assert "repository_url" not in config.html_theme_options


def test_buttons_point_at_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "https://github.com/fork/swe_toolkit")
    config = _Config({"launch_buttons": {"colab_url": "https://colab.research.google.com"}})
    colab_repository._set_repository(_App(tmp_path), config)
    assert config.html_theme_options["repository_url"] == "https://github.com/fork/swe_toolkit"
    assert config.html_theme_options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
