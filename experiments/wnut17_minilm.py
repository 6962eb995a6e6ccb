"""NER on WNUT-17 with all-MiniLM-L6-v2 (real data; a benchmark, not a test).

    mgpt train experiments/wnut17_minilm.py --workdir runs/wnut17_minilm_seed0 --set train.seed=0

Reads the CoNLL files in shared/data/wnut17 next to the checkout (override with
--set data.train_file=... etc.). Trains on the train split, picks the best checkpoint on dev
(emerging.dev.conll), and reports entity-level seqeval F1 on the annotated test split. The PyTorch
reference with the same hyperparameters is experiments/benchmarks/wnut17_torch.py.
"""

import os

from mgpt.config import (CheckpointConfig, DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig,
                         TaskConfig, TrainConfig)
from mgpt.known_models import minilm_path

DATA = os.environ.get(
    "MGPT_WNUT17_DIR", os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wnut17"))
)

# Shared with the PyTorch reference script so both runs use identical settings.
# 1e-4 rather than 5e-5: at 5e-5 (321 steps) five of eight runs over both frameworks were still near
# the all-O plateau after epoch 1 (dev F1 below 6), so test F1 swung from 31.6 to 39.5 with the seed;
# at 1e-4 runs leave it in epoch 1 and end higher (README, WNUT-17 table).
HYPERPARAMETERS = dict(learning_rate=1e-4, batch_size=32, num_epochs=3, max_length=128, warmup_ratio=0.1,
                       weight_decay=0.01, max_grad_norm=1.0)


def get_config() -> ExperimentConfig:
    hp = HYPERPARAMETERS
    return ExperimentConfig(
        name="wnut17_minilm",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(
            format="conll",
            train_file=os.path.join(DATA, "wnut17train.conll"),
            validation_file=os.path.join(DATA, "emerging.dev.conll"),
            test_file=os.path.join(DATA, "emerging.test.annotated"),
            max_length=hp["max_length"],
        ),
        task=TaskConfig(kind="token_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=hp["learning_rate"], schedule="linear",
                                  warmup_ratio=hp["warmup_ratio"], weight_decay=hp["weight_decay"],
                                  max_grad_norm=hp["max_grad_norm"]),
        train=TrainConfig(batch_size=hp["batch_size"], eval_batch_size=64, num_epochs=hp["num_epochs"], log_every=20),
        checkpoint=CheckpointConfig(max_to_keep=1),
    )
