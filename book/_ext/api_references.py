"""Sphinx extension that resolves Python cross-references the API pages cannot resolve by name.

The docstrings of swe_toolkit name objects the way the code imports them: re-exported paths such
as ``swe_toolkit.models.load_model``, unqualified names such as ``EditStateError`` inside
``swe_toolkit.edit``, and types of other packages such as ``torch.Tensor``. Autodoc documents each
object once, under the module that defines it, and the build has no network access for
intersphinx. For a Python reference that Sphinx cannot resolve, this extension imports the named
object (relative to the current module first) and

* links to the object's documented definition when it has one, or
* renders the reference as plain code when the object exists but is not documented here (another
  package's type, a private helper, a module constant).

A name that cannot be imported still produces Sphinx's "reference target not found" warning, so
a misspelled reference fails the ``-n -W`` build.
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

_MISSING = object()


def _import_object(path: str) -> Any:
    """Import ``path`` as a module followed by attributes; return ``_MISSING`` when it does not exist."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value
    return _MISSING


def _candidates(node: pending_xref) -> list[str]:
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module")
    names = [target]
    if module:
        names.insert(0, f"{module}.{target}")
    return names


def _canonical_name(value: Any, fallback: str) -> str:
    module = getattr(value, "__module__", None)
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if isinstance(module, str) and isinstance(name, str):
        return f"{module}.{name}"
    return fallback


def _resolve(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    for candidate in _candidates(node):
        value = _import_object(candidate)
        if value is _MISSING:
            continue
        canonical = _canonical_name(value, candidate)
        for name in dict.fromkeys((canonical, candidate)):
            for role in (node["reftype"], "obj"):
                resolved = domain.resolve_xref(env, node["refdoc"], app.builder, role, name, node, contnode)
                if resolved is not None:
                    return resolved
        # The object exists but is not documented in this book: show the name without a link.
        return contnode
    return None


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
