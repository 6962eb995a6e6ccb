"""The "generation" task end to end: `mgpt train` evaluates by generating, its metrics equal sacrebleu /
rouge-score on the generated strings, `mgpt predict` and `mgpt generate` write the same text, and greedy
decoding matches transformers' own `generate`. Plus hand-checked metric values."""

import json
import os
import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from mgpt import cli, text_metrics
from mgpt.train import reporting

from fixtures_tiny import tiny_gpt2

PLACES = {"alice": "paris and rome and oslo", "bob": "rome and oslo and paris", "carol": "oslo and paris and rome"}
METRICS = ("rouge", "bleu", "chrf", "exact_match", "token_f1")


def _qa_jsonl(path, count, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(count):
            person = rng.choice(sorted(PLACES))
            f.write(json.dumps({"person": person, "answer": PLACES[person]}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("generation")
    model_dir = tiny_gpt2(directory / "model")
    files = {split: _qa_jsonl(directory / f"{split}.jsonl", n, seed)
             for split, n, seed in (("train", 24, 0), ("validation", 8, 1), ("test", 10, 2))}
    experiment = directory / "tiny_qa.py"
    experiment.write_text(f'''"""Tiny QA by generation.

    mgpt train tiny_qa.py
"""
from mgpt.config import *


def get_config():
    return ExperimentConfig(
        name="tiny_qa",
        model=ModelConfig(name_or_path={model_dir!r}, dropout=0.0),
        data=DataConfig(format="jsonl", train_file={files["train"]!r}, validation_file={files["validation"]!r},
                        test_file={files["test"]!r}, prompt_template="{{person}} visited", target_column="answer",
                        max_length=12),
        task=TaskConfig(kind="generation", generation_metrics={METRICS!r}, max_new_tokens=7),
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-2, schedule="constant"),
        train=TrainConfig(batch_size=8, eval_batch_size=8, max_steps=80, eval_every=40, log_every=4,
                          progress_bar=False),
        checkpoint=CheckpointConfig(max_to_keep=1, async_save=False),
    )
''')
    workdir = str(directory / "run")
    assert cli.main(["train", str(experiment), "--workdir", workdir]) == 0
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    return str(experiment), workdir, files, model_dir, report


def test_eval_report_metrics_equal_the_libraries_on_the_generated_text(trained, tmp_path):
    experiment, workdir, files, _, report = trained
    output = str(tmp_path / "predictions.jsonl")
    assert cli.main(["predict", experiment, "--checkpoint", workdir, "--input", files["test"], "--output", output]) == 0
    with open(output) as f:
        rows = [json.loads(line) for line in f]
    with open(files["test"]) as f:
        references = [json.loads(line)["answer"] for line in f]
    predictions = [row["prediction"] for row in rows]
    assert [g["prediction"] for g in report["generations"]] == predictions  # greedy: the same text both times
    assert [g["reference"] for g in report["generations"]] == references
    assert report["num_examples"] == 10

    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score, abs=1e-9)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score, abs=1e-9)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert report[name] == pytest.approx(np.mean([s[name].fmeasure for s in scores]), abs=1e-9)
    assert report["exact_match"] == pytest.approx(np.mean([p == r for p, r in zip(predictions, references)]))
    assert report["perplexity"] == pytest.approx(np.exp(report["loss"]), rel=1e-9)
    # 32 steps teach the tiny model some answers: the checks above compare non-trivial numbers
    assert report["rouge2"] > 0.3 and report["bleu"] > 10 and report["exact_match"] > 0

    events = [e for e in reporting.read_metrics(workdir) if e["kind"] == "eval"]
    assert [e["step"] for e in events] == [40, 80]
    for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity", "loss"):
        assert all(f"validation/{key}" in e for e in events), key


def test_generate_command_writes_the_same_text_as_predict(trained, tmp_path):
    experiment, workdir, files, _, report = trained
    output = str(tmp_path / "generations.jsonl")
    assert cli.main(["generate", experiment, "--checkpoint", workdir, "--input", files["test"],
                     "--output", output]) == 0
    with open(output) as f:
        rows = [json.loads(line) for line in f]
    assert [r["generation"] for r in rows] == [g["prediction"] for g in report["generations"]]
    assert [r["prompt"] for r in rows] == [g["prompt"] for g in report["generations"]]
    assert rows[0]["prompt"] == f"{rows[0]['person']} visited"  # the experiment's template, filled per record


def test_greedy_generation_matches_transformers_generate(trained, tmp_path, capsys):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    experiment, _, _, model_dir, _ = trained
    prompts = ["alice visited", "the movie was very", "bob"]
    capsys.readouterr()
    assert cli.main(["generate", experiment, "--model", model_dir, "--max-new-tokens", "6"]
                    + sum((["--prompt", p] for p in prompts), [])) == 0
    ours = [json.loads(line)["generation"] for line in capsys.readouterr().out.strip().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch_model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    for prompt, text in zip(prompts, ours):
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            out = torch_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        assert text == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_squad_exact_match_and_token_f1_by_hand():
    assert text_metrics.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert text_metrics.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert text_metrics.exact_match("Eiffel", "eiffel tower") == 0.0
    # "cat sat on mat" vs "cat sat": 2 common tokens, precision 2/4, recall 2/2 -> F1 2/3
    assert text_metrics.token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)
    assert text_metrics.token_f1("paris", "rome") == 0.0
    assert text_metrics.token_f1("", "") == 1.0 and text_metrics.token_f1("", "rome") == 0.0
    report = text_metrics.text_report(["The Eiffel Tower!", "the cat sat on the mat"], ["eiffel tower", "a cat sat"],
                                      ("exact_match", "token_f1"))
    assert report == pytest.approx({"exact_match": 0.5, "token_f1": (1.0 + 2 / 3) / 2})


def test_rouge_bleu_chrf_by_hand():
    # unigrams 2 of 3 shared; bigrams 1 of 2 ("the cat"); longest common subsequence 2 of 3
    report = text_metrics.text_report(["the cat sat"], ["the cat ran"], ("rouge",))
    assert report == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})
    same = ["the quick brown fox jumps over the dog"]
    assert text_metrics.text_report(same, same, ("bleu", "chrf")) == pytest.approx({"bleu": 100.0, "chrf": 100.0})
    with pytest.raises(ValueError, match="unknown"):
        text_metrics.text_report(same, same, ("meteor",))
