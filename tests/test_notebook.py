"""The analysis notebook in examples/ runs against today's code (on the offline digits)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_analysis_notebook_runs(tmp_path):
    nb = nbformat.read(os.path.join(ROOT, "examples", "analysis.ipynb"), as_version=4)
    nb.cells[1].source = f"WORKDIR = {str(tmp_path)!r}\nSTEPS = 100"  # its parameters cell
    NotebookClient(nb, timeout=300, kernel_name="python3",  # run where a user opens it: examples/
                   resources={"metadata": {"path": os.path.join(ROOT, "examples")}}).execute()  # raises CellExecutionError (with the cell and traceback) on a failure
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "bnjax.evaluate:" in outputs and "largest logit difference" in outputs
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert os.path.exists(tmp_path / "tensorboard" / "BN" / "seed_0" / "events.out.tfevents.bnjax")
