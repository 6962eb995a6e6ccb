"""Every task experiment runs one training step on tiny data, through its own data path.

The model is swapped for a tiny random BERT (the experiments name all-MiniLM-L6-v2); the data is
written here in each experiment's format, or served by TFDS's mock_data with the real feature specs.
"""

import contextlib
import csv
import json
import os

import pytest

from mgpt import config as config_lib
from mgpt.train import loop

from fixtures_tiny import ner_conll, sentiment_csv, tiny_bert
from test_data_tfds import served

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = ["train.max_steps=1", "train.batch_size=8", "train.eval_batch_size=8", "train.progress_bar=false",
        "checkpoint.enabled=false", "data.max_length=12"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert") / "model")


def _lines_file(path, rows):
    with open(path, "w", encoding="latin-1") as f:
        for text, label in rows:
            f.write(f"{text}@{label}\n")
    return str(path)


def _phrasebank(tmp_path):
    rows = [(f"the plot was {w} r\xe9sum\xe9", lab) for w, lab in
            [("good", "positive"), ("bad", "negative"), ("fine", "neutral")] * 10]
    return [f"data.train_file={_lines_file(tmp_path / 'all.txt', rows)}"], contextlib.nullcontext()


def _banking(tmp_path):
    paths = {}
    for split, n, seed in (("train", 40, 0), ("test", 12, 1)):
        source = sentiment_csv(tmp_path / f"raw_{split}.csv", n, seed)
        with open(source) as f, open(tmp_path / f"{split}.csv", "w", newline="") as g:
            reader, writer = csv.reader(f), csv.writer(g)
            next(reader)
            writer.writerow(["text", "category"])
            writer.writerows(reader)
        paths[split] = str(tmp_path / f"{split}.csv")
    return [f"data.train_file={paths['train']}", f"data.test_file={paths['test']}"], contextlib.nullcontext()


def _recommendation(tmp_path):
    paths = {}
    for split, seed in (("train", 0), ("test", 1)):  # (history, candidate) pairs with 0/1 clicks
        with open(sentiment_csv(tmp_path / f"raw_{split}.csv", 30, seed)) as f, \
                open(tmp_path / f"{split}.csv", "w", newline="") as g:
            rows = list(csv.DictReader(f))
            writer = csv.writer(g)
            writer.writerow(["user", "item", "history", "candidate", "label"])
            writer.writerows([f"u{i % 3}", f"i{i}", "the plot", r["review"], int(r["sentiment"] == "pos")]
                             for i, r in enumerate(rows))
        paths[split] = str(tmp_path / f"{split}.csv")
    return [f"data.train_file={paths['train']}", f"data.test_file={paths['test']}"], contextlib.nullcontext()


def _bbc_news(tmp_path):
    files = [sentiment_csv(tmp_path / f"{s}.csv", 30, i) for i, s in enumerate(("train", "test"))]
    return [f"data.train_file={files[0]}", f"data.test_file={files[1]}", "data.text_column=review",
            "data.label_column=sentiment"], contextlib.nullcontext()


def _sst2(tmp_path):
    rows = [{"idx": i, "sentence": t, "label": l} for i, (t, l) in
            enumerate([("good movie", 1), ("bad plot", 0), ("great music", 1), ("awful acting", 0)] * 5)]
    return [], served({"train": rows, "validation": rows[:8]})


def _conll2003(tmp_path):
    sentence = {"tokens": ["alice", "visited", "paris"], "ner": ["B-PER", "O", "B-LOC"],
                "pos": ["NNP", "VBD", "NNP"], "chunks": ["B-NP", "B-VP", "B-NP"]}
    return [], served({"train": [sentence] * 10, "dev": [sentence] * 3, "test": [sentence] * 3})


def _wnut17(tmp_path):
    files = {s: ner_conll(tmp_path / f"{s}.conll", n, i) for i, (s, n) in
             enumerate((("train", 10), ("validation", 4), ("test", 4)))}
    return [f"data.{s}_file={p}" for s, p in files.items()], contextlib.nullcontext()


def _banking_lora(tmp_path):
    overrides, context = _banking(tmp_path)
    return overrides + ["peft.target_modules="], context  # the tiny BERT's default LoRA targets, not Llama's


CASES = {
    "financial_sentiment.py": _phrasebank,
    "financial_monitor.py": _phrasebank,
    "bbc_news_topics.py": _bbc_news,
    "banking77_intent.py": _banking,
    "smollm2_banking77_lora.py": _banking_lora,
    "recommendation.py": _recommendation,
    "sst2_sentiment.py": _sst2,
    "conll2003_ner.py": _conll2003,
    "wnut17_minilm.py": _wnut17,
    "wnut17_packed.py": _wnut17,
    "banking77_packed.py": _banking,
    "banking77_adversarial.py": _banking,
    "banking77_regularized.py": _banking,
    "banking77_augment.py": _banking,
    "banking77_robust.py": _banking,
    "customer_service_assistant.py": _banking,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_experiment_runs_one_step(name, model_dir, tmp_path):
    overrides, data_context = CASES[name](tmp_path)
    config = config_lib.load_experiment(os.path.join(ROOT, "experiments", name))
    config = config_lib.apply_overrides(config, STEP + overrides + [f"model.name_or_path={model_dir}"])
    workdir = str(tmp_path / "run")
    with data_context:
        reports = loop.train(config, workdir)
    assert reports, "a final evaluation report"
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    assert [e["step"] for e in events if e["kind"] == "train"] == [1]
    split = "test" if "test" in reports else sorted(reports)[0]
    assert reports[split]["num_examples"] > 0


def test_every_task_experiment_has_a_smoke_case():
    # quickstart runs in the notebook test (on the synthetic stand-in) and test_quickstart.py; PEFT in its own tests
    tasks = {"quickstart.py", "wnut17_peft.py"}
    generation = {n for n in os.listdir(os.path.join(ROOT, "experiments")) if n.endswith(".py")} - set(CASES) - tasks
    from test_generation_experiments import GENERATION_CASES  # noqa: F401  generation experiments, tested there

    assert generation <= set(GENERATION_CASES), f"experiments without a one-step test: {generation - set(GENERATION_CASES)}"
