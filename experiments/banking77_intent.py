"""Customer-service intent classification: Banking77 (77 intents), all-MiniLM-L6-v2 encoder.

    mgpt train experiments/banking77_intent.py

Reads shared/data/banking77/{train,test}.csv next to the checkout (override with --set
data.train_file=... data.test_file=...); 10% of train, stratified, is held out for model
selection. Reports accuracy and macro-F1 on the official test split. The PyTorch reference with
the same hyperparameters is experiments/benchmarks/banking77_torch.py.
"""

import os

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
from mgpt.known_models import minilm_path

DATA = os.environ.get(
    "MGPT_BANKING77_DIR",
    os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "banking77")),
)
HYPERPARAMETERS = dict(learning_rate=1e-4, batch_size=32, num_epochs=2, max_length=64, warmup_ratio=0.1,
                       weight_decay=0.01, max_grad_norm=1.0, validation_ratio=0.1)


def get_config() -> ExperimentConfig:
    hp = HYPERPARAMETERS
    return ExperimentConfig(
        name="banking77_intent",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(format="csv", train_file=os.path.join(DATA, "train.csv"),
                        test_file=os.path.join(DATA, "test.csv"), text_column="text", label_column="category",
                        validation_ratio=hp["validation_ratio"], split_seed=0, stratify=True,
                        max_length=hp["max_length"]),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=hp["learning_rate"], warmup_ratio=hp["warmup_ratio"],
                                  weight_decay=hp["weight_decay"], max_grad_norm=hp["max_grad_norm"]),
        train=TrainConfig(batch_size=hp["batch_size"], num_epochs=hp["num_epochs"], log_every=20,
                          best_metric="validation/macro_f1"),
    )
