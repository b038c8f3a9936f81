"""Every tutorial notebook runs top to bottom without error (with small parameters).

Notebooks read their sizes from ``STEMKIT_NOTEBOOK_*`` environment variables (defaults are for a
reader); the suite sets small ones so that each notebook runs in seconds.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

SMALL = {
    "STEMKIT_NOTEBOOK_SCAN": "12",  # probe positions per side
    "STEMKIT_NOTEBOOK_PATTERN": "64",  # detector pixels per side
    "STEMKIT_NOTEBOOK_TRAIN_STEPS": "10",  # orientation: steps of the tiny model (without pretrained weights)
    "STEMKIT_NOTEBOOK_EPOCHS": "1",  # strain: CCSTAE epochs
    "STEMKIT_NOTEBOOK_TRAIN_PATTERNS": "64",  # strain: patterns CCSTAE trains on
}
# clustering needs enough patterns per region of the flake to split at all
OVERRIDES = {"02_clustering.ipynb": {"STEMKIT_NOTEBOOK_SCAN": "24"}}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    for name, value in {**SMALL, **OVERRIDES.get(path.name, {})}.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"00_quickstart.ipynb", "01_orientation.ipynb", "02_clustering.ipynb", "03_strain.ipynb",
            "04_your_data.ipynb", "05_scale.ipynb"} <= names


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name
