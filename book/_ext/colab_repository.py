"""Sphinx extension that names the GitHub repository behind the book's Colab launch buttons.

A Colab button opens a notebook from a GitHub repository, so the book needs that repository's
URL. It is not written in ``_config.yml``, because every fork and mirror has its own. At build
time this extension takes it from, in order:

1. the environment variable ``SWE_TOOLKIT_REPOSITORY_URL`` (``https://github.com/ACCOUNT/NAME``,
   or ``none`` for no Colab buttons);
2. the ``origin`` remote of the git checkout the book is built from, when it is on GitHub.

With neither, the pages are built without Colab buttons (a button to a wrong repository would
open a 404 page), and the build logs how to add them. A URL that is not a GitHub repository
URL stops the build with an error that names it, with any credentials in it masked.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError
from sphinx.util import logging

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "SWE_TOOLKIT_REPOSITORY_URL"
# GitHub account names are ASCII letters, digits and hyphens; repository names may add . and _.
_GITHUB = re.compile(
    r"^(?:(?:https?|ssh)://(?:[^@/\s]+@)?(?:www\.)?github\.com(?::\d+)?/|git@github\.com:)"
    r"([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)/([A-Za-z0-9._-]+?)(?:\.git)?/*$",
    re.IGNORECASE,
)
_CREDENTIALS = re.compile(r"(?<=://)[^@/\s]+@")


def github_url(remote: str) -> str | None:
    """Return ``https://github.com/ACCOUNT/NAME`` for a GitHub remote URL, else ``None``."""
    match = _GITHUB.match(remote.strip())
    if match is None or match.group(2) in (".", ".."):
        return None
    return f"https://github.com/{match.group(1)}/{match.group(2)}"


def _origin(folder: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "remote", "get-url", "origin"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def repository_url(folder: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """Return the repository URL for the book in ``folder`` (see the module docstring)."""
    configured = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if configured.lower() == "none":
        return None
    if configured:
        url = github_url(configured)
        if url is None:
            masked = _CREDENTIALS.sub("***@", configured)
            raise ConfigError(
                f"{ENVIRONMENT_VARIABLE}={masked!r} is not a GitHub repository URL; "
                "use the form https://github.com/ACCOUNT/NAME, or none for no Colab buttons"
            )
        return url
    return github_url(_origin(folder))


def _set_repository(app: Sphinx, config: Config) -> None:
    options = dict(config.html_theme_options or {})
    buttons = dict(options.get("launch_buttons") or {})
    url = repository_url(Path(app.srcdir))
    if url is None:
        buttons.pop("colab_url", None)
        options.pop("repository_url", None)
        logger.info(
            "no GitHub repository found for the Colab buttons: set %s=https://github.com/ACCOUNT/NAME "
            "or add a GitHub 'origin' remote to show them",
            ENVIRONMENT_VARIABLE,
        )
    else:
        options["repository_url"] = url
        logger.info("Colab buttons open notebooks from %s", url)
    options["launch_buttons"] = buttons
    config.html_theme_options = options


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("config-inited", _set_repository)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
