"""LoRA, DoRA and IA3 adapters in the peft library's format: peft loads mgpt's onto transformers with the same
outputs, and mgpt loads both its own and peft-made adapters back."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import peft as hf_peft
import pytest
import torch
import transformers

from mgpt import peft
from mgpt.config import PeftConfig
from mgpt.models import load_pretrained
from mgpt.peft import hf_format

from fixtures_tiny import tiny_bert, tiny_gpt2

CASES = {  # family -> (task, transformers auto class)
    "gpt2": ("sequence_classification", transformers.AutoModelForSequenceClassification),
    "bert": ("token_classification", transformers.AutoModelForTokenClassification),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft_hf")
    out = {}
    for family, make in (("gpt2", tiny_gpt2), ("bert", tiny_bert)):
        directory = make(root / family)
        out[family] = (directory, *load_pretrained(directory, task=CASES[family][0], num_labels=3, dropout=0.0))
    return out


def _batch():
    rng = np.random.RandomState(0)
    ids = rng.randint(5, 30, (2, 7)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()


def _diff(a, b, mask):
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 3:
        a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("family,method", [("gpt2", "lora"), ("gpt2", "ia3"), ("bert", "dora"), ("bert", "ia3")])
def test_peft_loads_mgpt_adapters_with_the_same_outputs(models, family, method, tmp_path):
    directory, model, params, spec, _ = models[family]
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method=method, rank=4, use_rslora=method == "dora"),
                              jax.random.PRNGKey(0))
    leaves, treedef = jax.tree_util.tree_flatten(p["peft"])
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    p["peft"] = jax.tree_util.tree_unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape)
                                                       for x, k in zip(leaves, keys)])
    ids, mask = _batch()
    ours = np.asarray(peft_model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    out = hf_format.save_adapter(tmp_path / "adapter", peft_model, p, base_model_name_or_path=directory)
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    with open(os.path.join(out, "adapter_config.json")) as f:
        assert json.load(f)["peft_type"] == ("IA3" if method == "ia3" else "LORA")

    base = CASES[family][1].from_pretrained(directory, num_labels=3).eval()
    loaded = hf_peft.PeftModel.from_pretrained(base, out).eval()
    assert _diff(_torch_logits(loaded, ids, mask), ours, mask) < 1e-4

    back_model, back = hf_format.load_adapter(out, model, params, spec)
    assert back_model.cfg.method == method
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(p)
    for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_mgpt_loads_a_peft_made_lora_adapter(models, tmp_path):
    directory, model, params, spec, _ = models["gpt2"]
    torch.manual_seed(0)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(directory, num_labels=3).eval()
    config = hf_peft.LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=5, target_modules=["c_attn", "mlp.c_proj"],
                                fan_in_fan_out=True, init_lora_weights=False)  # random B: a visible update
    made = hf_peft.get_peft_model(base, config).eval()
    made.save_pretrained(tmp_path / "made")
    ids, mask = _batch()
    peft_model, p = hf_format.load_adapter(tmp_path / "made", model, params, spec)
    assert peft_model.cfg.rank == 2 and peft_model.cfg.alpha == 5.0
    ours = peft_model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    ref = _torch_logits(made, ids, mask)
    assert _diff(ours, ref, mask) < 1e-4
    plain = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert _diff(plain, ref, mask) > 1e-3  # the adapter (and the saved head) did change the outputs


def test_unsupported_adapters_fail_naming_the_key(models, tmp_path):
    directory, model, params, spec, _ = models["bert"]
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method="lora", rank=2), jax.random.PRNGKey(0))
    out = hf_format.save_adapter(tmp_path / "a", peft_model, p)
    path = os.path.join(out, "adapter_config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump(dict(config, rank_pattern={"query": 8}), f)
    with pytest.raises(ValueError, match="rank_pattern"):
        hf_format.load_adapter(out, model, params, spec)
    with open(path, "w") as f:
        json.dump(dict(config, task_type="SEQ_CLS"), f)
    with pytest.raises(ValueError, match="task_type='SEQ_CLS'"):
        hf_format.load_adapter(out, model, params, spec)
    adapter_model, q = peft.wrap(model, params, spec, PeftConfig(method="adapter", adapter_size=2), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="has no peft-library format"):
        hf_format.save_adapter(tmp_path / "b", adapter_model, q)


def test_llama_family_lora_with_untied_lm_head(tmp_path):
    """Llama layout (q/k/v_proj, GQA) and an untied LM head saved as modules_to_save, causal LM logits."""
    import family_checkpoints as fc

    directory = str(tmp_path / "llama")
    fc.make_checkpoint(directory, "llama", "causal_lm")
    model, params, spec, _ = load_pretrained(directory, task="causal_lm")
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method="lora", rank=2), jax.random.PRNGKey(0))
    p["peft"] = jax.tree_util.tree_map(lambda x: x + 0.1, p["peft"])
    ids, mask = fc.make_batch()
    ours = np.asarray(peft_model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    out = hf_format.save_adapter(tmp_path / "adapter", peft_model, p)
    with open(os.path.join(out, "adapter_config.json")) as f:
        config = json.load(f)
    assert config["modules_to_save"] == ["lm_head"] and config["task_type"] == "CAUSAL_LM"
    assert config["target_modules"][:3] == ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj",
                                            "model.layers.0.self_attn.v_proj"]
    loaded = hf_peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(directory), out)
    assert _diff(_torch_logits(loaded.eval(), ids, mask), ours, mask) < 1e-4


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_scanned_model_adapters_save_per_layer_and_load_back_stacked(tmp_path, method):
    """With scan_layers the adapter is written layer by layer (peft loads it onto the transformers model with the
    same logits) and read back onto the scanned model with exactly the params it was saved from."""
    import family_checkpoints as fc

    directory = str(tmp_path / "llama")
    fc.make_checkpoint(directory, "llama", "causal_lm")
    model, params, spec, _ = load_pretrained(directory, task="causal_lm", scan_layers=True)
    peft_model, p = peft.wrap(model, params, spec, PeftConfig(method=method, rank=2), jax.random.PRNGKey(0))
    assert p["peft"][method]["backbone"]["layers"]  # one stacked entry, not layers_0, layers_1
    p["peft"] = jax.tree_util.tree_map(lambda x: x + 0.1, p["peft"])
    ids, mask = fc.make_batch()
    ours = np.asarray(peft_model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    out = hf_format.save_adapter(tmp_path / "adapter", peft_model, p)
    loaded = hf_peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(directory), out)
    assert _diff(_torch_logits(loaded.eval(), ids, mask), ours, mask) < 1e-4
    _, back = hf_format.load_adapter(out, model, params, spec)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(p)
    for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
