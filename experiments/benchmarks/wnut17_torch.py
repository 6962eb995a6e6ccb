"""PyTorch + transformers reference for experiments/wnut17_minilm.py (same data, model, hyperparameters).

    python experiments/benchmarks/wnut17_torch.py --seed 0 --output bench_results/wnut17_torch_seed0.json

AdamW with decay off for biases and LayerNorm weights, linear warmup/decay, global-norm clipping,
first-sub-word labels, the best dev-F1 epoch evaluated on test with seqeval (strict IOB2), the same
as mgpt. Batches are padded to their longest row by `DataCollatorForTokenClassification`
(`--group-by-length`: transformers' LengthGroupedSampler). Writes a JSON with test F1, seconds per
epoch and step, real tokens per second and the speed check (threads, torch's and JAX's matmul rates).
"""

import os

import torch
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification

import torch_common  # noqa: F401  (puts the checkout on sys.path)
from mgpt.data.conll import read_conll  # same reader, so both runs see identical sentences
from wnut17_minilm import DATA, HYPERPARAMETERS, minilm_path


def encode(sentences, tokenizer, label_to_id, max_length):
    """Unpadded features with first-sub-word labels (-100 elsewhere), and each word's first sub-word position."""
    encoded = tokenizer([s["tokens"] for s in sentences], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    features, first = [], []
    for i, sentence in enumerate(sentences):
        labels, positions = [-100] * len(encoded["input_ids"][i]), {}
        for position, word in enumerate(encoded.word_ids(i)):
            if word is not None and word not in positions:
                positions[word] = position
                labels[position] = label_to_id[sentence["tags"][word]]
        features.append({**{k: v[i] for k, v in encoded.items()}, "labels": labels})
        first.append([positions.get(w, -1) for w in range(len(sentence["tokens"]))])
    return features, first


def tags_of(model, features, first, collator, label_names):
    ids = torch_common.predict_argmax(model, features, collator)
    return [[label_names[ids[i][p]] if p >= 0 else "O" for p in row] for i, row in enumerate(first)]


def main():
    args = torch_common.reference_args("bench_results/wnut17_torch.json")
    hp = HYPERPARAMETERS

    splits = {name: read_conll(os.path.join(DATA, file))
              for name, file in (("train", "wnut17train.conll"), ("validation", "emerging.dev.conll"),
                                 ("test", "emerging.test.annotated"))}
    label_names = ["O"] + sorted({t for s in splits["train"] for t in s["tags"]} - {"O"})
    label_to_id = {t: i for i, t in enumerate(label_names)}
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    encoded = {name: encode(s, tokenizer, label_to_id, hp["max_length"]) for name, s in splits.items()}
    model = AutoModelForTokenClassification.from_pretrained(minilm_path(), num_labels=len(label_names))
    speed = torch_common.speed_check()
    collator = DataCollatorForTokenClassification(tokenizer)
    num_epochs = args.num_epochs or hp["num_epochs"]
    train_features, _ = encoded["train"]
    total = -(-len(train_features) // hp["batch_size"]) * num_epochs
    optimizer, scheduler = torch_common.adamw_with_schedule(model, hp, total)
    generator = torch.Generator().manual_seed(args.seed)
    batches = torch_common.loader(train_features, collator, hp["batch_size"], generator, args.group_by_length)
    epochs, best = [], (-1.0, None)
    for epoch in range(num_epochs):
        epochs.append(torch_common.train_epoch(model, batches, hp, optimizer, scheduler, args.max_steps))
        dev_f1 = f1_score([s["tags"] for s in splits["validation"]],
                          tags_of(model, *encoded["validation"], collator, label_names), mode="strict", scheme=IOB2)
        print(f"epoch {epoch + 1}: dev F1 {dev_f1:.4f}", flush=True)
        if dev_f1 > best[0]:
            best = (dev_f1, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    test_f1 = f1_score([s["tags"] for s in splits["test"]], tags_of(model, *encoded["test"], collator, label_names),
                       mode="strict", scheme=IOB2)
    torch_common.write_result({"framework": "pytorch", "seed": args.seed, "test_f1": test_f1, "best_dev_f1": best[0],
                               "group_by_length": args.group_by_length, "hyperparameters": hp},
                              args.output, epochs, speed)


if __name__ == "__main__":
    main()
