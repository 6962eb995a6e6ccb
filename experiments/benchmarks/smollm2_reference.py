"""SmolLM2-135M-Instruct (GGUF, dequantized to fp32) fine-tuned with plain transformers + PyTorch + peft.

    python experiments/benchmarks/smollm2_reference.py banking77 --method lora --output bench_results/smollm2_b77_torch.json
    python experiments/benchmarks/smollm2_reference.py scitldr --output bench_results/smollm2_scitldr_torch.json
    python experiments/benchmarks/smollm2_reference.py generate --output bench_results/smollm2_generate_torch.json
    python experiments/benchmarks/smollm2_reference.py banking77 --max-steps 3 --test-examples 77   # a smoke run

The PyTorch side of experiments/benchmarks/smollm2_compare.py, written as a PyTorch user writes it at full
speed: dynamic padding (DataCollatorWithPadding / DataCollatorForSeq2Seq), torch threads = cores, AdamW
(decay off for biases and norm weights) with linear warmup then decay, gradient clipping, the last step
kept (as mgpt with no development split). Data, prompt wording and default sizes come from smollm2_data.py.

* banking77: 77-intent classification with the decoder's last-token head (LlamaForSequenceClassification,
  pad = eos), LoRA (r 8, alpha 16, dropout 0.05 on q/k/v/o; the score head trained) or full fine-tuning;
  test accuracy and macro-F1 (scikit-learn).
* scitldr: one-sentence summaries as chat SFT with LoRA, loss on the assistant turn only; ROUGE-1/2/L
  (mgpt.text_metrics.rouge, i.e. rouge-score with stemming) of greedy generations, before and after training.
* generate: greedy ``model.generate`` of the base model on the first test prompts, batch 1 and 8; tokens/s
  and the generated ids (so the mgpt side can count identical outputs).

Every mode reports seconds per step (median after the first WARMUP_STEPS), torch threads, a measured fp32
matmul rate and the peak resident set size of this process. Measured on the 2-core build machine (torch 2.13
CPU, 2 threads): see the sizes in smollm2_data.py.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorForSeq2Seq, DataCollatorWithPadding, get_linear_schedule_with_warmup)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smollm2_data as sd  # noqa: E402
import torch_common  # noqa: E402  (puts the checkout on sys.path)
from mgpt.text_metrics import rouge  # noqa: E402  (the scorer mgpt reports)

WARMUP_STEPS = 2  # steps left out of the median (first-call allocations)


def load_tokenizer():
    path = sd.gguf_path()
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def load_model(cls, **kwargs):
    path = sd.gguf_path()
    return cls.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32,
                               **kwargs)


def with_lora(model, task_type: str, modules_to_save=None):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=sd.LORA["r"], lora_alpha=sd.LORA["alpha"], lora_dropout=sd.LORA["dropout"],
                        target_modules=list(sd.LORA["target_modules"]), modules_to_save=modules_to_save,
                        task_type=task_type)
    return get_peft_model(model, config)


def optimizer_for(model, hp: dict, total_steps: int):
    """AdamW over the trainable parameters, no decay on biases and norm weights; linear warmup and decay."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if n.endswith("bias") or "norm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "norm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=hp["learning_rate"])
    warmup = int(round(hp["warmup_ratio"] * total_steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def train(model, loader, hp: dict, max_steps: int) -> list[float]:
    """The epochs of ``loader``; returns the wall time of every step (forward, backward, clip, update)."""
    total = len(loader) * hp["num_epochs"]
    total = min(total, max_steps) if max_steps else total
    optimizer, scheduler = optimizer_for(model, hp, total)
    model.train()
    times = []
    for epoch in range(hp["num_epochs"]):
        for batch in loader:
            if len(times) == total:
                break
            tic = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], hp["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - tic)
            if len(times) % 10 == 0:
                print(f"step {len(times)}/{total}: loss {loss.item():.4f}, {times[-1]:.2f} s", flush=True)
    return times


def trainable_counts(model) -> dict:
    params = list(model.parameters())
    return {"trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
            "total_parameters": sum(p.numel() for p in params)}


def run_banking77(args) -> dict:
    directory = sd.data_dir(args.data_dir)
    hp = dict(sd.BANKING77, batch_size=args.batch_size or sd.BANKING77["batch_size"])
    hp["learning_rate"] = args.lr or (hp["learning_rate"] if args.method == "lora" else hp["full_learning_rate"])
    hp["num_epochs"] = args.epochs or hp["num_epochs"]
    hp["max_length"] = args.max_length or hp["max_length"]
    train_set, test_set = sd.banking77_subsets(directory, args.train_examples or hp["train_examples"],
                                               args.test_examples or hp["test_examples"])
    labels = sd.banking77_labels(directory)
    label_id = {name: i for i, name in enumerate(labels)}
    tokenizer = load_tokenizer()

    def encode(records):
        encoded = tokenizer([r["text"] for r in records], truncation=True, max_length=hp["max_length"])
        return [{"input_ids": ids, "attention_mask": mask, "labels": label_id[r["label"]]}
                for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], records)]

    collate = DataCollatorWithPadding(tokenizer)
    loader = torch.utils.data.DataLoader(encode(train_set), batch_size=hp["batch_size"], shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)  # the score head's initialisation
    model = load_model(AutoModelForSequenceClassification, num_labels=len(labels))
    model.config.pad_token_id = tokenizer.pad_token_id  # the last non-pad token feeds the head
    if args.method == "lora":
        model = with_lora(model, "SEQ_CLS", modules_to_save=["score"])
    counts = trainable_counts(model)
    tic = time.perf_counter()
    times = train(model, loader, hp, args.max_steps)
    train_seconds = time.perf_counter() - tic
    model.eval()
    predicted, truth = [], [label_id[r["label"]] for r in test_set]
    test_loader = torch.utils.data.DataLoader(encode(test_set), batch_size=64, collate_fn=collate)
    with torch.no_grad():
        for batch in test_loader:
            batch.pop("labels")
            predicted += model(**batch).logits.argmax(-1).tolist()
    from sklearn.metrics import accuracy_score, f1_score

    return {"mode": "banking77", "method": args.method, "hyperparameters": hp, **counts,
            "train_examples": len(train_set), "test_examples": len(test_set),
            "test_accuracy": accuracy_score(truth, predicted),
            "test_macro_f1": f1_score(truth, predicted, average="macro", labels=list(range(len(labels)))),
            "train_seconds": train_seconds, **step_figures(times)}


