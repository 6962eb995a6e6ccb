"""GGUF out and back: mgpt.save_gguf (f32, f16, q8_0) read by transformers' GGUF loader and by mgpt with the same
logits, the tokenizer and chat template carried in the metadata, bad files refused in one line, and the
``mgpt convert`` directions (HF dir <-> GGUF, a LoRA training run -> GGUF).

Tiny random decoders with hidden 64 (rows split into Q8_0's 32-value blocks), a byte-level BPE tokenizer trained
on the spot. Where transformers' GGUF reader reads fewer config keys than llama.cpp writes, the tiny configs keep
those fields at the values it assumes (Qwen3 head_dim 128, GPT-2 n_positions 1024, Phi-3 full rotary).
"""

import logging
import os

import gguf
import numpy as np
import pytest
import torch
import transformers

import mgpt
from mgpt import cli
from mgpt.models import gguf_read
from mgpt.models.safetensors_io import CheckpointError

VOCAB, PAD, EOS = 320, 1, 0
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
SAMPLE = "Hello world, the lazy fox jumps!  123 4567\n\tnaïve café <|endoftext|> tests<pad>"
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD, bos_token_id=EOS,
              eos_token_id=EOS)
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**COMMON, tie_word_embeddings=False),
    "mistral": lambda: transformers.MistralConfig(**COMMON, tie_word_embeddings=True, sliding_window=None),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=False),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON, head_dim=128, tie_word_embeddings=False),
    "phi3": lambda: transformers.Phi3Config(**COMMON, tie_word_embeddings=False),
    "gemma": lambda: transformers.GemmaConfig(**COMMON, head_dim=16),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                                            pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS),
}
# transformers reads these families' GGUF files; Mistral's path in transformers 5 looks "mistral" up in gguf's
# architecture table, which has none (llama.cpp writes Mistral as "llama"), so it is checked against the original.
HF_READS = ("llama", "qwen2", "qwen3", "phi3", "gpt2")
# Measured max |logit error| vs the original model (tiny models, logits up to ~0.5): f16 <= 3.4e-4, q8_0 <= 8.6e-3.
BOUND = {"f32": 1e-5, "f16": 1e-3, "q8_0": 2e-2}


