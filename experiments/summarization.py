"""Summarization as causal-LM fine-tuning on CNN/DailyMail from TFDS (or local JSONL).

    mgpt train experiments/summarization.py

Local JSONL works too, e.g. SciTLDR: `--set data.format=jsonl --set data.train_file=train.jsonl
--set "data.prompt_template={source}\nTL;DR:" --set data.target_column=target` (see
experiments/scitldr_summarization.py). Evaluated by generating, with ROUGE-1/2/L (rouge-score).
The default decoder is the `gpt2` hub id; pass a local HF directory offline.
"""

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="summarization",
        model=ModelConfig(name_or_path="gpt2"),
        data=DataConfig(format="tfds", tfds_name="cnn_dailymail",
                        tfds_splits={"train": "train", "validation": "validation[:1000]", "test": "test"},
                        prompt_template="Article: {article}\nSummary:", target_column="highlights", max_length=1024),
        task=TaskConfig(kind="generation", generation_metrics=("rouge",), max_new_tokens=96),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.03, weight_decay=0.01),
        train=TrainConfig(batch_size=8, num_epochs=1, eval_every=2000, best_metric="validation/rougeL",
                          best_mode="max"),
    )