def generate_ids(model, tokenizer, prompts: list[list[int]], batch_size: int, max_new_tokens: int):
    """Greedy new tokens of each prompt (cut after the first eos) and the wall time, left-padded batches."""
    rows, tic = [], time.perf_counter()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, eos_token_id=eos, top_p=None, top_k=None, temperature=None)
            for row in out[:, width:].tolist():
                rows.append(row[:row.index(eos) + 1] if eos in row else row)
    return rows, time.perf_counter() - tic


def prompt_ids(tokenizer, records: list[dict]) -> list[list[int]]:
    return [list(tokenizer.apply_chat_template(sd.chat_messages(r["source"]), tokenize=True,
                                               add_generation_prompt=True, return_dict=False)) for r in records]


def score(model, tokenizer, records, prompts, hp) -> dict:
    rows, seconds = generate_ids(model, tokenizer, prompts, hp["batch_size"], hp["max_new_tokens"])
    texts = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
    return {**rouge(texts, [r["target"] for r in records]), "generate_seconds": seconds,
            "examples": [{"paper_id": r["paper_id"], "generated": t} for r, t in zip(records[:5], texts)]}


def run_scitldr(args) -> dict:
    hp = dict(sd.SCITLDR, batch_size=args.batch_size or sd.SCITLDR["batch_size"],
              learning_rate=args.lr or sd.SCITLDR["learning_rate"], num_epochs=args.epochs or sd.SCITLDR["num_epochs"],
              max_length=args.max_length or sd.SCITLDR["max_length"])
    tokenizer = load_tokenizer()
    train_set, test_set = sd.scitldr_subsets(sd.data_dir(args.data_dir), tokenizer,
                                             args.train_examples or hp["train_examples"],
                                             args.test_examples or hp["test_examples"], hp["max_length"],
                                             hp["max_new_tokens"])
    features = []
    for r in train_set:
        ids, labels = sd.render_chat(tokenizer, sd.chat_messages(r["source"], r["target"]))
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    loader = torch.utils.data.DataLoader(features, batch_size=hp["batch_size"], shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)
    model = load_model(AutoModelForCausalLM)
    prompts = prompt_ids(tokenizer, test_set)
    zero_shot = score(model, tokenizer, test_set, prompts, hp) if not args.skip_zero_shot else None
    model = with_lora(model, "CAUSAL_LM")
    counts = trainable_counts(model)
    tic = time.perf_counter()
    times = train(model, loader, hp, args.max_steps)
    train_seconds = time.perf_counter() - tic
    return {"mode": "scitldr", "method": "lora", "hyperparameters": hp, **counts,
            "train_examples": len(train_set), "test_examples": len(test_set),
            "train_tokens": sum(len(f["input_ids"]) for f in features),
            "zero_shot": zero_shot, "fine_tuned": score(model, tokenizer, test_set, prompts, hp),
            "train_seconds": train_seconds, **step_figures(times)}


