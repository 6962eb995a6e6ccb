"""PyTorch + transformers reference for experiments/wnut17_minilm.py (same data, model, hyperparameters).

    python experiments/benchmarks/wnut17_torch.py --seed 0 --output bench_results/wnut17_torch_seed0.json

Plain training loop on purpose (no Trainer): AdamW with decay off for biases and LayerNorm weights,
linear warmup/decay, global-norm clipping, first-sub-word labels, the best dev-F1 epoch evaluated on
test with seqeval (strict IOB2), the same as mgpt. Writes a JSON with test F1 and seconds per step.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, ROOT)

from mgpt.data.conll import read_conll  # noqa: E402  same reader, so both runs see identical sentences
from wnut17_minilm import DATA, HYPERPARAMETERS, minilm_path  # noqa: E402


def encode(sentences, tokenizer, label_to_id, max_length):
    encoded = tokenizer([s["tokens"] for s in sentences], is_split_into_words=True, truncation=True,
                        max_length=max_length, padding="max_length", return_tensors="np")
    labels = np.full(encoded["input_ids"].shape, -100, dtype=np.int64)
    first = []
    for i, sentence in enumerate(sentences):
        word_ids = encoded.word_ids(i)
        positions = {}
        for position, word in enumerate(word_ids):
            if word is not None and word not in positions:
                positions[word] = position
                labels[i, position] = label_to_id[sentence["tags"][word]]
        first.append([positions.get(w, -1) for w in range(len(sentence["tokens"]))])
    return {k: torch.tensor(v) for k, v in encoded.items()}, torch.tensor(labels), first


def predict_tags(model, inputs, first, sentences, id_to_label, batch_size=64):
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            chunk = {k: v[start:start + batch_size] for k, v in inputs.items()}
            predictions.append(model(**chunk).logits.argmax(-1).numpy())
    ids = np.concatenate(predictions)
    return [[id_to_label[ids[i, p]] if p >= 0 else "O" for p in first[i]] for i in range(len(sentences))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench_results/wnut17_torch.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-steps", type=int, default=0, help="stop each epoch early (smoke test only)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    hp = HYPERPARAMETERS

    splits = {name: read_conll(os.path.join(DATA, file))
              for name, file in (("train", "wnut17train.conll"), ("validation", "emerging.dev.conll"),
                                 ("test", "emerging.test.annotated"))}
    tags = sorted({t for s in splits["train"] for t in s["tags"]} - {"O"})
    label_names = ["O"] + tags
    label_to_id = {t: i for i, t in enumerate(label_names)}
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    encoded = {name: encode(s, tokenizer, label_to_id, hp["max_length"]) for name, s in splits.items()}

    model = AutoModelForTokenClassification.from_pretrained(minilm_path(), num_labels=len(label_names))
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=hp["learning_rate"], eps=1e-8)
    train_inputs, train_labels, _ = encoded["train"]
    n = len(train_labels)
    steps_per_epoch = -(-n // hp["batch_size"])
    total = steps_per_epoch * hp["num_epochs"]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(hp["warmup_ratio"] * total)), total)

    step_times, best = [], (-1.0, None)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(hp["num_epochs"]):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, hp["batch_size"]):
            if args.max_steps and start // hp["batch_size"] >= args.max_steps:
                break
            index = order[start:start + hp["batch_size"]]
            tic = time.perf_counter()
            out = model(**{k: v[index] for k, v in train_inputs.items()}, labels=train_labels[index])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step_times.append(time.perf_counter() - tic)
        dev_inputs, _, dev_first = encoded["validation"]
        dev_f1 = f1_score([s["tags"] for s in splits["validation"]],
                          predict_tags(model, dev_inputs, dev_first, splits["validation"], label_names),
                          mode="strict", scheme=IOB2)
        print(f"epoch {epoch + 1}: dev F1 {dev_f1:.4f}", flush=True)
        if dev_f1 > best[0]:
            best = (dev_f1, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    test_inputs, _, test_first = encoded["test"]
    test_f1 = f1_score([s["tags"] for s in splits["test"]],
                       predict_tags(model, test_inputs, test_first, splits["test"], label_names),
                       mode="strict", scheme=IOB2)
    result = {"framework": "pytorch", "seed": args.seed, "test_f1": test_f1, "best_dev_f1": best[0],
              "seconds_per_step_median": statistics.median(step_times[1:]), "steps": len(step_times),
              "torch": torch.__version__, "threads": args.threads, "hyperparameters": hp}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
