"""Tiny random transformers checkpoints of every family mgpt supports, with odd sizes and every head.

Shared by test_llama_parity, test_encoders_parity, test_export_roundtrip and test_convert. Sizes are odd on
purpose (hidden 40/48, head_dim 10/12), grouped-query attention takes several ratios (4 query heads over
4, 2 and 1 kv heads), RoPE scaling is on where the family allows it, and norm weights and biases are
randomised so that a mix-up of ``w`` and ``1 + w`` or a dropped bias shows in the logits.
"""

import numpy as np
import torch
import transformers

VOCAB = 64
PAD, UNK, EOS = 0, 1, 2

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def _decoder_common(**kwargs):
    return dict(vocab_size=VOCAB, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS, attn_implementation="eager",
                initializer_range=0.15, **kwargs)


def llama_config(**kwargs):
    """Llama 3 style: RoPE "llama3" scaling (every frequency band hit), GQA 4/2, biases on, untied head."""
    base = _decoder_common(hidden_size=40, intermediate_size=56, num_key_value_heads=2, rope_parameters=LLAMA3_ROPE,
                           attention_bias=True, mlp_bias=True, tie_word_embeddings=False)
    return transformers.LlamaConfig(**{**base, **kwargs})


def mistral_config(**kwargs):
    """GQA 4/1, a sliding window shorter than the test sequences, tied embeddings."""
    base = _decoder_common(hidden_size=48, intermediate_size=40, num_key_value_heads=1, sliding_window=4,
                           tie_word_embeddings=True)
    return transformers.MistralConfig(**{**base, **kwargs})


def qwen2_config(**kwargs):
    """Plain multi-head (4/4), q/k/v biases, linear RoPE scaling, untied head."""
    base = _decoder_common(hidden_size=48, intermediate_size=56, num_key_value_heads=4, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "linear", "rope_theta": 1000.0, "factor": 2.0})
    return transformers.Qwen2Config(**{**base, **kwargs})


def gemma_config(**kwargs):
    """Scaled embeddings, (1 + w) RMSNorm, gelu-tanh, head_dim 12 != hidden/heads, GQA 4/2, tied."""
    base = _decoder_common(hidden_size=40, intermediate_size=56, num_key_value_heads=2, head_dim=12)
    return transformers.GemmaConfig(**{**base, **kwargs})


def roberta_config(**kwargs):
    base = dict(vocab_size=VOCAB, hidden_size=40, num_hidden_layers=2, num_attention_heads=4, intermediate_size=56,
                max_position_embeddings=40, type_vocab_size=1, pad_token_id=PAD, attn_implementation="eager",
                initializer_range=0.1)
    return transformers.RobertaConfig(**{**base, **kwargs})


def distilbert_config(**kwargs):
    base = dict(vocab_size=VOCAB, dim=48, n_layers=2, n_heads=4, hidden_dim=56, max_position_embeddings=32,
                pad_token_id=PAD, attn_implementation="eager", initializer_range=0.1)
    return transformers.DistilBertConfig(**{**base, **kwargs})


CONFIGS = {"llama": llama_config, "mistral": mistral_config, "qwen2": qwen2_config, "gemma": gemma_config,
           "roberta": roberta_config, "distilbert": distilbert_config}
PREFIX = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "gemma": "Gemma", "roberta": "Roberta",
          "distilbert": "DistilBert"}
DECODERS = ("llama", "mistral", "qwen2", "gemma")
ENCODERS = ("roberta", "distilbert")
TASK_CLASS = {"causal_lm": "ForCausalLM", "sequence_classification": "ForSequenceClassification",
              "regression": "ForSequenceClassification", "token_classification": "ForTokenClassification"}
AUTO_CLASS = {"causal_lm": transformers.AutoModelForCausalLM,
              "sequence_classification": transformers.AutoModelForSequenceClassification,
              "regression": transformers.AutoModelForSequenceClassification,
              "token_classification": transformers.AutoModelForTokenClassification}
PER_TOKEN = {"causal_lm": True, "token_classification": True, "sequence_classification": False, "regression": False}


def tasks_of(family):
    return tuple(TASK_CLASS) if family in DECODERS else ("sequence_classification", "token_classification",
                                                        "regression")


def task_config(family, task, **kwargs):
    if task == "regression":
        kwargs.update(num_labels=1, problem_type="regression")
    elif task != "causal_lm":
        kwargs.setdefault("num_labels", 3)
    return CONFIGS[family](**kwargs)


def save_tokenizer(directory):
    """A word-level fast tokenizer over "w0".."w63" with pad w0, unk w1, eos w2 (and cls/sep for encoders)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token=f"w{UNK}"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=f"w{UNK}", pad_token=f"w{PAD}",
                                                eos_token=f"w{EOS}", cls_token="w3", sep_token="w4")
    fast.save_pretrained(directory)
    return fast


def make_checkpoint(directory, family, task, seed=0, bare=False, **config_kwargs):
    """Save a random ``<Family>For<Task>`` (or the bare ``<Family>Model``) with a tokenizer; return it in eval mode."""
    config = task_config(family, task, **config_kwargs)
    cls = getattr(transformers, PREFIX[family] + ("Model" if bare else TASK_CLASS[task]))
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # norms start at 1 (Gemma: 0) and biases at 0; move them so mistakes show
        for name, param in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                param.add_(0.2 * torch.randn_like(param))
    model.save_pretrained(directory)
    save_tokenizer(directory)
    return model


def make_batch(padded=True, seed=0, batch=3, length=8):
    """Ids avoid special ids at real positions (decoder heads find the last token by pad id); right padding."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, VOCAB, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    if padded:
        for row, n in enumerate([length, 5, 2][:batch]):
            mask[row, n:] = 0
        ids[mask == 0] = PAD
    return ids, mask


def torch_logits(model, ids, mask, **kwargs):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                    **kwargs)
    return out


def compare(ours, ref, mask=None):
    """Max absolute and max relative (to the reference's largest magnitude) error, over real positions."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if mask is not None:
        ours, ref = ours[mask.astype(bool)], ref[mask.astype(bool)]
    err = np.abs(ours - ref).max()
    return float(err), float(err / np.abs(ref).max())
