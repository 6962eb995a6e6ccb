"""Machine translation German -> English as causal-LM fine-tuning, from TFDS wmt14_translate/de-en.

    mgpt train experiments/translation.py

A local parallel text pair works the same way:
`--set data.format=parallel --set data.tfds_name= --set "data.tfds_splits={}" --set data.validation_ratio=0.1
--set data.train_file=corpus/train.de->en --set data.test_file=corpus/test.de->en
--set "data.prompt_template=German: {source}\nEnglish:" --set data.target_column=target`.
Evaluated by generating, with sacrebleu BLEU and chrF. The default decoder is the `Qwen/Qwen2.5-0.5B`
hub id (multilingual); pass a local HF directory offline.
"""

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="translation",
        model=ModelConfig(name_or_path="Qwen/Qwen2.5-0.5B", dtype="bfloat16"),
        data=DataConfig(format="tfds", tfds_name="wmt14_translate/de-en",
                        tfds_splits={"train": "train[:200000]", "validation": "validation[:500]", "test": "test"},
                        prompt_template="German: {de}\nEnglish:", target_column="en", max_length=192),
        task=TaskConfig(kind="generation", generation_metrics=("bleu", "chrf"), max_new_tokens=96),
        optimizer=OptimizerConfig(name="adamw", learning_rate=2e-5, warmup_ratio=0.03, weight_decay=0.0),
        train=TrainConfig(batch_size=32, num_epochs=1, eval_every=2000, best_metric="validation/bleu",
                          best_mode="max"),
    )