def run_generate(args) -> dict:
    tokenizer = load_tokenizer()
    count = args.test_examples or sd.GENERATE["prompts"]
    _, test_set = sd.scitldr_subsets(sd.data_dir(args.data_dir), tokenizer, 0, count, sd.SCITLDR["max_length"],
                                     sd.GENERATE["max_new_tokens"])
    model = load_model(AutoModelForCausalLM)
    prompts = prompt_ids(tokenizer, test_set)
    generate_ids(model, tokenizer, prompts[:1], 1, 4)  # warm-up
    runs = {}
    for batch_size in sd.GENERATE["batch_sizes"]:
        rows, seconds = generate_ids(model, tokenizer, prompts, batch_size, sd.GENERATE["max_new_tokens"])
        tokens = sum(map(len, rows))
        runs[f"batch_{batch_size}"] = {"seconds": seconds, "new_tokens": tokens, "tokens_per_second": tokens / seconds,
                                       "generated_ids": rows}
        print(f"generate batch {batch_size}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s",
              flush=True)
    return {"mode": "generate", "prompts": len(prompts), "prompt_ids": prompts,
            "max_new_tokens": sd.GENERATE["max_new_tokens"], **runs}


def step_figures(times: list[float]) -> dict:
    kept = times[WARMUP_STEPS:] or times
    return {"steps": len(times), "seconds_per_step_median": statistics.median(kept) if kept else None,
            "seconds_per_step_first": times[0] if times else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["banking77", "scitldr", "generate"])
    parser.add_argument("--method", choices=["lora", "full"], default="lora", help="banking77 only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="")
    parser.add_argument("--data-dir", default="", help="folder with banking77/ and scitldr/ (default ../shared/data)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: cores)")
    parser.add_argument("--train-examples", type=int, default=0, help="0: the size in smollm2_data.py")
    parser.add_argument("--test-examples", type=int, default=0, help="0: the size in smollm2_data.py")
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.0)
    parser.add_argument("--max-length", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=0, help="stop training after this many steps (smoke run)")
    parser.add_argument("--skip-zero-shot", action="store_true", help="scitldr: no evaluation before training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speed = torch_common.speed_check()  # threads, torch's and JAX's matmul rates, flagged when torch is slow
    tic = time.perf_counter()
    result = {"banking77": run_banking77, "scitldr": run_scitldr, "generate": run_generate}[args.mode](args)
    result.update(framework="pytorch", seed=args.seed, torch=torch.__version__, threads=torch.get_num_threads(),
                  matmul_gflops=speed["torch_matmul_gflops"], speed=speed, wall_seconds=time.perf_counter() - tic,
                  peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # KiB on Linux
    summary = {k: v for k, v in result.items() if not isinstance(v, (dict, list)) or k in ("zero_shot", "fine_tuned")}
    print(json.dumps(summary, default=str)[:3000], flush=True)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
