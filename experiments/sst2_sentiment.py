"""Binary sentiment on SST-2 (GLUE) from TensorFlow Datasets, all-MiniLM-L6-v2 encoder.

    mgpt train experiments/sst2_sentiment.py

GLUE's SST-2 test labels are hidden, so the labelled validation split is the test set here and 5%
of train is held out for model selection. Needs TFDS `glue/sst2` prepared (`tfds build glue/sst2`).
"""

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
from mgpt.known_models import minilm_path


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="sst2_sentiment",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(format="tfds", tfds_name="glue/sst2", text_column="sentence", label_column="label",
                        tfds_splits={"train": "train[:95%]", "validation": "train[95%:]", "test": "validation"},
                        max_length=64),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=3e-5, warmup_ratio=0.06, weight_decay=0.01),
        train=TrainConfig(batch_size=32, num_epochs=2, eval_every=500),
    )
