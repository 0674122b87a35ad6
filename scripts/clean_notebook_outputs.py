"""Remove widget state and per-cell run metadata from executed notebooks, in place.

Papermill stores the state of every ipywidgets widget in the notebook. Jupyter Book would render
it with scripts from a CDN, and the published pages show a static figure instead, so the widget
outputs and state are dropped. Per-cell timings of papermill and Jupyter change on every run and
are dropped too; the notebook-level papermill metadata, with the parameters, stays.

With --note-parameters, the code cell papermill injected after the ``parameters`` cell becomes a
markdown note that lists the values the stored outputs were computed with. The notebook then runs
with its own defaults when a reader opens it in Jupyter or Colab, while the page still says how
the outputs were made. Notes of earlier runs are always removed, so a notebook has at most one.

Usage: python scripts/clean_notebook_outputs.py [--note-parameters] NOTEBOOK [NOTEBOOK ...]
"""

from __future__ import annotations

import sys

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
INJECTED = "injected-parameters"
NOTE = "executed-parameters"


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _parameter_note(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("# Parameters")]
    text = (
        "The outputs stored below were computed with these values in place of the defaults above "
        "(papermill injected them; running the notebook yourself uses the defaults or your own "
        "values):\n\n```python\n" + "\n".join(lines) + "\n```"
    )
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": [NOTE]})


def clean(path: str, note_parameters: bool = False) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata.pop("widgets", None)
    cells = []
    for cell in notebook.cells:
        if NOTE in _tags(cell):
            continue
        if note_parameters and cell.cell_type == "code" and INJECTED in _tags(cell):
            cell = _parameter_note(cell)
        cells.append(cell)
    notebook.cells = cells
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if WIDGET_VIEW not in output.get("data", {})]
    nbformat.write(notebook, path)


def main(arguments: list[str]) -> int:
    note_parameters = "--note-parameters" in arguments
    paths = [argument for argument in arguments if argument != "--note-parameters"]
    unknown = [path for path in paths if path.startswith("--")]
    if not paths or unknown:
        if unknown:
            print(f"unknown option {unknown[0]}", file=sys.stderr)
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    for path in paths:
        clean(path, note_parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
