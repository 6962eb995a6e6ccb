"""The Colab notebooks in colab/ run top to bottom with small settings, and show what they say they show.

Each notebook has one cell tagged ``parameters``; :func:`run_notebook` appends the test's settings to it (only
names the cell already assigns, so a renamed knob fails here), adds a probe cell that prints the values the
test checks as one JSON line, and executes the notebook with nbclient in a fresh kernel.
"""

import ast
import json
import os
import re
import shlex
import shutil
import tempfile

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

import fixtures_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
WNUT17 = os.environ.get("MGPT_WNUT17_DIR", os.path.join(ROOT, "..", "shared", "data", "wnut17"))
PROBE = "PROBE "
WNUT17_TYPES = ("corporation", "creative-work", "group", "location", "person", "product")


def _assigned(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def run_notebook(name: str, parameters: str, monkeypatch, devices: int = 1, probe: str = "",
                 fast_compile: bool = True) -> tuple[list, dict]:
    """Execute ``colab/<name>`` with ``parameters`` injected; returns its code cells and the probe's values.
    ``fast_compile=False`` for a notebook whose time goes to running a real model rather than compiling."""
    # One CPU device, as on a Colab CPU runtime (not the eight of tests/conftest.py), unless the mesh is the point.
    extra = os.environ.get("MGPT_TESTS_XLA_EXTRA", "") if fast_compile else ""
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices} {extra}".strip())
    notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged 'parameters', found {len(tagged)}"
    unknown = _assigned(parameters) - _assigned(tagged[0].source)
    assert not unknown, f"{name}: the parameters cell has no {sorted(unknown)}"
    tagged[0].source += "\n# set by tests/test_notebooks.py\n" + parameters
    if probe:
        notebook.cells.append(new_code_cell(f"import json as _json\nprint({PROBE!r} + _json.dumps({probe}))"))
    scratch = tempfile.mkdtemp(prefix="mgpt-notebook-")  # the kernel's TMPDIR: its mkdtemp() workdirs go with it
    monkeypatch.setenv("TMPDIR", scratch)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": COLAB}}).execute()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    values = {}
    if probe:
        line = next(line for line in _text(cells[-1]).splitlines() if line.startswith(PROBE))
        values = json.loads(line[len(PROBE):])
    return cells, values


def _text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.outputs)


def _all_text(cells) -> str:
    return "".join(_text(cell) for cell in cells)


def _outputs(cells, mime: str) -> list[str]:
    return [output["data"][mime] for cell in cells for output in cell.outputs if mime in output.get("data", {})]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny BERT and GPT-2, tiny CoNLL files and a tiny classification experiment."""
    root = tmp_path_factory.mktemp("tiny")
    for split, count, seed in (("train", 48, 0), ("dev", 16, 1), ("test", 16, 2)):
        fixtures_tiny.ner_conll(root / f"{split}.conll", count, seed)
    bert = fixtures_tiny.tiny_bert(root / "bert")
    return {"dir": str(root), "bert": bert, "gpt2": fixtures_tiny.tiny_gpt2(root / "gpt2"),
            "experiment": fixtures_tiny.write_classification_experiment(str(root), bert)}


def test_ner_on_your_files_reports_every_entity_type_and_marks_predictions(tmp_path, monkeypatch):
    cells, probe = run_notebook("ner_your_files.ipynb", f"""
workdir = {str(tmp_path)!r}
data_dir = {WNUT17!r}
max_sentences = 64
max_length = 32
padding = "max_length"
batch_size = 16
max_steps = 4
show_predictions = 2
""", monkeypatch, probe='{"report": reports["test"], "predicted": predicted, "sentences": sentences}')
    text = _all_text(cells)
    assert "[CpuDevice(id=0)]" in text and "cpu: 1 x cpu" in text
    # the table is the test report: one row per entity type of WNUT-17, with the report's own F1
    tables = [t for t in _outputs(cells, "text/markdown") if t.startswith("| entity type")]
    assert len(tables) == 1
    report = probe["report"]
    assert set(report["per_type"]) <= set(WNUT17_TYPES)
    for kind, scores in report["per_type"].items():
        assert f"| {kind} | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} |" in tables[0]
    assert f"| micro avg | {report['precision']:.3f} | {report['recall']:.3f} | {report['f1']:.3f} |" in tables[0]
    assert len(report["per_type"]) >= 4  # the first 64 test sentences hold most types
    assert _outputs(cells, "image/png")  # the training curves
    # every sentence (2 from the test file, 2 new ones) got one tag per word, printed with entities marked
    assert [len(tags) for tags in probe["predicted"]] == [len(words) for words in probe["sentences"]]
    assert text.count("predicted: ") == 4 and text.count("true:      ") == 2
    assert re.search(r"true: +.*\[[^\]]+\](person|location|group|corporation|product|creative-work)", text)


def test_optimizers_notebook_trains_each_optimizer_and_overlays_their_curves(tiny, tmp_path, monkeypatch):
    cells, probe = run_notebook("optimizers.ipynb", f"""