def bpe_tokenizer():
    """A byte-level BPE (GPT-2 alphabet, 300 tokens with two special ones) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog", "hello world, this is a test of tiny tokenizers 123"] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                bos_token="<|endoftext|>", pad_token="<pad>")
    fast.chat_template = TEMPLATE
    return fast


def make_checkpoint(directory, family, seed=0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[family](), attn_implementation="eager").eval()
    with torch.no_grad():  # move norms and biases off their initial values so mistakes show
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                param.add_(0.2 * torch.randn_like(param))
    model.save_pretrained(directory)
    bpe_tokenizer().save_pretrained(directory)
    return model


def batch():
    """Right-padded ids (rows of 8, 5 and 2 real tokens) and their mask."""
    ids = np.random.RandomState(0).randint(2, 300, size=(3, 8))
    mask = np.ones_like(ids)
    mask[1, 5:], mask[2, 2:] = 0, 0
    ids[mask == 0] = PAD
    return ids, mask


def torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def mgpt_logits(path, ids, mask, task="causal_lm", **kwargs):
    model, params, spec, tokenizer = mgpt.load_pretrained(path, task=task, **kwargs)
    return np.asarray(model.apply({"params": params}, ids, attention_mask=mask, deterministic=True)), spec, tokenizer


def max_err(a, b, mask):
    return float(np.abs(np.asarray(a, np.float64) - b)[mask.astype(bool)].max())


def hf_gguf_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=path,
                                                             dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (HF directory, the original torch model)."""
    root = tmp_path_factory.mktemp("gguf_hf")
    return {f: (str(root / f), make_checkpoint(root / f, f)) for f in CONFIGS}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_gguf_export_is_read_back_by_transformers_and_mgpt_with_the_same_logits(family, checkpoints, tmp_path):
    directory, original = checkpoints[family]
    ids, mask = batch()
    ref = torch_logits(original, ids, mask)
    _, params, spec, tokenizer = mgpt.load_pretrained(directory)
    for dtype in ("f32", "f16", "q8_0"):
        path = mgpt.save_gguf(tmp_path / f"{family}-{dtype}.gguf", spec, params, tokenizer, dtype=dtype)
        ours, ours_spec, _ = mgpt_logits(path, ids, mask)
        assert ours_spec.family == family
        assert max_err(ours, ref, mask) < BOUND[dtype], (family, dtype, max_err(ours, ref, mask))
        if family in HF_READS:
            theirs = torch_logits(hf_gguf_model(path), ids, mask)
            assert max_err(ours, theirs, mask) < 1e-4, (family, dtype)
    reader = gguf_read.open_gguf(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {types[n] for n in types if n.endswith("norm.weight") or n.endswith(".bias")} <= {"F32"}
    assert ("output.weight" in types) == (not spec.arch.tie_word_embeddings)
    assert types["token_embd.weight"] == "Q8_0"


@pytest.mark.parametrize("dtype", ["bf16", "q5_1", "q5_0", "q4_1", "q4_0"])
def test_every_type_the_gguf_package_writes_is_read_like_transformers_reads_it(dtype, checkpoints, tmp_path):
    """BF16 and the 4/5-bit block types (SmolLM2's own file is Q4_1 + Q8_0): each tensor dequantized by mgpt's
    reader gives the logits transformers' GGUF loader gives on the same file; the error vs the original model
    is that of the quantization."""
    directory, original = checkpoints["llama"]
    ids, mask = batch()
    _, params, spec, tokenizer = mgpt.load_pretrained(directory)
    path = mgpt.save_gguf(tmp_path / f"llama-{dtype}.gguf", spec, params, tokenizer, dtype=dtype)
    types = {t.name: t.tensor_type.name for t in gguf_read.open_gguf(path).tensors}
    assert types["blk.0.attn_q.weight"] == dtype.upper() and types["blk.0.attn_norm.weight"] == "F32"
    ours, _, _ = mgpt_logits(path, ids, mask)
    assert max_err(ours, torch_logits(hf_gguf_model(path), ids, mask), mask) < 1e-4
    # measured: bf16 2.4e-3, q5_1 0.044, q5_0 0.059, q4_1 0.103, q4_0 0.106 (logits up to ~0.5)
    bound = {"bf16": 5e-3, "q5_1": 0.08, "q5_0": 0.1, "q4_1": 0.2, "q4_0": 0.2}[dtype]
    assert max_err(ours, torch_logits(original, ids, mask), mask) < bound


def test_q8_0_falls_back_to_f16_for_rows_not_a_multiple_of_32(checkpoints, tmp_path, caplog):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**dict(COMMON, intermediate_size=40))  # ffn_down rows of 40
    directory = tmp_path / "odd"
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    _, params, spec, _ = mgpt.load_pretrained(directory)
    with caplog.at_level(logging.INFO, logger="mgpt"):
        path = mgpt.save_gguf(tmp_path / "odd.gguf", spec, params, None, dtype="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf_read.open_gguf(path).tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_up.weight"] == "Q8_0"
    assert any("F16 instead of Q8_0" in r.getMessage() and "blk.0.ffn_down.weight" in r.getMessage()
               for r in caplog.records)
    assert any("no tokenizer" in r.getMessage() for r in caplog.records)
    assert "tokenizer.ggml.tokens" not in gguf_read.open_gguf(path).fields


