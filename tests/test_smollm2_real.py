"""The real SmolLM2-135M-Instruct GGUF file (Llama, 4-bit Q4_1 with a Q8_0 embedding): mgpt's GGUF reader
against transformers' own GGUF loader, logits and tokenizer."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from mgpt import bench
from mgpt.known_models import smollm2_path
from mgpt.models import load_pretrained, make_spec

TEXTS = [
    "The capital of France is",
    "In 1999, the café served 42 crêpes at 3.50 € each — naïve ☃, 東京, emoji 🙂!",
    "<|im_start|>user\nWhat is 17 * 23?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # tabs\tand   spaces",
]
CHAT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name two prime numbers above 100."},
    {"role": "assistant", "content": "101 and 103."},
    {"role": "user", "content": "And one below 10?"},
]


@pytest.fixture(scope="module")
def loaded():
    path = smollm2_path()
    model, params, spec, tokenizer = load_pretrained(path, task="causal_lm")
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return model, params, spec, tokenizer, reference, ref_tokenizer


def test_architecture_from_the_metadata(loaded):
    _, _, spec, tokenizer, _, _ = loaded
    arch = spec.arch
    assert spec.family == "llama"
    assert (arch.num_layers, arch.hidden_size, arch.num_heads, arch.num_kv_heads) == (30, 576, 9, 3)
    assert (arch.vocab_size, arch.intermediate_size, arch.rope_theta) == (49152, 1536, 100000.0)
    assert arch.tie_word_embeddings
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


def test_the_smollm2_bench_size_is_the_packaged_files_architecture(loaded):
    """`mgpt bench --model smollm2-135m` (the GPU script's fine-tuning step) times this model's exact shapes."""
    real = loaded[2].arch
    sized = make_spec(bench.hf_config_for("smollm2-135m", 2048), "causal_lm").arch
    fields = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size",
              "activation", "rope_theta", "tie_word_embeddings")
    assert {f: getattr(sized, f) for f in fields} == {f: getattr(real, f) for f in fields}
    assert sized.norm_eps == pytest.approx(real.norm_eps, rel=1e-6)  # the file stores it as a float32


def test_logits_match_transformers_gguf_loader_on_a_padded_batch(loaded):
    model, params, _, tokenizer, reference, _ = loaded
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    mask = batch["attention_mask"]
    assert mask.min() == 0  # really padded
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(batch["input_ids"]),
                                  attention_mask=jnp.asarray(mask), deterministic=True))
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(mask)).logits.numpy()
    real = mask.astype(bool)
    scale = np.abs(theirs[real]).max()
    assert np.abs(ours[real] - theirs[real]).max() <= 1e-5 * scale


def test_token_ids_equal_transformers_tokenizer_from_the_same_file(loaded):
    _, _, _, tokenizer, _, ref_tokenizer = loaded
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == ref_tokenizer(text)["input_ids"]
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered == ref_tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tokenizer(rendered)["input_ids"] == ref_tokenizer(rendered)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 2 == tokenizer.eos_token_id
