"""The Colab notebook runs top to bottom (the quickstart flow, on the real all-MiniLM-L6-v2; the synthetic data)."""

import os

import nbformat
from nbclient import NotebookClient

from quickstart_synthetic import synthetic_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    # The kernel sees one CPU device, as on a Colab CPU runtime, not the eight simulated devices of
    # tests/conftest.py: splitting each batch eight ways on the machine's few cores only makes it slower.
    # Nor conftest's fast compilation: here the time goes to training the real model, which it would slow down.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    path = os.path.join(ROOT, "colab", "quickstart.ipynb")
    notebook = nbformat.read(path, as_version=4)
    # The notebook trains on the real Rotten Tomatoes sample; here it runs on the synthetic set, which is faster.
    line = 'overrides = ["train.progress_bar=false"]'  # the config cell's; the predict cell passes them on too
    config_cell = next(cell for cell in notebook.cells if line in cell.source)
    overrides = ["train.progress_bar=false", *synthetic_overrides()]
    config_cell.source = config_cell.source.replace(line, f"overrides = {overrides!r}")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's mkdtemp() workdir goes with the test's
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.join(ROOT, "colab")}})
    client.execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "[CpuDevice(id=0)]" in outputs  # the kernel really ran on the one device
    assert "test accuracy" in outputs
    assert "<-" in outputs  # predictions printed for the new sentences
