"""SmolLM2-135M-Instruct on real data: mgpt against transformers + PyTorch, side by side in one run.

    python experiments/benchmarks/smollm2_compare.py --output bench_results/smollm2_compare.json
    python experiments/benchmarks/smollm2_compare.py --modes banking77 --max-steps 3   # a smoke run

For each mode (banking77: intent classification with LoRA; scitldr: chat SFT with LoRA, ROUGE before and
after; generate: greedy decoding, batch 1 and 8) runs mgpt and then the PyTorch reference
(experiments/benchmarks/smollm2_reference.py), one after the other, each in its own fresh process, so
neither steals the other's cores nor shares its peak memory: the peak resident set size of a side is
its child's ``ru_maxrss`` (``os.wait4``). Both sides take examples, prompts and settings from
smollm2_data.py; the mgpt side trains the experiments experiments/smollm2_banking77_lora.py and
experiments/smollm2_scitldr_chat.py with those settings as ``--set`` overrides, on subset files this
script writes into its workdir. Writes one JSON and prints a markdown table with the ratios.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smollm2_data as sd  # noqa: E402

ROOT = sd.ROOT
REFERENCE = os.path.join(ROOT, "experiments", "benchmarks", "smollm2_reference.py")
EXPERIMENTS = {"banking77": "experiments/smollm2_banking77_lora.py", "scitldr": "experiments/smollm2_scitldr_chat.py"}
# mode -> the figures of the table: (label, key path in a side's JSON); higher is better for all but time.
FIGURES = {
    "banking77": [("test accuracy", ("test_accuracy",)), ("test macro-F1", ("test_macro_f1",))],
    "scitldr": [("ROUGE-L zero-shot", ("zero_shot", "rougeL")), ("ROUGE-1", ("fine_tuned", "rouge1")),
                ("ROUGE-2", ("fine_tuned", "rouge2")), ("ROUGE-L", ("fine_tuned", "rougeL"))],
    "generate": [("tokens/s batch 1", ("batch_1", "tokens_per_second")),
                 ("tokens/s batch 8", ("batch_8", "tokens_per_second"))],
}


def run_child(command: list[str], log: str) -> dict:
    """Run ``command`` to completion, its output into ``log``; returns wall seconds and the child's peak RSS."""
    tic = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with exit code {process.returncode}; see {log}")
    return {"process_seconds": time.perf_counter() - tic, "peak_rss_bytes": usage.ru_maxrss * 1024}


def mgpt_overrides(mode: str, files: dict, args) -> list[str]:
    """The shared settings of smollm2_data.py as mgpt ``--set`` overrides, over the experiment's own."""
    hp = sd.BANKING77 if mode == "banking77" else sd.SCITLDR
    full = mode == "banking77" and args.method == "full"
    learning_rate = hp["full_learning_rate"] if full else hp["learning_rate"]
    common = [f"train.seed={args.seed}", f"train.batch_size={hp['batch_size']}", f"train.num_epochs={hp['num_epochs']}",
              f"optimizer.learning_rate={learning_rate}", f"optimizer.warmup_ratio={hp['warmup_ratio']}",
              f"optimizer.weight_decay={hp['weight_decay']}", f"optimizer.max_grad_norm={hp['max_grad_norm']}",
              f"data.max_length={hp['max_length']}", f"data.train_file={files['train']}",
              f"data.test_file={files['test']}", "data.validation_file=", "data.validation_ratio=0.0",
              "peft.method=none" if full else "peft.method=lora", f"peft.rank={sd.LORA['r']}",
              f"peft.alpha={float(sd.LORA['alpha'])}", f"peft.dropout={sd.LORA['dropout']}", "train.progress_bar=false",
              # model selection as the reference: the last step, no development split
              "train.eval_splits=[]", "train.best_metric=", "train.final_eval_splits=[test]"]
    if mode == "scitldr":  # the conversations as written by smollm2_data (sources fitted to max_length)
        common += [f"task.max_new_tokens={hp['max_new_tokens']}", "data.format=chat", "data.prompt_template=",
                   "data.target_column=", "data.use_chat_template=false"]
    if args.max_steps:
        common.append(f"train.max_steps={args.max_steps}")
    return common + args.overrides


def write_subsets(mode: str, directory: str, data_dir: str, tokenizer) -> dict:
    """The subset files the mgpt side reads (the reference builds the same subsets in memory)."""
    if mode == "banking77":
        train, test = sd.banking77_subsets(data_dir, sd.BANKING77["train_examples"], sd.BANKING77["test_examples"])
        return {split: sd.write_banking77_csv(os.path.join(directory, f"{split}.csv"), records)
                for split, records in (("train", train), ("test", test))}
    hp = sd.SCITLDR
    train, test = sd.scitldr_subsets(data_dir, tokenizer, hp["train_examples"], hp["test_examples"],
                                     hp["max_length"], hp["max_new_tokens"])
    return {split: sd.write_chat_jsonl(os.path.join(directory, f"{split}.jsonl"), records)
            for split, records in (("train", train), ("test", test))}


