"""Checks of the committed notebooks' structure, and of the script that cleans executed copies.

These read the notebooks' JSON only; executing them is the job of scripts/run_notebooks.sh.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
CLEAN_SCRIPT = ROOT / "scripts" / "clean_notebook_outputs.py"


def _load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_there_are_five_notebooks() -> None:
    assert [path.name[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_first_code_cell_holds_the_parameters(path: Path) -> None:
    cells = _code_cells(_load(path))
    assert "parameters" in _tags(cells[0])
    assert sum("parameters" in _tags(cell) for cell in cells) == 1
    for name in ("MODEL", "DEVICE", "SEED", "OUTPUT_DIR"):
        assert f"\n{name} = " in "\n" + cells[0].source, f"{path.name} has no {name} parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebooks_run_with_their_defaults(path: Path) -> None:
    # A papermill-injected cell would silently replace the defaults for a reader on Colab.
    cells = _code_cells(_load(path))
    assert not [cell for cell in cells if "injected-parameters" in _tags(cell)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_setup_cell_works_on_colab(path: Path) -> None:
    setup = [cell for cell in _code_cells(_load(path)) if "injected-parameters" not in _tags(cell)][1]
    assert "google.colab" in setup.source
    assert "SWE_TOOLKIT_REPO" in setup.source
    assert "OWNER" not in setup.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebooks_are_executed_without_errors(path: Path) -> None:
    cells = _code_cells(_load(path))
    counts = [cell.execution_count for cell in cells]
    assert all(count is not None for count in counts), f"{path.name} has cells that were not run"
    assert counts == sorted(counts), f"{path.name} was not run top to bottom"
    errors = [output for cell in cells for output in cell.outputs if output.output_type == "error"]
    assert not errors


def _executed_copy(tmp_path: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("NUM = 100\n", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("# Parameters\nNUM = 3\nMODEL = \"tiny\"\n", metadata={"tags": ["injected-parameters"], "papermill": {"duration": 1.0}})
    body = nbformat.v4.new_code_cell("print(NUM)", metadata={"execution": {"iopub.status.busy": "x"}})
    body.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="3\n"),
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"}}),
    ]
    notebook.cells = [parameters, injected, body]
    notebook.metadata["widgets"] = {"state": {}}
    path = tmp_path / "run.ipynb"
    nbformat.write(notebook, path)
    return path


def _run_clean(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CLEAN_SCRIPT), *arguments], capture_output=True, text=True, check=False)


def test_clean_keeps_the_injected_cell_by_default(tmp_path: Path) -> None:
    path = _executed_copy(tmp_path)
    assert _run_clean(str(path)).returncode == 0
    notebook = _load(path)
    assert [cell.cell_type for cell in notebook.cells] == ["code", "code", "code"]
    assert "widgets" not in notebook.metadata
    assert [output.output_type for output in notebook.cells[2].outputs] == ["stream"]
    assert "papermill" not in notebook.cells[1].metadata
    assert "execution" not in notebook.cells[2].metadata


def test_clean_turns_injected_parameters_into_a_note(tmp_path: Path) -> None:
    path = _executed_copy(tmp_path)
    assert _run_clean("--note-parameters", str(path)).returncode == 0
    notebook = _load(path)
    note = notebook.cells[1]
    assert note.cell_type == "markdown"
    assert _tags(note) == ["executed-parameters"]
    assert "NUM = 3" in note.source
    assert 'MODEL = "tiny"' in note.source
    assert "# Parameters" not in note.source
    # A second run replaces the note instead of adding another one.
    notebook.cells.insert(2, nbformat.v4.new_code_cell("NUM = 4\n", metadata={"tags": ["injected-parameters"]}))
    nbformat.write(notebook, path)
    assert _run_clean("--note-parameters", str(path)).returncode == 0
    notes = [cell for cell in _load(path).cells if cell.cell_type == "markdown"]
    assert len(notes) == 1
    assert "NUM = 4" in notes[0].source


def test_clean_rejects_unknown_options(tmp_path: Path) -> None:
    path = _executed_copy(tmp_path)
    before = path.read_bytes()
    result = _run_clean("--in-place", str(path))
    assert result.returncode == 2
    assert "--in-place" in result.stderr
    assert path.read_bytes() == before


def test_clean_without_arguments_prints_usage() -> None:
    result = _run_clean()
    assert result.returncode == 2
    assert "Usage" in result.stderr




def test_clean_twice_keeps_the_note(tmp_path: Path) -> None:
    path = _executed_copy(tmp_path)
    assert _run_clean("--note-parameters", str(path)).returncode == 0
    first = path.read_text(encoding="utf-8")
    assert _run_clean("--note-parameters", str(path)).returncode == 0
    assert _run_clean(str(path)).returncode == 0
    assert path.read_text(encoding="utf-8") == first


def test_clean_note_keeps_blank_lines_and_backticks(tmp_path: Path) -> None:
    path = _executed_copy(tmp_path)
    notebook = _load(path)
    notebook.cells[1].source = '# Parameters\nTEXT = """a\n\n```b```"""\n'
    nbformat.write(notebook, path)
    assert _run_clean("--note-parameters", str(path)).returncode == 0
    note = _load(path).cells[1].source
    assert 'TEXT = """a\n\n```b```"""' in note
    assert "\n````python\n" in note


def test_clean_bad_input_changes_no_file(tmp_path: Path) -> None:
    good = _executed_copy(tmp_path)
    before = good.read_bytes()
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json", encoding="utf-8")
    for bad in (broken, tmp_path / "missing.ipynb", tmp_path):
        result = _run_clean(str(good), str(bad))
        assert result.returncode == 2
        assert str(bad) in result.stderr
        assert "Traceback" not in result.stderr
        assert good.read_bytes() == before
