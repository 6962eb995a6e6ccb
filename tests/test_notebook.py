"""The Colab notebook runs top to bottom (the quickstart flow, on the real all-MiniLM-L6-v2)."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(tmp_path):
    path = os.path.join(ROOT, "colab", "quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(ROOT, "colab")}})
    client.execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "test accuracy" in outputs
    assert "<-" in outputs  # predictions printed for the new sentences
