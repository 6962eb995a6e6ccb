"""Loading split by job (hub, loading, tokenizer) and the tokenizer optional for weights: a directory written by
transformers' ``model.save_pretrained`` alone loads with transformers' logits; whatever needs a tokenizer fails
with one line naming the directory."""

import fnmatch
import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from family_checkpoints import CONFIGS, compare, make_batch, torch_logits
from fixtures_tiny import write_classification_experiment
from test_models_parity import gpt2_config

from mgpt import config as config_lib
from mgpt.cli import main
from mgpt.models import CheckpointError, LoadReport, load_pretrained, load_tokenizer
from mgpt.models import hub, loading
from mgpt.models.convert import convert, load_orbax
from mgpt.models.hf import pretrained_spec
from mgpt.models.tokenizer import TOKENIZER_FILES, find_tokenizer

TOL = 1e-4


def weights_only(directory, torch_cls, config, seed=0, **save_kwargs):
    """A random transformers model saved with ``model.save_pretrained`` and nothing else (no tokenizer)."""
    torch.manual_seed(seed)
    model = torch_cls(config).eval()
    model.save_pretrained(directory, **save_kwargs)
    assert not set(os.listdir(directory)) & set(TOKENIZER_FILES)
    return model


WEIGHTS_ONLY = {
    # name: (transformers class, config, mgpt task, logits per token)
    "llama_causal_lm": (transformers.LlamaForCausalLM, lambda: CONFIGS["llama"](), "causal_lm", True),
    "mistral_causal_lm": (transformers.MistralForCausalLM, lambda: CONFIGS["mistral"](), "causal_lm", True),
    "gpt2_causal_lm": (transformers.GPT2LMHeadModel, gpt2_config, "causal_lm", True),
    "llama_sequence": (transformers.LlamaForSequenceClassification, lambda: CONFIGS["llama"](num_labels=3),
                       "sequence_classification", False),
}


# ------------------------------------------------------------------------------- the tokenizer is optional


@pytest.mark.parametrize("case", sorted(WEIGHTS_ONLY))
def test_weights_only_directory_loads_with_transformers_logits(case, tmp_path, caplog):
    torch_cls, make_config, task, per_token = WEIGHTS_ONLY[case]
    reference = weights_only(tmp_path, torch_cls, make_config())
    with caplog.at_level(logging.INFO, logger="mgpt"):
        model, params, spec, tokenizer = load_pretrained(tmp_path, task=task)
    assert tokenizer is None
    report = spec.load_report
    assert not report.has_tokenizer and report.initialized == ()  # every parameter came from the checkpoint
    assert str(tmp_path) in report.tokenizer_note and "no tokenizer files" in report.tokenizer_note
    assert f"no tokenizer found in {tmp_path}" in caplog.text
    ids, mask = make_batch(padded=True)
    ours = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    theirs = torch_logits(reference, ids, mask).logits.numpy()
    err, _ = compare(ours, theirs, mask if per_token else None)
    assert err < TOL, err


