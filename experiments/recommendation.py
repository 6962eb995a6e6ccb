"""Recommendation from item text: predict a click (classification) or a rating (regression).

    mgpt train experiments/recommendation.py --set data.train_file=items_train.csv --set data.test_file=items_test.csv

The CSV has a `text` column (title plus description of the item, or user context plus item) and a
`label` column: 0/1 clicks by default; for star ratings use
`--set task.kind=regression --set train.best_metric=validation/spearman --set train.best_mode=max`.
"""

import os

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
from mgpt.known_models import minilm_path


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="recommendation",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(format="csv", train_file=os.environ.get("MGPT_ITEMS_TRAIN", "items_train.csv"),
                        test_file=os.environ.get("MGPT_ITEMS_TEST", "items_test.csv"), text_column="text",
                        label_column="label", validation_ratio=0.1, max_length=128),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01),
        train=TrainConfig(batch_size=32, num_epochs=3),
    )
