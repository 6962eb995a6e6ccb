"""Named-entity recognition on CoNLL-2003 from TensorFlow Datasets, all-MiniLM-L6-v2 encoder.

    mgpt train experiments/conll2003_ner.py

TFDS `conll2003` must be prepared where TFDS looks (TFDS_DATA_DIR, or --set data.tfds_data_dir=...);
`tfds build conll2003` downloads and prepares it on a machine with network access. Reports the
entity-level seqeval F1 on the test split.
"""

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
from mgpt.known_models import minilm_path


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="conll2003_ner",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(format="tfds", tfds_name="conll2003", text_column="tokens", label_column="ner",
                        tfds_splits={"train": "train", "validation": "dev", "test": "test"}, max_length=128),
        task=TaskConfig(kind="token_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01),
        train=TrainConfig(batch_size=32, num_epochs=3, best_metric="validation/f1"),
    )
