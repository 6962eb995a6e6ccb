"""NER on WNUT-17 with all-MiniLM-L6-v2, parameter-efficient: LoRA (default), adapters, prefix tuning, ...

    mgpt train experiments/wnut17_peft.py --workdir runs/wnut17_lora
    mgpt train experiments/wnut17_peft.py --workdir runs/wnut17_adapter --set peft.method=adapter \
        --set optimizer.learning_rate=3e-4
    mgpt train experiments/wnut17_peft.py --workdir runs/wnut17_prefix --set peft.method=prefix \
        --set optimizer.learning_rate=5e-3
    mgpt train experiments/wnut17_peft.py --workdir runs/wnut17_dora --set peft.method=dora --set peft.use_rslora=true
    mgpt train experiments/wnut17_peft.py --workdir runs/wnut17_lora_small --set checkpoint.trainable_only=true

Same data and schedule as experiments/wnut17_minilm.py (full fine-tuning); only the PEFT parameters and the
token-classification head train, at a learning rate suited to them (PEFT methods want ~10-100x the full
fine-tuning rate). The start-up log says how many parameters train. experiments/benchmarks/peft_compare.py
runs full fine-tuning, LoRA, adapters and prefix tuning one after the other and tabulates them.
"""

import dataclasses
import os

from mgpt.config import PeftConfig, load_experiment

FULL_FINE_TUNING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wnut17_minilm.py")

# Per-method learning rates used by the benchmark (and a sensible start for --set peft.method=...).
# Adapters: at 1e-3 (and 5e-3) they collapse within ~20 steps to features that are the same for every
# token (the model then predicts only O); one-epoch probes gave dev loss 0.459 (1e-3, = the all-O rate),
# 0.361 (3e-4) and 0.450 (1e-4), so 3e-4.
LEARNING_RATES = {"lora": 1e-3, "dora": 1e-3, "adapter": 3e-4, "prefix": 5e-3, "prompt": 5e-3, "ia3": 3e-3,
                  "bitfit": 1e-3}


def get_config():
    config = load_experiment(FULL_FINE_TUNING)
    return dataclasses.replace(
        config,
        name="wnut17_peft",
        optimizer=dataclasses.replace(config.optimizer, learning_rate=LEARNING_RATES["lora"]),
        # LoRA r=8 on query/key/value of the 6 layers; adapters of width 64 after attention and FFN
        # (Houlsby); 20 prefix key/value positions per layer.
        peft=PeftConfig(method="lora", rank=8, alpha=16.0, dropout=0.1, adapter_size=64,
                        adapter_placement="houlsby", num_virtual_tokens=20),
    )
