"""Tiny checkpoints, tokenizers and data sets for end-to-end tests, built on the spot.

Checkpoints are random-weight models made by `transformers` (PyTorch) and saved with
``save_pretrained``; tokenizers are word-level, built with `tokenizers`.
"""

import csv
import os
import random

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dire", "grim", "ugly"]
FILLER = ["the", "movie", "was", "plot", "very", "really", "acting", "music"]
ENTITY_WORDS = {"PER": ["alice", "bob", "carol"], "LOC": ["paris", "rome", "oslo"]}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<eos>"] + POSITIVE + NEGATIVE + FILLER + sum(ENTITY_WORDS.values(), []) + [
    "in", "met", "visited", "and"]


def word_tokenizer(directory, bert_style: bool):
    """A word-level fast tokenizer saved in ``directory`` (BERT-style [CLS]/[SEP] or GPT-style no specials)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<eos>")
    fast.save_pretrained(directory)
    return fast


def tiny_gpt2(directory, seed=0, **overrides):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=4, eos_token_id=4, pad_token_id=0, **overrides)
    GPT2LMHeadModel(config).save_pretrained(directory)
    word_tokenizer(directory, bert_style=False)
    return str(directory)


def tiny_bert(directory, seed=0, **overrides):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=64, pad_token_id=0, **overrides)
    BertModel(config).save_pretrained(directory)
    word_tokenizer(directory, bert_style=True)
    return str(directory)


def sentiment_csv(path, count, seed, max_filler=0):
    """Sentences whose label is given by which sentiment word they contain: three filler words, or with
    ``max_filler`` a random 1 to ``max_filler`` of them (sentences of varied length)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for _ in range(count):
            label = rng.choice(["neg", "pos"])
            if max_filler:
                filler = [rng.choice(FILLER) for _ in range(rng.randint(1, max_filler))]
            else:
                filler = rng.sample(FILLER, 3)
            words = filler + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
            rng.shuffle(words)
            writer.writerow([" ".join(words), label])
    return str(path)


def ner_conll(path, count, seed):
    """Sentences with PER and LOC entities, 3 columns (word, POS placeholder, tag)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("-DOCSTART- -X- O\n\n")
        for _ in range(count):
            person, place = rng.choice(ENTITY_WORDS["PER"]), rng.choice(ENTITY_WORDS["LOC"])
            rows = [(person, "B-PER"), ("visited", "O"), (place, "B-LOC"), ("and", "O"),
                    (rng.choice(FILLER), "O")]
            for word, tag in rows:
                f.write(f"{word} NN {tag}\n")
            f.write("\n")
    return str(path)


def write_classification_experiment(directory, model_dir, name="tiny_cls", **train):
    """Data files and an experiment file for sequence classification; returns the experiment path."""
    data = {split: sentiment_csv(os.path.join(directory, f"{split}.csv"), n, seed)
            for split, n, seed in (("train", 44, 0), ("validation", 16, 1), ("test", 20, 2))}
    train_kwargs = dict(dict(batch_size=8, eval_batch_size=8, num_epochs=2, log_every=1, progress_bar=False), **train)
    path = os.path.join(directory, f"{name}.py")
    with open(path, "w") as f:
        f.write(f'''"""Tiny classification run.

    mgpt train {name}.py
"""
from mgpt.config import *


def get_config():
    return ExperimentConfig(
        name={name!r},
        model=ModelConfig(name_or_path={model_dir!r}, dropout=0.0),
        data=DataConfig(format="csv", train_file={data["train"]!r}, validation_file={data["validation"]!r},
                        test_file={data["test"]!r}, text_column="review", label_column="sentiment", max_length=12),
        task=TaskConfig(kind="sequence_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=3e-3, schedule="linear", warmup_steps=2),
        train=TrainConfig(**{train_kwargs!r}),
        checkpoint=CheckpointConfig(max_to_keep=2, async_save=True),
    )
''')
    return path


def write_ner_experiment(directory, model_dir):
    """CoNLL files (PER, LOC) and a token-classification experiment that learns them in 4 epochs; returns its path."""
    files = {split: ner_conll(os.path.join(directory, f"{split}.conll"), n, seed)
             for split, n, seed in (("train", 24, 0), ("validation", 8, 1), ("test", 8, 2))}
    path = os.path.join(directory, "tiny_ner.py")
    with open(path, "w") as f:
        f.write(f'''"""Tiny NER.

    mgpt train tiny_ner.py
"""
from mgpt.config import *


def get_config():
    return ExperimentConfig(
        name="tiny_ner",
        model=ModelConfig(name_or_path={model_dir!r}, dropout=0.0),
        data=DataConfig(format="conll", train_file={files["train"]!r}, validation_file={files["validation"]!r},
                        test_file={files["test"]!r}, max_length=10),
        task=TaskConfig(kind="token_classification"),
        optimizer=OptimizerConfig(name="adamw", learning_rate=5e-3, schedule="constant"),
        train=TrainConfig(batch_size=8, eval_batch_size=8, num_epochs=4, log_every=1, progress_bar=False),
    )
''')
    return path
