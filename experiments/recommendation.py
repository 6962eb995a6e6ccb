"""Recommendation from item text: predict a click (classification) or a rating (regression), and rank candidates.

    python experiments/benchmarks/make_recommendation_data.py --output data/recommendation
    export MGPT_ITEMS_TRAIN=data/recommendation/items_train.csv MGPT_ITEMS_TEST=data/recommendation/items_test.csv
    mgpt train experiments/recommendation.py --workdir runs/recommendation
    mgpt rank experiments/recommendation.py --checkpoint runs/recommendation --input $MGPT_ITEMS_TEST \
        --output runs/recommendation/ranking
    python experiments/benchmarks/recommendation_baselines.py --train $MGPT_ITEMS_TRAIN --test $MGPT_ITEMS_TEST

Each CSV row is one (user, candidate) pair: `history` (what the user read, e.g. headlines joined by " | ") and
`candidate` (the item's text) are encoded as a sentence pair, `label` is 0/1 (clicked); `user` and `item` name
them for `mgpt rank`, which ranks each user's candidates by the predicted click probability and reports
NDCG@5/10, recall@5/10 and MRR (mgpt.apps.ranking). The generator builds such a set from real BBC News headlines
with simulated users (see its docstring); with other files set the columns with --set data.text_column=... /
data.text_pair_column=..., or `--set data.text_pair_column=` for a single text column. For star ratings use
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
                        test_file=os.environ.get("MGPT_ITEMS_TEST", "items_test.csv"), text_column="history",
                        text_pair_column="candidate", label_column="label", validation_ratio=0.1, max_length=48),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01),
        train=TrainConfig(batch_size=32, num_epochs=3),
    )
