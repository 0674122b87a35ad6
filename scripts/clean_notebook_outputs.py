"""Remove widget state and per-cell run metadata from executed notebooks, in place.

Papermill stores the state of every ipywidgets widget in the notebook. Jupyter Book would render
it with scripts from a CDN, and the published pages show a static figure instead, so the widget
outputs and state are dropped. Per-cell timings of papermill and Jupyter change on every run and
are dropped too; the notebook-level papermill metadata, with the parameters, stays.

Usage: python scripts/clean_notebook_outputs.py NOTEBOOK [NOTEBOOK ...]
"""

from __future__ import annotations

import sys

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def clean(path: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if WIDGET_VIEW not in output.get("data", {})]
    nbformat.write(notebook, path)


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    for path in paths:
        clean(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
