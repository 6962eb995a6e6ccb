"""Seconds per train step of each robust objective relative to the plain step, measured side by side.

    python experiments/benchmarks/robust_step_cost.py --output bench_results/robust_step_cost.json

all-MiniLM-L6-v2 with a 77-way classification head (Banking77's shape) on random token batches of
``--batch`` x ``--length`` (real lengths drawn between half and all of it, padding on the right). Every
objective's step is compiled first; then ``--rounds`` rounds each time ``--steps`` steps of every objective
in turn, so that all of them see the same machine load; the figure per objective is its median step time
over rounds, and the ratio is against the plain step of the same rounds.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBJECTIVES = {
    "plain": [],
    "fgm": ["robust.adversarial=fgm"],
    "pgd (2 steps)": ["robust.adversarial=pgd", "robust.steps=2"],
    "freelb (2 steps)": ["robust.adversarial=freelb", "robust.steps=2"],
    "smart (1 step)": ["robust.adversarial=smart", "robust.steps=1"],
    "rdrop": ["robust.rdrop_alpha=1.0"],
    "span_cutoff + consistency": ["data.augment=[span_cutoff:0.1]", "robust.cutoff_consistency=1.0"],
    "fgm + rdrop": ["robust.adversarial=fgm", "robust.rdrop_alpha=1.0"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="bench_results/robust_step_cost.json")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    import mgpt
    from mgpt import config as config_lib
    from mgpt import optim, parallel
    from mgpt.known_models import minilm_path
    from mgpt.tasks import get_task
    from mgpt.train import objective as objective_lib
    from mgpt.train import state as state_lib
    from mgpt.train.step import train_step

    model, params, _, _ = mgpt.load_pretrained(minilm_path(), task="sequence_classification", num_labels=77)
    task = get_task("sequence_classification")
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.length // 2, args.length + 1, args.batch)
    mask = (np.arange(args.length)[None, :] < lengths[:, None]).astype(np.int32)
    batch = {"input_ids": np.where(mask > 0, rng.integers(1000, 20000, mask.shape), 0).astype(np.int32),
             "attention_mask": mask, "token_type_ids": np.zeros_like(mask),
             "labels": rng.integers(0, 77, args.batch).astype(np.int32),
             "example_weight": np.ones(args.batch, np.float32)}
    mesh = parallel.make_mesh(config_lib.ParallelConfig(num_devices=1))
    steps, states = {}, {}
    for name, overrides in OBJECTIVES.items():
        config = config_lib.apply_overrides(config_lib.ExperimentConfig(), overrides)
        tx = objective_lib.wrap_optimizer(config, optim.make_optimizer(config.optimizer, 1000, params))
        steps[name] = jax.jit(functools.partial(train_step, model=model, task=task, optimizer=tx,
                                                objective=objective_lib.build_objective(config, task)))
        states[name], _ = state_lib.create_state(params, tx, 0, mesh)
        start = time.perf_counter()
        states[name], metrics = steps[name](states[name], batch)
        jax.block_until_ready(metrics["loss"])
        print(f"{name}: compiled and ran one step in {time.perf_counter() - start:.1f} s", flush=True)
    times = {name: [] for name in OBJECTIVES}
    for _ in range(args.rounds):
        for name in OBJECTIVES:
            start = time.perf_counter()
            for _ in range(args.steps):
                states[name], metrics = steps[name](states[name], batch)
            jax.block_until_ready(metrics["loss"])
            times[name].append((time.perf_counter() - start) / args.steps)
    plain = statistics.median(times["plain"])
    rows = [{"objective": name, "seconds_per_step": statistics.median(t), "vs_plain": statistics.median(t) / plain,
             "rounds": t} for name, t in times.items()]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"batch": args.batch, "length": args.length, "cpu_count": os.cpu_count(), "rows": rows}, f, indent=1)
    print("| objective | s/step | vs plain |\n|---|---|---|")
    for row in rows:
        print(f"| {row['objective']} | {row['seconds_per_step']:.3f} | {row['vs_plain']:.2f}x |")


if __name__ == "__main__":
    main()
