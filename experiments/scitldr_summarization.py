"""SciTLDR (abstract -> one-sentence TLDR) with a small GPT-2 trained from scratch: the generation path on real files.

    python experiments/benchmarks/make_small_decoder.py bench_results/small_gpt2
    mgpt train experiments/scitldr_summarization.py --set model.name_or_path=bench_results/small_gpt2

No pretrained decoder installs offline, so the model is a small random-init GPT-2 with a byte-level
BPE tokenizer trained on SciTLDR's training abstracts (the first command). Reads
shared/data/scitldr next to the checkout; scores the first (author) TLDR of each test paper with
ROUGE-1/2/L. Expect low ROUGE: a model this size trained on 2k abstracts learns the TLDR style, not
the science.
"""

import os

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig

DATA = os.environ.get(
    "MGPT_SCITLDR_DIR",
    os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "scitldr")),
)


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="scitldr_summarization",
        model=ModelConfig(name_or_path="bench_results/small_gpt2"),
        data=DataConfig(format="jsonl", train_file=os.path.join(DATA, "train.jsonl"),
                        validation_file=os.path.join(DATA, "dev.jsonl"), test_file=os.path.join(DATA, "test.jsonl"),
                        prompt_template="{source}\nTL;DR:", target_column="target", max_length=384),
        task=TaskConfig(kind="generation", generation_metrics=("rouge",), max_new_tokens=48),
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3, warmup_ratio=0.05, weight_decay=0.01),
        train=TrainConfig(batch_size=16, eval_batch_size=64, num_epochs=4, eval_splits=(),
                          final_eval_splits=("test",), log_every=10),
    )
