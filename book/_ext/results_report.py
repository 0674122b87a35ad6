"""Sphinx extension that shows the recorded results on the results page when they exist.

``book/results.md`` includes files of the ``results/`` folder (the summary of the main run and the
report that the main job wrote). They are not part of every checkout, and MyST's include directive
fails on a missing file, so this extension replaces the include block of each missing file with a
note before the page is parsed.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from sphinx.application import Sphinx

RESULTS_DOCNAME = "book/results"

# An include block: the opening fence with {include} and the path, its options, the closing fence.
_INCLUDE_BLOCK = re.compile(r"^```\{include\}[ \t]+(?P<path>\S+)[ \t]*\n(?:[^\n]*\n)*?```[ \t]*$", re.MULTILINE)


def _missing_note(path: str) -> str:
    return (
        "```{note}\n"
        f"`{path}` does not exist in this checkout, so it is not shown. The maintainers record the "
        "main run there (for example with `swe-toolkit run --out results/main-run`); build the book "
        "again once it exists.\n"
        "```"
    )


def _replace_missing_includes(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname != RESULTS_DOCNAME:
        return
    page_folder = posixpath.dirname(docname)

    def replace(match: re.Match[str]) -> str:
        relative = posixpath.normpath(posixpath.join(page_folder, match["path"]))
        included = Path(app.srcdir) / relative
        # A dependency on a missing file marks the page as outdated, so it is read again once the
        # file appears.
        app.env.note_dependency(str(included))
        if included.is_file():
            return match[0]
        return _missing_note(relative)

    source[0] = _INCLUDE_BLOCK.sub(replace, source[0])


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("source-read", _replace_missing_includes)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
