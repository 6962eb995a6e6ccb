"""``mgpt convert``: Hugging Face directory -> Orbax params (+ config, tokenizer, mgpt_spec.json) and back,
with the same logits as the PyTorch model both ways."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from family_checkpoints import AUTO_CLASS, PER_TOKEN, compare, make_batch, make_checkpoint, torch_logits

from mgpt.cli import main
from mgpt.models.convert import load_orbax

TOL = 1e-4


@pytest.mark.parametrize("family,task", [("llama", "causal_lm"), ("roberta", "token_classification")])
def test_convert_hf_to_orbax_and_back(family, task, tmp_path, capsys):
    reference = make_checkpoint(tmp_path / "hf", family, task)
    ids, mask = make_batch(padded=True)
    ref = torch_logits(reference, ids, mask).logits.numpy()
    per_token = mask if PER_TOKEN[task] else None

    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "orbax")]) == 0
    assert "(hf->orbax)" in capsys.readouterr().out
    meta = json.loads((tmp_path / "orbax" / "mgpt_spec.json").read_text())
    assert (meta["family"], meta["task"]) == (family, task)  # the task comes from config.json's architectures
    assert {"config.json", "tokenizer.json", "params"} <= set(os.listdir(tmp_path / "orbax"))
    model, params, spec, tokenizer = load_orbax(str(tmp_path / "orbax"))
    assert tokenizer.pad_token_id == 0 and spec.num_labels == reference.config.num_labels * (task != "causal_lm")
    ours = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert compare(ours, ref, per_token)[0] < TOL

    assert main(["convert", str(tmp_path / "orbax"), str(tmp_path / "back"), "--max-shard-size", "30KB"]) == 0
    assert "(orbax->hf)" in capsys.readouterr().out
    assert (tmp_path / "back" / "model.safetensors.index.json").exists()
    reloaded = AUTO_CLASS[task].from_pretrained(tmp_path / "back", attn_implementation="eager").eval()
    assert compare(torch_logits(reloaded, ids, mask).logits.numpy(), ref, per_token)[0] < TOL
    # Tensors survive both conversions bit for bit.
    for name, tensor in reference.state_dict().items():
        if name in reloaded.state_dict():
            np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)


def test_convert_options_and_errors(tmp_path, capsys):
    make_checkpoint(tmp_path / "bare", "mistral", "causal_lm", bare=True)  # MistralModel: no task in config
    assert main(["convert", str(tmp_path / "bare"), str(tmp_path / "x")]) == 2
    assert "pass --task" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "bare"), str(tmp_path / "x"), "--task", "sequence_classification",
                 "--num-labels", "5", "--param-dtype", "bfloat16"]) == 0
    _, params, spec, _ = load_orbax(str(tmp_path / "x"))
    assert spec.task == "sequence_classification" and params["head"]["score"]["kernel"].shape == (48, 5)
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype("bfloat16")}
    assert main(["convert", str(tmp_path / "bare"), str(tmp_path / "x")]) == 2  # destination not empty
    assert "not an empty directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), str(tmp_path / "y")]) == 2
    assert "neither mgpt_spec.json" in capsys.readouterr().err
