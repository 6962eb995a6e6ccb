"""mgpt and PyTorch on the real WNUT-17 + all-MiniLM-L6-v2 run with the randomness taken out.

    python experiments/benchmarks/wnut17_step_parity.py --steps 40 --output bench_results/wnut17_step_parity.json

Same start (mgpt's initialised head exported to transformers), dropout off in both, the same batches in
the same order (mgpt's seeded order), the optimizer of experiments/wnut17_minilm.py with its schedule
spanning the full 321-step run. Prints both losses and gradient norms every 5 steps and writes them, with the largest
parameter difference at the end, as JSON. What is left to differ between the frameworks' real runs
(experiments/benchmarks/compare.py) is then only the random draws: head initialisation, dropout masks
and data order.
"""

import argparse
import dataclasses
import functools
import json
import os

import jax
import torch
from transformers import AutoModelForTokenClassification

import torch_common  # puts the checkout and experiments/ on sys.path
import mgpt
from mgpt import optim, parallel
from mgpt.config import ParallelConfig, load_experiment
from mgpt.train import setup
from mgpt.train import state as state_lib
from mgpt.train.step import train_step
from wnut17_minilm import HYPERPARAMETERS

EXPERIMENT = os.path.join(torch_common.ROOT, "experiments", "wnut17_minilm.py")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--output", default="bench_results/wnut17_step_parity.json")
    args = parser.parse_args()
    config = load_experiment(EXPERIMENT)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dropout=0.0),
                                 train=dataclasses.replace(config.train, seed=0))
    hp = HYPERPARAMETERS

    # The same start-up as `mgpt train` (checkpoint, data, label count, seeded head), with dropout off.
    run = setup.build_run(config)
    work = os.path.join(os.path.dirname(os.path.abspath(args.output)), "wnut17_step_parity")
    start = os.path.join(work, "start")
    mgpt.save_pretrained(start, run.spec, run.params, run.tokenizer)
    batches = run.batches("train", hp["batch_size"], shuffle=True)
    total = setup.total_steps(config, len(batches))

    tx = optim.make_optimizer(config.optimizer, total, run.params)
    state, _ = state_lib.create_state(run.params, tx, 0, parallel.make_mesh(ParallelConfig(num_devices=1)))
    step = jax.jit(functools.partial(train_step, model=run.model, task=run.task, optimizer=tx))
    reference = AutoModelForTokenClassification.from_pretrained(start, hidden_dropout_prob=0.0,
                                                                attention_probs_dropout_prob=0.0)
    reference.train()  # dropout is off through the config; train mode as in a real run
    optimizer, scheduler = torch_common.adamw_with_schedule(reference, hp, total)

    rows = []
    for index in range(args.steps):
        batch = batches.batch_at(index)
        state, metrics = step(state, batch)
        real = batch["example_weight"] > 0  # the padding rows of a short last batch
        out = reference(**{key: torch.tensor(batch[key][real], dtype=torch.long)
                           for key in ("input_ids", "attention_mask", "token_type_ids", "labels")})
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), hp["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        row = {"step": index + 1, "loss_mgpt": float(metrics["loss"]), "loss_torch": out.loss.item(),
               "grad_norm_mgpt": float(metrics["grad_norm"]), "grad_norm_torch": float(grad_norm)}
        rows.append(row)
        if index % 5 == 0 or index == args.steps - 1:
            print(json.dumps(row), flush=True)

    trained = os.path.join(work, "trained")
    mgpt.save_pretrained(trained, run.spec, jax.device_get(state["params"]), run.tokenizer)
    ours = AutoModelForTokenClassification.from_pretrained(trained).state_dict()
    diffs = {name: float((ours[name] - value).abs().max()) for name, value in reference.state_dict().items()}
    worst = max(diffs, key=diffs.get)
    result = {"steps": args.steps, "max_param_diff": diffs[worst], "max_param_diff_tensor": worst,
              "max_loss_diff": max(abs(r["loss_mgpt"] - r["loss_torch"]) for r in rows), "rows": rows}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"max |loss difference| {result['max_loss_diff']:.2e}; max |parameter difference| "
          f"{result['max_param_diff']:.2e} ({worst})")


if __name__ == "__main__":
    main()