def child_train(mode: str, workdir: str, args) -> dict:
    """mgpt side of banking77 / scitldr: mgpt.train.loop.train on the experiment with the shared settings."""
    sys.path.insert(0, ROOT)
    from mgpt import config as config_lib
    from mgpt.train import loop

    tokenizer = None
    if mode == "scitldr":  # the sources are fitted to max_length with the checkpoint's tokenizer
        from transformers import AutoTokenizer

        path = sd.gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    files = write_subsets(mode, os.path.join(workdir, "data"), sd.data_dir(args.data_dir), tokenizer)
    config = config_lib.load_experiment(os.path.join(ROOT, EXPERIMENTS[mode]))
    config = config_lib.apply_overrides(config, mgpt_overrides(mode, files, args))
    tic = time.perf_counter()
    reports = loop.train(config, os.path.join(workdir, "run"))
    with open(os.path.join(workdir, "run", "metrics.jsonl")) as f:
        events = [json.loads(line) for line in f]
    windows = [e["seconds_per_step"] for e in events if e["kind"] == "train"]
    test = reports.get("test", {})
    row = {"mode": mode, "train_seconds": time.perf_counter() - tic, "reports": reports,
           "seconds_per_step_median": statistics.median(windows[1:] or windows) if windows else None,
           "steps": max((e["step"] for e in events if e["kind"] == "train"), default=0)}
    if mode == "banking77":
        row.update(test_accuracy=test.get("accuracy"), test_macro_f1=test.get("macro_f1"))
    else:
        row["fine_tuned"] = {k: test.get(k) for k in ("rouge1", "rouge2", "rougeL")}
        row["zero_shot"] = zero_shot(config, files["test"])
    return row


def zero_shot(config, test_file: str) -> dict:
    """ROUGE of the untrained instruct model on the test conversations, through mgpt's own generation path
    (the prompts the trained model's evaluation uses, the same decoding settings)."""
    import mgpt
    from mgpt import generate, text_metrics
    from mgpt.data import chat

    model, params, _, tokenizer = mgpt.load_pretrained(config.model.name_or_path, task="causal_lm")
    with open(test_file) as f:
        conversations = [json.loads(line)["messages"] for line in f]
    prompts = [chat.generation_prompt(tokenizer, messages) for messages in conversations]
    settings = generate.settings_for(tokenizer, config.task.max_new_tokens)
    texts = generate.generate_text(model, params, tokenizer, prompts, settings, batch_size=config.train.eval_batch_size)
    report = text_metrics.text_report(texts, [chat.reference(m) for m in conversations], ("rouge",))
    return {k: report[k] for k in ("rouge1", "rouge2", "rougeL")}


def child_generate(args) -> dict:
    """mgpt side of generate: mgpt.load_pretrained on the GGUF file, greedy decoding of the same prompt ids."""
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    import mgpt
    from mgpt.generate import DecodeSettings, generate_tokens

    with open(args.torch_result) as f:
        prompts = json.load(f)["prompt_ids"]  # exactly the reference's prompts
    model, params, _, tokenizer = mgpt.load_pretrained(sd.gguf_path(), task="causal_lm")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    settings = DecodeSettings(max_new_tokens=sd.GENERATE["max_new_tokens"], stop_tokens=(eos,), pad_id=pad)
    row = {"mode": "generate", "prompts": len(prompts)}
    # As mgpt.generate.generate_text runs: every batch left-padded to the longest prompt, so one program
    # serves them all (the reference pads each batch to its own longest; at batch 1, not at all).
    width = max(map(len, prompts))
    for batch_size in sd.GENERATE["batch_sizes"]:
        rows, seconds = [], 0.0
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            ids = np.array([[pad] * (width - len(p)) + p for p in chunk], np.int32)
            mask = (np.arange(width)[None, :] >= (width - np.array([len(p) for p in chunk]))[:, None]).astype(np.int32)
            if start == 0:  # compile outside the timing (a server's program is warm)
                jax.block_until_ready(generate_tokens(model, params, ids, mask, settings))
            tic = time.perf_counter()
            out = np.asarray(jax.block_until_ready(generate_tokens(model, params, ids, mask, settings))).tolist()
            seconds += time.perf_counter() - tic
            rows += [r[:r.index(eos) + 1] if eos in r else r for r in out]
        tokens = sum(map(len, rows))
        row[f"batch_{batch_size}"] = {"seconds": seconds, "new_tokens": tokens, "tokens_per_second": tokens / seconds,
                                      "generated_ids": rows}
    return row


def dig(row: dict, path: tuple):
    for key in path:
        row = row.get(key) if isinstance(row, dict) else None
    return row


