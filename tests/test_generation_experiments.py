"""Every generation experiment trains one step and evaluates by generating, on tiny data.

The decoder is swapped for a tiny random GPT-2; data comes as tiny files in each experiment's
format, or from TFDS's mock_data with the real feature specs.
"""

import contextlib
import json
import os

import pytest

from mgpt import config as config_lib
from mgpt.train import loop

from fixtures_tiny import tiny_gpt2
from test_data_tfds import served

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The experiments slice the real (large) TFDS splits; the mock serves a handful of rows.
TINY_SPLITS = "data.tfds_splits={'train': 'train', 'validation': 'validation', 'test': 'test'}"
STEP = ["train.max_steps=1", "train.batch_size=8", "train.eval_batch_size=8", "train.progress_bar=false",
        "checkpoint.enabled=false", "data.max_length=24", "task.max_new_tokens=3", "model.dtype=float32"]


# A template for the word-level tiny tokenizer (its words only): each message's content, then end-of-text.
TINY_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] + ' ' + eos_token + ' ' }}{% endfor %}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    directory = tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE  # for the experiments trained through a chat template
    tokenizer.save_pretrained(directory)
    return directory


def _jsonl(path, records):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


# The real-decoder experiments name Llama module paths for LoRA; the tiny GPT-2 takes its family's default.
TINY_LORA = ["peft.target_modules="]


def _customer_service(tmp_path):
    qa = [{"question": f"was the movie {w}", "answer": f"the movie was {w}"} for w in ("good", "bad", "fine")] * 4
    return [f"data.train_file={_jsonl(tmp_path / 'train.jsonl', qa)}",
            f"data.test_file={_jsonl(tmp_path / 'test.jsonl', qa[:4])}"] + TINY_LORA, contextlib.nullcontext()


def _translation_tfds(tmp_path):
    pairs = [{"de": "der film war gut", "en": "the movie was good"}] * 10
    return [TINY_SPLITS], served({"train": pairs, "validation": pairs[:3], "test": pairs[:3]})


def _translation_parallel(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.de").write_text("der film war gut\nder plot war schlecht\n" * 4)
        (tmp_path / f"{split}.en").write_text("the movie was good\nthe plot was bad\n" * 4)
    return ["data.format=parallel", "data.tfds_name=", "data.tfds_splits={}", f"data.train_file={tmp_path}/train.de->en", f"data.test_file={tmp_path}/test.de->en",
            "data.validation_file=", "data.validation_ratio=0.25", "data.prompt_template=German: {source} English:", "data.target_column=target"
            ], contextlib.nullcontext()


def _summarization(tmp_path):
    article = {"article": "the movie was good and the music was great", "highlights": "good movie", "id": "a",
               "publisher": "cnn"}
    return [TINY_SPLITS], served({"train": [article] * 10, "validation": [article] * 3, "test": [article] * 3})


def _scitldr(tmp_path):
    paper = {"source": ["the movie was good .", "the music was great ."], "target": ["good movie", "great music"],
             "paper_id": "x", "title": "t"}
    files = {s: _jsonl(tmp_path / f"{s}.jsonl", [paper] * n) for s, n in (("train", 10), ("dev", 3), ("test", 3))}
    return [f"data.train_file={files['train']}", f"data.validation_file={files['dev']}",
            f"data.test_file={files['test']}"], contextlib.nullcontext()


def _scitldr_chat(tmp_path):
    return _scitldr(tmp_path)[0] + TINY_LORA, contextlib.nullcontext()


GENERATION_CASES = {
    "customer_service_answers.py": [_customer_service],
    "translation.py": [_translation_tfds, _translation_parallel],
    "summarization.py": [_summarization],
    "scitldr_summarization.py": [_scitldr],
    "smollm2_scitldr_chat.py": [_scitldr_chat],
}
PARAMS = [(name, case) for name, cases in sorted(GENERATION_CASES.items()) for case in cases]


@pytest.mark.parametrize("name,case", PARAMS, ids=[f"{n}-{c.__name__}" for n, c in PARAMS])
def test_generation_experiment_runs_one_step(name, case, model_dir, tmp_path):
    overrides, data_context = case(tmp_path)
    config = config_lib.load_experiment(os.path.join(ROOT, "experiments", name))
    config = config_lib.apply_overrides(config, STEP + overrides + [f"model.name_or_path={model_dir}"])
    with data_context:
        reports = loop.train(config, str(tmp_path / "run"))
    report = reports["test"]
    for metric in config.task.generation_metrics:
        keys = {"rouge": "rougeL", "bleu": "bleu", "chrf": "chrf", "exact_match": "exact_match",
                "token_f1": "token_f1"}
        assert keys[metric] in report, (metric, sorted(report))
    assert report["num_examples"] > 0