workdir = {str(tmp_path)!r}
data_dir = {tiny["dir"]!r}
train_file, validation_file, test_file = "train.conll", "dev.conll", "test.conll"
max_sentences = 0
model_path = {tiny["bert"]!r}
max_length = 16
padding = "max_length"
batch_size = 8
max_steps = 6
eval_every = 3
log_every = 1
""", monkeypatch, probe='{label: dict(loss=run["loss"], f1=run["f1"], test_f1=run["reports"]["test"]["f1"], '
                       'wall=run["wall_seconds"], workdir=run["workdir"]) for label, run in runs.items()}')
    assert list(probe) == ["AdamW", "Lion", "Adafactor", "SGD, momentum 0.9"]
    names = {}
    for label, run in probe.items():
        assert run["loss"][0] == list(range(1, 7)) and len(run["loss"][1]) == 6  # one loss per step
        assert run["f1"][0] == [3, 6]  # validation F1 at every eval_every steps
        with open(os.path.join(run["workdir"], "config.json")) as f:
            optimizer = json.load(f)["optimizer"]
        names[label] = (optimizer["name"], optimizer["kwargs"])
    assert names == {"AdamW": ("adamw", {}), "Lion": ("lion", {}), "Adafactor": ("adafactor", {}),
                     "SGD, momentum 0.9": ("sgd", {"momentum": 0.9})}
    curves = [tuple(run["loss"][1]) for run in probe.values()]
    assert len(set(curves)) == 4  # the one line that differs changed each run
    assert curves[0][0] != curves[0][-1]
    assert len(_outputs(cells, "image/png")) == 1  # the overlaid curves
    table = next(t for t in _outputs(cells, "text/markdown") if t.startswith("| optimizer"))
    for label, run in probe.items():
        assert f"| {label} | {run['test_f1']:.3f} |" in table


def test_throughput_notebook_benchmarks_every_size_and_compares_with_pytorch(tiny, tmp_path, monkeypatch):
    cells, probe = run_notebook("throughput.ipynb", f"""
output_dir = {str(tmp_path)!r}
models = [{tiny["gpt2"]!r}]
batch_sizes = [2, 4]
seq_len = 16
steps, warmup = 2, 1
peak_tflops = 0.5
""", monkeypatch, probe='{"results": results, "side": side}')
    results = probe["results"]
    assert [(r["settings"]["model"], r["settings"]["batch_size"]) for r in results] == [(tiny["gpt2"], 2), (tiny["gpt2"], 4)]
    table = next(t for t in _outputs(cells, "text/markdown") if t.startswith("| model | batch | step ms"))
    for r in results:  # what `mgpt bench` wrote: tokens/s and MFU by their definitions
        assert r["tokens_per_second"] == pytest.approx(r["settings"]["batch_size"] * 16 / r["step_seconds_median"])
        assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["tokens_per_second"] / 0.5e12)
        assert f"| {round(r['tokens_per_second'])} | {100 * r['mfu']:.2f} |" in table
    assert len(_outputs(cells, "image/png")) == 1
    row = probe["side"]["models"][tiny["gpt2"]]
    side = next(t for t in _outputs(cells, "text/markdown") if t.startswith("| model | batch | reference"))
    assert row["mgpt_over_torch_eager"] == pytest.approx(row["mgpt"]["tokens_per_second"]
                                                         / row["torch_eager"]["tokens_per_second"])
    assert f"| gpt2 | 4 | torch_eager | {round(row['torch_eager']['tokens_per_second'])} |" in side


def test_lora_decoder_notebook_exports_a_merged_model_that_generates_the_same_text(tmp_path, monkeypatch):
    cells, probe = run_notebook("lora_decoder.ipynb", f"""
workdir = {str(tmp_path)!r}
train_pairs = 16
test_pairs = 2
max_length = 32
batch_size = 4
max_steps = 3
max_new_tokens = 12
""", monkeypatch, fast_compile=False, probe='dict(before=before, after=after, gguf=from_gguf, transformers=from_transformers, '
                       'moved=float(max(abs(a - b).max() for a, b in zip(jax.tree_util.tree_leaves(merged), '
                       'jax.tree_util.tree_leaves(trained["base"])))), files=sorted(os.listdir(workdir)))')
    assert len(probe["before"]) == len(probe["after"]) == 2
    assert all(probe["before"]) and "Vienna" in probe["before"][0]  # the real model answers the held-out question
    assert probe["moved"] > 0  # the merge folded a trained LoRA update into the weights
    assert probe["gguf"] == probe["after"]  # the f32 GGUF file read back generates the merged model's text
    assert probe["transformers"] == probe["after"]  # and so does transformers on the exported HF directory
    assert {"adapter", "merged.gguf", "merged_hf"} <= set(probe["files"])


def test_tpu_pod_notebook_rehearses_the_pod_layout_and_prints_commands_that_parse(tiny, monkeypatch):
    from mgpt import config as config_lib

    cells, probe = run_notebook("tpu_pod.ipynb", f"""
