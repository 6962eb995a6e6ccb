"""PyTorch + transformers reference for experiments/banking77_intent.py (same data, split, model, hyperparameters).

    python experiments/benchmarks/banking77_torch.py --seed 0 --output bench_results/banking77_torch_seed0.json

Uses mgpt's own reader and seeded stratified split so both runs train, select and test on
identical examples; the best validation macro-F1 epoch is evaluated on the test split with
scikit-learn (accuracy, macro-F1). Batches are padded to their longest row by
`DataCollatorWithPadding` (`--group-by-length`: transformers' LengthGroupedSampler).
"""

import os

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

import torch_common  # noqa: F401  (puts the checkout on sys.path)
from banking77_intent import DATA, HYPERPARAMETERS, minilm_path
from mgpt.config import DataConfig
from mgpt.data.labels import LABEL_STRING
from mgpt.data.reading import read_examples
from mgpt.data.splitting import split_indices


def encode(examples, tokenizer, label_to_id, max_length):
    """Unpadded features (the collator pads each batch) and the label ids."""
    encoded = tokenizer([e["text"] for e in examples], truncation=True, max_length=max_length)
    labels = [label_to_id[e["label"]] for e in examples]
    features = [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]} for i in range(len(examples))]
    return features, np.asarray(labels)


def main():
    args = torch_common.reference_args("bench_results/banking77_torch.json")
    hp = HYPERPARAMETERS
    read = DataConfig(format="csv", text_column="text", label_column="category")
    pool = read_examples(os.path.join(DATA, "train.csv"), read, LABEL_STRING)
    test = read_examples(os.path.join(DATA, "test.csv"), read, LABEL_STRING)
    parts = split_indices(len(pool), hp["validation_ratio"], 0.0, seed=0, labels=[e["label"] for e in pool])
    train = [pool[i] for i in parts["train"]]
    validation = [pool[i] for i in parts["validation"]]
    label_names = sorted({e["label"] for e in train})
    label_to_id = {t: i for i, t in enumerate(label_names)}
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data = {name: encode(s, tokenizer, label_to_id, hp["max_length"])
            for name, s in (("train", train), ("validation", validation), ("test", test))}
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(label_names))
    speed = torch_common.speed_check()
    collator = DataCollatorWithPadding(tokenizer)
    num_epochs = args.num_epochs or hp["num_epochs"]
    total = -(-len(train) // hp["batch_size"]) * num_epochs
    optimizer, scheduler = torch_common.adamw_with_schedule(model, hp, total)
    generator = torch.Generator().manual_seed(args.seed)
    batches = torch_common.loader(data["train"][0], collator, hp["batch_size"], generator, args.group_by_length)
    epochs, best = [], (-1.0, None)
    for epoch in range(num_epochs):
        epochs.append(torch_common.train_epoch(model, batches, hp, optimizer, scheduler, args.max_steps))
        predicted = np.asarray(torch_common.predict_argmax(model, data["validation"][0], collator))
        macro = f1_score(data["validation"][1], predicted, average="macro")
        print(f"epoch {epoch + 1}: validation macro-F1 {macro:.4f}", flush=True)
        if macro > best[0]:
            best = (macro, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    predicted = np.asarray(torch_common.predict_argmax(model, data["test"][0], collator))
    truth = data["test"][1]
    torch_common.write_result({"framework": "pytorch", "seed": args.seed, "test_accuracy": accuracy_score(truth, predicted),
                               "test_macro_f1": f1_score(truth, predicted, average="macro"),
                               "best_validation_macro_f1": best[0], "group_by_length": args.group_by_length,
                               "hyperparameters": hp}, args.output, epochs, speed)


if __name__ == "__main__":
    main()
