"""Peak host memory of mgpt.load_pretrained on a ~1 GB Llama-style checkpoint.

    python experiments/benchmarks/load_memory.py --output bench_results/load_memory.json

Writes a random-weight Llama checkpoint (config.json, sharded float32 safetensors written straight from
numpy, a small tokenizer) into a temporary directory, then loads it in a fresh Python process and reports the
peak resident set size (``resource.getrusage(...).ru_maxrss``) minus the resident set size after the imports,
backend start-up and config/tokenizer loading, next to the checkpoint size. On the CPU backend the loaded
parameters themselves live in host memory, so the floor is about one checkpoint; a loader that holds a second
copy of the model shows about two. For contrast the same measurement is taken for a naive load
(``safetensors.numpy.load_file`` of every shard, then ``jnp.asarray``), unless ``--skip-naive``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout without installing
# ~0.98 GB of float32: 16 layers of hidden 1024 (GQA 16/4 heads), MLP 2816, vocab 32000, untied LM head.
SHAPE = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
             num_attention_heads=16, num_key_value_heads=4)


def tensor_plan(cfg: dict) -> list[tuple[str, tuple]]:
    """Names and shapes (PyTorch layout) of a LlamaForCausalLM with ``cfg``."""
    e, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = e // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    plan = [("model.embed_tokens.weight", (v, e))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        plan += [(p + "self_attn.q_proj.weight", (e, e)), (p + "self_attn.k_proj.weight", (kv, e)),
                 (p + "self_attn.v_proj.weight", (kv, e)), (p + "self_attn.o_proj.weight", (e, e)),
                 (p + "mlp.gate_proj.weight", (i, e)), (p + "mlp.up_proj.weight", (i, e)),
                 (p + "mlp.down_proj.weight", (e, i)),
                 (p + "input_layernorm.weight", (e,)), (p + "post_attention_layernorm.weight", (e,))]
    return plan + [("model.norm.weight", (e,)), ("lm_head.weight", (v, e))]


def write_checkpoint(directory: str, layers: int, shard_size: str) -> dict:
    """Config, tokenizer and random float32 weights (one tensor in memory at a time)."""
    import numpy as np
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    from mgpt.models.safetensors_io import write_checkpoint as write_weights

    cfg = dict(SHAPE, num_hidden_layers=layers)
    transformers.LlamaConfig(**cfg, tie_word_embeddings=False, architectures=["LlamaForCausalLM"],
                             pad_token_id=0, bos_token_id=1, eos_token_id=2).save_pretrained(directory)
    tok = Tokenizer(models.WordLevel({f"w{k}": k for k in range(1000)}, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w1", pad_token="w0",
                                         eos_token="w2").save_pretrained(directory)
    plan = tensor_plan(cfg)
    shapes = dict(plan)
    rng = np.random.default_rng(0)

    def produce(name):
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            return np.ones(shapes[name], np.float32)
        return rng.standard_normal(shapes[name], dtype=np.float32) * np.float32(0.02)

    files = write_weights(directory, [(n, np.dtype(np.float32), s) for n, s in plan], produce, shard_size)
    sizes = [int(np.prod(s)) * 4 for _, s in plan]
    return {"checkpoint_bytes": sum(sizes), "largest_tensor_bytes": max(sizes), "tensors": len(plan),
            "files": len(files), "config": cfg}


def _rss_kib() -> dict:
    import resource

    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
            "current": int(status["VmRSS"].split()[0])}


def measure(directory: str, method: str, param_dtype: str) -> dict:
    """Run in a fresh process: load the checkpoint, report RSS figures in bytes."""
    import gc

    import jax
    import jax.numpy as jnp
    from transformers import AutoConfig

    import mgpt
    from mgpt.models import load_tokenizer

    # Everything but the weights before the baseline: the backend, the config and tokenizer modules.
    jnp.zeros(1).block_until_ready()
    AutoConfig.from_pretrained(directory)
    load_tokenizer(directory)
    gc.collect()
    before = _rss_kib()
    if method == "mgpt":
        _, params, spec, _ = mgpt.load_pretrained(directory, task="causal_lm", param_dtype=param_dtype)
    else:
        from safetensors.numpy import load_file

        index = json.load(open(os.path.join(directory, "model.safetensors.index.json")))
        host = {}
        for shard in sorted(set(index["weight_map"].values())):
            host.update(load_file(os.path.join(directory, shard)))
        params = {name: jnp.asarray(array.T if array.ndim == 2 else array) for name, array in host.items()}
        del host
    leaves = jax.tree_util.tree_leaves(params)
    jax.block_until_ready(leaves)
    after = _rss_kib()
    return {"method": method, "param_dtype": param_dtype if method == "mgpt" else "float32",
            "param_bytes": sum(x.nbytes for x in leaves),
            "baseline_rss_bytes": before["current"] * 1024, "baseline_peak_rss_bytes": before["peak"] * 1024,
            "peak_rss_bytes": after["peak"] * 1024, "final_rss_bytes": after["current"] * 1024,
            "peak_minus_baseline_bytes": (after["peak"] - before["current"]) * 1024}


def run_measure(directory: str, method: str, param_dtype: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", directory, "--method", method,
                          "--param-dtype", param_dtype], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="bench_results/load_memory.json", help="JSON report path")
    parser.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"], help="16 gives ~1 GB")
    parser.add_argument("--shard-size", default="300MB", help="safetensors shard size of the generated checkpoint")
    parser.add_argument("--param-dtype", default="float32", help="mgpt's stored parameter dtype")
    parser.add_argument("--skip-naive", action="store_true", help="only measure mgpt's loader")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="mgpt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process
        print(json.dumps(measure(args.measure, args.method, args.param_dtype)))
        return
    with tempfile.TemporaryDirectory(prefix="mgpt_load_memory_") as directory:
        report = write_checkpoint(directory, args.layers, args.shard_size)
        report["runs"] = [run_measure(directory, "mgpt", args.param_dtype)]
        if not args.skip_naive:
            report["runs"].append(run_measure(directory, "naive", "float32"))
    gb = 1e9
    print(f"checkpoint: {report['checkpoint_bytes'] / gb:.3f} GB in {report['files']} files, "
          f"largest tensor {report['largest_tensor_bytes'] / gb:.3f} GB")
    for run in report["runs"]:
        extra = run["peak_minus_baseline_bytes"] - run["param_bytes"]
        delta = run["peak_minus_baseline_bytes"]
        print(f"{run['method']:>5} ({run['param_dtype']} params): peak RSS - baseline = {delta / gb:.3f} GB = "
              f"{delta / report['checkpoint_bytes']:.2f}x checkpoint; params {run['param_bytes'] / gb:.3f} GB, "
              f"above params {extra / gb:.3f} GB")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"report written to {args.output}")


if __name__ == "__main__":
    main()
