"""Financial sentiment monitoring on the Financial PhraseBank (`sentence@label`, latin-1 files).

    mgpt train experiments/financial_sentiment.py --set data.train_file=FinancialPhraseBank-v1.0/Sentences_AllAgree.txt

The PhraseBank ships one file per annotator-agreement level and no splits, so mgpt splits it
80/10/10, stratified by label and seeded. Labels: negative, neutral, positive.
"""

import os

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
from mgpt.known_models import minilm_path


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="financial_sentiment",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(format="lines", line_separator="@", line_encoding="latin-1",
                        train_file=os.environ.get("MGPT_PHRASEBANK", "Sentences_AllAgree.txt"),
                        validation_ratio=0.1, test_ratio=0.1, split_seed=0, stratify=True,
                        labels=("negative", "neutral", "positive"), max_length=96),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01),
        train=TrainConfig(batch_size=32, num_epochs=4, best_metric="validation/macro_f1"),
    )
