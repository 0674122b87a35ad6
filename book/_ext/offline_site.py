"""Sphinx extension that drops the scripts of sphinx-thebe from every page.

Jupyter Book always loads sphinx-thebe. Its page script contains the URL of the thebe bundle on a
CDN and loads the bundle when a reader starts a live kernel. This book has no thebe launcher
(``launch_buttons.thebe`` is off), so the scripts are dead code, and without them the built site
names no CDN.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def _is_thebe_script(script: Any) -> bool:
    filename = getattr(script, "filename", None) or ""
    body = (getattr(script, "attributes", None) or {}).get("body", "")
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def _drop_thebe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [script for script in scripts if not _is_thebe_script(script)]


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("html-page-context", _drop_thebe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