def test_task_head_on_a_gguf_decoder(checkpoints, tmp_path):
    directory, _ = checkpoints["llama"]
    _, params, spec, tokenizer = mgpt.load_pretrained(directory)
    path = mgpt.save_gguf(tmp_path / "lm.gguf", spec, params, tokenizer, dtype="f32")
    _, cls_params, cls_spec, _ = mgpt.load_pretrained(path, task="sequence_classification", num_labels=3)
    report = cls_spec.load_report
    assert report.initialized == ("head/score/kernel",) and not report.loaded_head
    assert any("lm_head" in name or "output.weight" in name for name in report.ignored)
    backbone = cls_params["backbone"]
    np.testing.assert_array_equal(backbone["embed_tokens"]["embedding"], params["backbone"]["embed_tokens"]["embedding"])
    np.testing.assert_array_equal(backbone["layers_1"]["mlp"]["down_proj"]["kernel"],
                                  params["backbone"]["layers_1"]["mlp"]["down_proj"]["kernel"])


@pytest.mark.parametrize("family", ["llama", "qwen2"])  # GPT-2's regex (pre "gpt2") and Qwen2's split (pre "qwen2")
def test_tokenizer_and_chat_template_survive_the_gguf_round_trip(family, checkpoints, tmp_path):
    directory, _ = checkpoints[family]
    _, params, spec, tokenizer = mgpt.load_pretrained(directory)
    path = mgpt.save_gguf(tmp_path / "tok.gguf", spec, params, tokenizer, dtype="f16")
    again = mgpt.models.load_tokenizer(path)
    assert again(SAMPLE)["input_ids"] == tokenizer(SAMPLE)["input_ids"]
    assert again.decode(again(SAMPLE)["input_ids"]) == SAMPLE
    assert (again.eos_token_id, again.pad_token_id) == (EOS, PAD)
    chat = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]
    assert again.chat_template == TEMPLATE
    assert again.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(chat, tokenize=False)
    # A model read from GGUF keeps that file's tokenizer fields as they are.
    _, params2, spec2, tok2 = mgpt.load_pretrained(path)
    copy = mgpt.save_gguf(tmp_path / "copy.gguf", spec2, params2, tok2, dtype="f16")
    fields = lambda p: {k: v for k, v in gguf_read.metadata(gguf_read.open_gguf(p)).items()  # noqa: E731
                        if k.startswith("tokenizer.")}
    assert fields(copy) == fields(path) and len(fields(path)["tokenizer.ggml.tokens"]) == VOCAB


def test_a_tokenizer_gguf_cannot_express_is_refused(checkpoints, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory, _ = checkpoints["llama"]
    _, params, spec, _ = mgpt.load_pretrained(directory)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(8)}, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w1")
    with pytest.raises(CheckpointError, match=r"model is 'WordLevel', not 'BPE'") as info:
        mgpt.save_gguf(tmp_path / "w.gguf", spec, params, word)
    assert "\n" not in str(info.value) and not os.path.exists(tmp_path / "w.gguf")