experiment = {tiny["experiment"]!r}
mesh_axes = (("data", 4), ("model", 2))
rules = "fsdp_tp"
rehearsal_steps = 2
""", monkeypatch, devices=8, probe='dict(sharded=sharded, single=single, commands=commands)')
    assert "cpu: 8 x cpu" in _all_text(cells) and "mesh (data=4, model=2)" in _all_text(cells)
    assert len(probe["sharded"]) == len(probe["single"]) == 2
    assert probe["sharded"] == pytest.approx(probe["single"], abs=1e-5)  # sharded == one device
    assert probe["sharded"][0] != probe["sharded"][1]  # it trained
    layout = next(t for t in _outputs(cells, "text/markdown") if t.startswith("| parameter"))
    assert "'model'" in layout and "'data'" in layout  # tensor- and FSDP-sharded parameters both shown
    # the printed launch line parses back into the pod's config
    train_line = next(line for line in probe["commands"].splitlines() if "mgpt train" in line)
    words = shlex.split(shlex.split(train_line)[-1])
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    assert "--worker=all" in train_line
    parallel = config_lib.apply_overrides(config_lib.load_experiment(tiny["experiment"]), sets).parallel
    assert (parallel.distributed, parallel.mesh, parallel.rules) == (True, (("data", 4), ("model", 2)), "fsdp_tp")


def test_every_notebook_has_an_open_in_colab_link_in_the_readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    notebooks = sorted(name for name in os.listdir(COLAB) if name.endswith(".ipynb"))
    assert len(notebooks) >= 6
    for name in notebooks:
        link = f"https://colab.research.google.com/github/<OWNER>/mgpt/blob/main/colab/{name}"
        assert f"[{name}](colab/{name})" in readme and f"[Open in Colab]({link})" in readme, name


def test_each_notebook_starts_with_markdown_and_has_one_parameters_cell():
    for name in sorted(n for n in os.listdir(COLAB) if n.endswith(".ipynb") and n != "quickstart.ipynb"):
        cells = nbformat.read(os.path.join(COLAB, name), as_version=4).cells
        assert cells[0].cell_type == "markdown", name
        assert sum("parameters" in c.metadata.get("tags", []) for c in cells) == 1, name
        assert 'IN_COLAB = "google.colab" in sys.modules' in cells[1].source, name
        assert "notebook.detect_runtime(" in "".join(c.source for c in cells), name


# The helpers the notebooks share (mgpt/train/notebook.py), against hand-written results.

def test_mark_entities_brackets_each_entity_with_its_type():
    from mgpt.train.notebook import mark_entities

    words = ["alice", "met", "bob", "smith", "in", "new", "york"]
    tags = ["B-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    assert mark_entities(words, tags) == "[alice]PER met [bob smith]PER in [new york]LOC"
    assert mark_entities(["a", "b"], ["B-X", "B-X"]) == "[a]X [b]X"
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        mark_entities(["a", "b"], ["O"])


def test_entity_table_lists_every_type_and_the_averages():
    from mgpt.metrics import entity_report
    from mgpt.train.notebook import entity_table

    report = entity_report([["B-PER", "O", "B-LOC"], ["O"]], [["B-PER", "O", "B-ORG"], ["B-LOC"]])
    table = entity_table(report).splitlines()
    assert table[0] == "| entity type | precision | recall | f1 | support |"
    assert table[2:] == ["| LOC | 0.000 | 0.000 | 0.000 | 1 |", "| ORG | 0.000 | 0.000 | 0.000 | 1 |",
                         "| PER | 1.000 | 1.000 | 1.000 | 1 |", "| micro avg | 0.500 | 0.333 | 0.400 | 3 |",
                         "| macro avg | 0.333 | 0.333 | 0.333 | 3 |"]


def test_conll_head_and_labels(tmp_path):
    from mgpt.train.notebook import conll_head, conll_labels

    source = tmp_path / "in.conll"
    source.write_text("-DOCSTART- O\n\na B-x\nb I-x\n\nc O\n\nd B-y\n")
    head = conll_head(str(source), 2, str(tmp_path / "out"))
    assert open(head).read() == "-DOCSTART- O\n\na B-x\nb I-x\n\nc O\n"
    assert open(conll_head(str(source), 0, str(tmp_path / "all"))).read() == source.read_text() + "\n"
    assert conll_labels([head]) == ["O", "B-x", "I-x"]
    assert conll_labels([str(source)]) == ["O", "B-x", "I-x", "B-y", "I-y"]
