"""Remove widget state and per-cell run metadata from executed notebooks, in place.

Papermill stores the state of every ipywidgets widget in the notebook. Jupyter Book would render
it with scripts from a CDN, and the published pages show a static figure instead, so the widget
outputs and state are dropped. Per-cell timings of papermill and Jupyter change on every run and
are dropped too; the notebook-level papermill metadata, with the parameters, stays.

With --note-parameters, the code cell papermill injected after the ``parameters`` cell becomes a
markdown note that lists the values the stored outputs were computed with. The notebook then runs
with its own defaults when a reader opens it in Jupyter or Colab, while the page still says how
the outputs were made. When a notebook has an injected cell, the notes of earlier runs are removed,
so a notebook keeps at most one note. Every file is read and validated before any is written, and
each is replaced atomically. Invalid input exits with code 2 and changes no file.

Usage: python scripts/clean_notebook_outputs.py [--note-parameters] NOTEBOOK [NOTEBOOK ...]
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
INJECTED = "injected-parameters"
NOTE = "executed-parameters"


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _parameter_note(cell: nbformat.NotebookNode, minor_version: int) -> nbformat.NotebookNode:
    lines = [line for line in cell.source.splitlines() if not line.startswith("# Parameters")]
    code = "\n".join(lines).strip("\n")
    # The fence is longer than any run of backticks in the values, so none can close it early.
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", code)), default=0) + 1)
    text = (
        "The outputs stored below were computed with these values in place of the defaults above "
        "(papermill injected them; running the notebook yourself uses the defaults or your own "
        f"values):\n\n{fence}python\n{code}\n{fence}"
    )
    note = nbformat.v4.new_markdown_cell(text, metadata={"tags": [NOTE]})
    if minor_version < 5:
        # Cell ids exist from nbformat 4.5 on; an older notebook would fail validation with one.
        note.pop("id", None)
    return note


def clean(notebook: nbformat.NotebookNode, note_parameters: bool = False) -> nbformat.NotebookNode:
    """Return ``notebook`` without widget state and run metadata (see the module docstring)."""
    notebook.metadata.pop("widgets", None)
    injected = [cell for cell in notebook.cells if cell.cell_type == "code" and INJECTED in _tags(cell)]
    cells = []
    for cell in notebook.cells:
        # An injected cell means a newer run than any note, so the notes go; without one they stay.
        if injected and NOTE in _tags(cell):
            continue
        if note_parameters and injected and cell is injected[-1]:
            cell = _parameter_note(cell, notebook.nbformat_minor)
        elif note_parameters and cell in injected:
            continue
        cells.append(cell)
    notebook.cells = cells
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if WIDGET_VIEW not in output.get("data", {})]
    return notebook


def _read(path: str) -> nbformat.NotebookNode:
    """Read and validate one notebook, or raise ValueError with a message that names ``path``."""
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the file ({error.strerror or error})") from error
    except Exception as error:  # nbformat raises several JSON and schema error types
        raise ValueError(f"{path}: not a valid Jupyter notebook ({type(error).__name__}: {str(error).splitlines()[0]})") from error
    return notebook


def _write_atomically(notebook: nbformat.NotebookNode, path: str) -> None:
    """Write ``notebook`` to a temporary file beside ``path``, then move it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".clean-", suffix=".ipynb", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            nbformat.write(notebook, stream)
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(arguments: list[str]) -> int:
    note_parameters = "--note-parameters" in arguments
    paths = [argument for argument in arguments if argument != "--note-parameters"]
    unknown = [path for path in paths if path.startswith("--")]
    if not paths or unknown:
        if unknown:
            print(f"unknown option {unknown[0]}", file=sys.stderr)
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    # Every file is read and checked before any is written, so bad input changes nothing.
    notebooks = []
    for path in paths:
        try:
            notebooks.append(_read(path))
        except ValueError as error:
            print(f"error: {error}; no notebook was changed", file=sys.stderr)
            return 2
    for path, notebook in zip(paths, notebooks, strict=True):
        _write_atomically(clean(notebook, note_parameters), path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
