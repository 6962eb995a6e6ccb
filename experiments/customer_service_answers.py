"""Customer-service assistant: answer generation fine-tuned as a causal LM on question/answer pairs.

    mgpt train experiments/customer_service_answers.py --set data.train_file=qa_train.jsonl --set data.test_file=qa_test.jsonl

JSONL lines like {"question": "...", "answer": "..."}; the loss covers the answer tokens only. The
decoder defaults to the `gpt2` hub id (needs network once; pass a local HF directory offline with
--set model.name_or_path=DIR). Evaluated by generating: exact match, token F1 (SQuAD definitions)
and ROUGE-L; 10% of train is held out for model selection.
"""

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainConfig


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="customer_service_answers",
        model=ModelConfig(name_or_path="gpt2"),
        data=DataConfig(format="jsonl", train_file="qa_train.jsonl", test_file="qa_test.jsonl",
                        prompt_template="Customer: {question}\nAgent:", target_column="answer",
                        validation_ratio=0.1, max_length=256),
        task=TaskConfig(kind="generation", generation_metrics=("exact_match", "token_f1", "rouge"), max_new_tokens=64),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-5, warmup_ratio=0.05, weight_decay=0.01),
        train=TrainConfig(batch_size=16, num_epochs=3, best_metric="validation/token_f1", best_mode="max"),
    )