def _write(path, arch, keys, tensors=True):
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in keys.items():
        writer.add_uint32(key, value)
    if tensors:
        writer.add_tensor("token_embd.weight", np.zeros((VOCAB, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_bad_gguf_files_fail_in_one_line_naming_the_file(checkpoints, tmp_path, capsys):
    directory, _ = checkpoints["llama"]
    _, params, spec, tokenizer = mgpt.load_pretrained(directory)
    good = mgpt.save_gguf(tmp_path / "good.gguf", spec, params, tokenizer, dtype="f16")
    data = open(good, "rb").read()
    (tmp_path / "truncated.gguf").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.gguf").write_bytes(np.random.RandomState(0).bytes(4096))
    mamba = _write(tmp_path / "mamba.gguf", "mamba", {"mamba.block_count": 2})
    missing = _write(tmp_path / "missing.gguf", "llama", {"llama.embedding_length": 64,
                                                          "llama.attention.head_count": 4})
    cases = {"truncated.gguf": "not a readable GGUF file", "random.gguf": "not a readable GGUF file",
             "mamba.gguf": "architecture 'mamba' is not one mgpt has", "missing.gguf": "lacks llama.block_count"}
    assert mamba and missing
    for name, what in cases.items():
        path = str(tmp_path / name)
        with pytest.raises(CheckpointError) as info:
            mgpt.load_pretrained(path)
        message = str(info.value)
        assert path in message and what in message and "\n" not in message, message
        assert cli.main(["convert", path, str(tmp_path / f"out_{name}")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mgpt: convert: ") and what in err and "\n" not in err, err


def test_convert_hf_to_gguf_to_hf_keeps_the_logits(checkpoints, tmp_path):
    directory, original = checkpoints["qwen2"]
    ids, mask = batch()
    file, back = str(tmp_path / "m.gguf"), str(tmp_path / "back")
    assert cli.main(["convert", directory, file, "--dtype", "f32"]) == 0
    assert cli.main(["convert", file, back]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    assert max_err(torch_logits(model, ids, mask), torch_logits(original, ids, mask), mask) < 1e-5
    tokenizer = transformers.AutoTokenizer.from_pretrained(back)
    assert tokenizer(SAMPLE)["input_ids"] == transformers.AutoTokenizer.from_pretrained(directory)(SAMPLE)["input_ids"]
    with pytest.raises(SystemExit) as info:  # argparse: an unknown --dtype is a usage error
        cli.main(["convert", directory, str(tmp_path / "x.gguf"), "--dtype", "q4"])
    assert info.value.code == 2


LORA_RUN = '''"""Tiny LoRA causal LM.

    mgpt train lora_lm.py
"""
from mgpt.config import *


def get_config():
    return ExperimentConfig(
        name="lora_lm",
        model=ModelConfig(name_or_path={model!r}, dropout=0.0),
        data=DataConfig(format="lines", train_file={train!r}, validation_file={train!r}, max_length=24),
        task=TaskConfig(kind="causal_lm"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-2, schedule="constant"),
        train=TrainConfig(batch_size=8, eval_batch_size=8, max_steps=3, eval_every=100, log_every=1,
                          progress_bar=False, final_eval_splits=("validation",)),
        checkpoint=CheckpointConfig(max_to_keep=1, async_save=False, keep_best=False),
        peft=PeftConfig(method="lora", rank=4),
    )
'''


def test_convert_a_lora_run_to_gguf_gives_the_merged_model(checkpoints, tmp_path):
    from mgpt import config as config_lib
    from mgpt.peft.model import merge
    from mgpt.train import setup

    directory, original = checkpoints["llama"]
    train = tmp_path / "train.txt"
    train.write_text("".join(f"the quick brown fox {i} jumps over the lazy dog\n" for i in range(12)))
    experiment = tmp_path / "lora_lm.py"
    experiment.write_text(LORA_RUN.format(model=directory, train=str(train)))
    workdir, file = str(tmp_path / "run"), str(tmp_path / "run.gguf")
    assert cli.main(["train", str(experiment), "--workdir", workdir]) == 0
    assert cli.main(["convert", workdir, file, "--dtype", "f32"]) == 0
    config = config_lib.load_experiment(experiment)
    run, params, _ = setup.load_for_inference(config, workdir)
    merged = merge(params, config.peft)
    ids, mask = batch()
    base = mgpt.models.build_model(run.spec)
    ours = np.asarray(base.apply({"params": merged}, ids, attention_mask=mask, deterministic=True))
    theirs = torch_logits(hf_gguf_model(file), ids, mask)
    assert max_err(ours, theirs, mask) < 1e-4
    assert max_err(theirs, torch_logits(original, ids, mask), mask) > 1e-3  # the LoRA update is in the file


def test_convert_refuses_a_run_that_is_not_a_causal_lm(tmp_path, capsys):
    workdir = tmp_path / "cls_run"
    (workdir / "checkpoints").mkdir(parents=True)
    from mgpt import config as config_lib

    config = config_lib.ExperimentConfig(name="cls", model=config_lib.ModelConfig(name_or_path="m"),
                                         data=config_lib.DataConfig(format="csv", train_file="t.csv"))
    config_lib.save_config(config, workdir / "config.json")
    assert cli.main(["convert", str(workdir), str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert "task.kind='sequence_classification'" in err and "\n" not in err