def test_load_tokenizer_without_files_fails_in_one_line_naming_the_directory(tmp_path):
    weights_only(tmp_path, transformers.LlamaForCausalLM, CONFIGS["llama"]())
    assert find_tokenizer(str(tmp_path)) is None
    with pytest.raises(CheckpointError) as error:
        load_tokenizer(tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{tmp_path} has no tokenizer files (tokenizer.json")
    assert "training" in message and "generation" in message
    with pytest.raises(CheckpointError, match="generation needs one"):
        load_tokenizer(tmp_path, needed_for="generation needs one")


def test_broken_tokenizer_files_are_an_error_not_none(tmp_path):
    weights_only(tmp_path, transformers.GPT2LMHeadModel, gpt2_config())
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="could not load a tokenizer"):
        find_tokenizer(str(tmp_path))
    with pytest.raises(CheckpointError, match="could not load a tokenizer"):
        load_pretrained(tmp_path, task="causal_lm")


@pytest.fixture(scope="module")
def no_tokenizer_experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("no_tok")
    model_dir = directory / "model"
    weights_only(model_dir, transformers.GPT2LMHeadModel, gpt2_config())
    return write_classification_experiment(str(directory), str(model_dir)), str(model_dir)


def test_build_run_without_tokenizer_fails_naming_the_directory(no_tokenizer_experiment):
    from mgpt.train import setup

    experiment, model_dir = no_tokenizer_experiment
    config = config_lib.load_experiment(experiment)
    with pytest.raises(CheckpointError) as error:
        setup.build_run(config)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{model_dir} has no tokenizer files")
    assert "training" in message


def test_generate_without_tokenizer_fails_naming_the_directory(no_tokenizer_experiment, capsys):
    experiment, model_dir = no_tokenizer_experiment
    assert main(["generate", experiment, "--model", model_dir, "--prompt", "good movie"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"mgpt: generate: {model_dir} has no tokenizer files") and "generation" in err


def test_convert_weights_only_directory_both_ways(tmp_path):
    reference = weights_only(tmp_path / "hf", transformers.LlamaForCausalLM, CONFIGS["llama"]())
    assert convert(str(tmp_path / "hf"), str(tmp_path / "orbax")) == "hf->orbax"
    model, params, spec, tokenizer = load_orbax(str(tmp_path / "orbax"))
    assert tokenizer is None and spec.task == "causal_lm"
    ids, mask = make_batch(padded=True)
    ref = torch_logits(reference, ids, mask).logits.numpy()
    ours = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert compare(ours, ref, mask)[0] < TOL
    assert convert(str(tmp_path / "orbax"), str(tmp_path / "back")) == "orbax->hf"
    assert not set(os.listdir(tmp_path / "back")) & set(TOKENIZER_FILES)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", attn_implementation="eager")
    assert compare(torch_logits(reloaded.eval(), ids, mask).logits.numpy(), ref, mask)[0] < TOL


# ------------------------------------------------------------------------------------------------------ hub


def test_hub_offline_id_fails_at_once_and_paths_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"'some-org/some-model' is not a local directory.*pass a local dir"):
        hub.resolve_checkpoint_dir("some-org/some-model")
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        hub.resolve_checkpoint_dir(str(tmp_path / "absent" / "dir"))
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is a file"):
        hub.resolve_checkpoint_dir(tmp_path / "file.json")
    assert hub.resolve_checkpoint_dir(tmp_path) == str(tmp_path)


def test_hub_download_fetches_config_safetensors_and_tokenizer_only(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert hub.resolve_checkpoint_dir("org/model") == str(tmp_path)
    (repo_id, patterns), = calls
    assert repo_id == "org/model"

    def fetched(name):
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    wanted = ["config.json", "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
              *TOKENIZER_FILES]
    assert all(fetched(name) for name in wanted)
    refused = ["pytorch_model.bin", "model.pt", "tf_model.h5", "flax_model.msgpack", "pytorch_model.bin.index.json",
               "modeling_custom.py"]
    assert not any(fetched(name) for name in refused)

    def failing(repo_id, allow_patterns):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(CheckpointError, match=r"could not download 'org/model'.*OSError: no network"):
        hub.resolve_checkpoint_dir("org/model")


# -------------------------------------------------------------------------------------------------- loading


def test_pickles_are_never_opened(tmp_path):
    weights_only(tmp_path / "only", transformers.GPT2Model, gpt2_config())
    os.replace(tmp_path / "only" / "model.safetensors", tmp_path / "only" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"\['pytorch_model\.bin'\]; mgpt never unpickles"):
        loading.checkpoint_files(str(tmp_path / "only"))
    # Next to safetensors, a pickle is not read at all (here it is not even a valid pickle).
    weights_only(tmp_path / "both", transformers.GPT2Model, gpt2_config())
    (tmp_path / "both" / "pytorch_model.bin").write_bytes(b"not a pickle")
    files = loading.checkpoint_files(str(tmp_path / "both"))
    assert set(files.values()) == {str(tmp_path / "both" / "model.safetensors")}


def test_sharded_index_maps_every_tensor_to_its_shard(tmp_path):
    reference = weights_only(tmp_path, transformers.LlamaForCausalLM, CONFIGS["llama"](), max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    files = loading.checkpoint_files(str(tmp_path))
    assert files == {name: str(tmp_path / shard) for name, shard in index.items()}
    assert len(set(files.values())) >= 2 and set(files) == set(reference.state_dict())  # untied: all saved
    _, _, spec, _ = load_pretrained(tmp_path, task="causal_lm")
    assert spec.load_report.files == tuple(sorted(set(index.values())))
    # A missing shard, and an index without a weight map, are named.
    shard = sorted(set(index.values()))[-1]
    os.remove(tmp_path / shard)
    with pytest.raises(CheckpointError, match=rf"lists shard file\(s\) that do not exist: .*{shard}"):
        loading.checkpoint_files(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="expected JSON with a 'weight_map' object"):
        loading.checkpoint_files(str(tmp_path))


def test_load_params_report_contents(tmp_path):
    weights_only(tmp_path / "seq", transformers.GPT2ForSequenceClassification, gpt2_config(num_labels=3))
    spec = pretrained_spec(tmp_path / "seq", task="sequence_classification")
    params, report = loading.load_params(str(tmp_path / "seq"), spec)
    assert isinstance(report, LoadReport)
    assert report == LoadReport(directory=str(tmp_path / "seq"), files=("model.safetensors",),
                                loaded_head=("score.weight",), initialized=(), ignored=(), head_note="")
    assert params["head"]["score"]["kernel"].shape == (32, 3)
    # The same checkpoint for another task: its head is ignored, with the reason, and the task's head initialised.
    spec = pretrained_spec(tmp_path / "seq", task="token_classification", num_labels=3)
    _, report = loading.load_params(str(tmp_path / "seq"), spec)
    assert report.loaded_head == () and report.initialized == ("head/classifier/bias", "head/classifier/kernel")
    assert report.head_note == "checkpoint has no head for this task"
    assert any(entry.startswith("score.weight (") for entry in report.ignored)


def test_missing_tensor_is_named_as_the_checkpoint_spells_it(tmp_path):
    from safetensors.numpy import load_file, save_file

    weights_only(tmp_path, transformers.GPT2Model, gpt2_config())  # bare model: names without "transformer."
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    tensors.pop("h.1.mlp.c_fc.weight")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing backbone tensor\(s\): \['h\.1\.mlp\.c_fc\.weight'\]"):
        load_pretrained(tmp_path, task="causal_lm")


def test_param_dtype_and_shardings_are_checked():
    assert loading.param_numpy_dtype("bfloat16").name == "bfloat16"
    with pytest.raises(ValueError, match="unknown param_dtype 'float8'"):
        loading.param_numpy_dtype("float8")
    with pytest.raises(ValueError, match="shardings has no entry for parameter backbone/x"):
        loading.sharding_resolver({"backbone": {"y": None}})(("backbone", "x"))
    one = loading.sharding_resolver(None)(("backbone", "x"))
    assert len(one.device_set) == 1
    np.testing.assert_equal(loading.sharding_resolver(lambda name: name)(("a", "b")), "a/b")


def test_cli_reports_a_missing_tokenizer_in_one_line(no_tokenizer_experiment, tmp_path, capsys):
    from mgpt import cli

    experiment, model_dir = no_tokenizer_experiment
    assert cli.main(["train", experiment, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"mgpt: train: {model_dir} has no tokenizer files")
    assert "Traceback" not in err