def compare_generations(mgpt_row: dict, torch_row: dict) -> dict:
    """How many prompts got token-identical outputs from both sides, per batch size."""
    out = {}
    for key in (f"batch_{b}" for b in sd.GENERATE["batch_sizes"]):
        pairs = list(zip(mgpt_row[key]["generated_ids"], torch_row[key]["generated_ids"]))
        out[key] = {"identical": sum(a == b for a, b in pairs), "prompts": len(pairs)}
    return out


def table(results: dict) -> str:
    lines = ["| mode | figure | mgpt | PyTorch | mgpt / PyTorch |", "|---|---|---|---|---|"]

    def cell(value):
        return "n/a" if value is None else f"{value:.4g}"

    for mode, sides in results["modes"].items():
        m, t = sides.get("mgpt", {}), sides.get("torch", {})
        figures = FIGURES[mode] + [("s / step", ("seconds_per_step_median",)),
                                   ("peak RSS GiB", ("peak_rss_gib",))]
        for label, path in figures:
            a, b = dig(m, path), dig(t, path)
            ratio = a / b if a is not None and b else None
            lines.append(f"| {mode} | {label} | {cell(a)} | {cell(b)} | {cell(ratio)} |")
        if "identical_outputs" in sides:
            for key, c in sides["identical_outputs"].items():
                lines.append(f"| {mode} | identical outputs {key} | {c['identical']} / {c['prompts']} | | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=list(FIGURES), default=list(FIGURES))
    parser.add_argument("--frameworks", nargs="+", choices=["mgpt", "torch"], default=["mgpt", "torch"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=["lora", "full"], default="lora", help="banking77: LoRA or full fine-tuning")
    parser.add_argument("--data-dir", default="", help="folder with banking77/ and scitldr/ (default ../shared/data)")
    parser.add_argument("--output", default="bench_results/smollm2_compare.json")
    parser.add_argument("--max-steps", type=int, default=0, help="stop training after this many steps (smoke run)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra mgpt config override, e.g. train.log_every=5")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    parser.add_argument("--torch-result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a fresh process for the mgpt side of one mode
        mode, workdir = args.child
        row = child_generate(args) if mode == "generate" else child_train(mode, workdir, args)
        row["self_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with open(args.child_output, "w") as f:
            json.dump(row, f, indent=2)
        return
    out_dir = os.path.splitext(os.path.abspath(args.output))[0]
    os.makedirs(out_dir, exist_ok=True)
    results = {"seed": args.seed, "method": args.method, "settings": {"banking77": sd.BANKING77, "scitldr": sd.SCITLDR, "lora": sd.LORA,
                                               "generate": sd.GENERATE}, "modes": {}}
    data_flag = ["--data-dir", sd.data_dir(args.data_dir)]
    for mode in args.modes:
        sides = results["modes"].setdefault(mode, {})
        torch_json = os.path.join(out_dir, f"{mode}_torch.json")
        # generate: the reference runs first, the mgpt side decodes exactly its prompt ids.
        order = sorted(args.frameworks, key=lambda name: name != "torch") if mode == "generate" else args.frameworks
        for framework in order:
            if framework == "torch":
                command = [sys.executable, REFERENCE, mode, "--seed", str(args.seed), "--output", torch_json] + data_flag
                if mode == "banking77":
                    command += ["--method", args.method]
                if args.max_steps:
                    command += ["--max-steps", str(args.max_steps)]
                usage = run_child(command, os.path.join(out_dir, f"{mode}_torch.log"))
                with open(torch_json) as f:
                    row = json.load(f)
            else:
                workdir = os.path.join(out_dir, f"{mode}_mgpt")
                if os.path.exists(os.path.join(workdir, "run")):  # a run there would resume, not start afresh
                    raise SystemExit(f"{workdir} exists; delete it or pass another --output")
                row_json = os.path.join(out_dir, f"{mode}_mgpt.json")
                command = [sys.executable, os.path.abspath(__file__), "--child", mode, workdir, "--child-output",
                           row_json, "--seed", str(args.seed), "--max-steps", str(args.max_steps), "--method", args.method,
                           "--torch-result", torch_json] + data_flag
                for item in args.overrides:
                    command += ["--set", item]
                usage = run_child(command, os.path.join(out_dir, f"{mode}_mgpt.log"))
                with open(row_json) as f:
                    row = json.load(f)
            row.update(usage, peak_rss_gib=usage["peak_rss_bytes"] / 2**30)
            sides[framework] = row
            print(f"{mode} {framework}: {usage['process_seconds']:.0f} s, peak RSS {row['peak_rss_gib']:.2f} GiB",
                  flush=True)
        if mode == "generate" and {"mgpt", "torch"} <= set(sides):
            sides["identical_outputs"] = compare_generations(sides["mgpt"], sides["torch"])
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    markdown = table(results)
    with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
        f.write(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
