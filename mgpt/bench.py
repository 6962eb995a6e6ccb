"""Step-throughput benchmark: the real ``train_step`` on synthetic batches of a model with random weights.

Reports cold and warm (persistent-cache) compile seconds, the median step time after warm-up,
tokens/s, peak memory, FLOPs per token and MFU.

FLOPs per token = 6 x (parameters in matrix multiplications, the output projection included)
                + 6 x layers x sequence x width        (causal attention: QK^T and AV, half the square)
                  (12 x layers x sequence x width for bidirectional encoders).
The 6 counts a multiply-add as 2 FLOPs, times 3 for forward + backward.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import statistics
import tempfile
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mgpt.models.family import all_families, get_family


def named_sizes() -> dict[str, tuple[str, dict]]:
    """Benchmark sizes by name -> ``(model_type, transformers config keywords)``, as the families declare them."""
    return {name: (family.name, kwargs) for family in all_families() for name, kwargs in family.bench_sizes.items()}


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    model: str = "gpt2-small"  # a name in named_sizes(), or a directory with a config.json
    task: str = ""  # default: causal_lm for decoders, sequence_classification for encoders
    batch_size: int = 8
    seq_len: int = 128
    dtype: str = "float32"  # compute dtype; params stay float32
    steps: int = 10
    warmup: int = 2
    peak_tflops: float = 0.0  # 0: measure with a large matmul in the same dtype
    optimizer: str = "adamw"
    seed: int = 0
    attention_impl: str = ""  # "" (XLA) | cudnn
    remat: str = "none"  # none | full | dots | dots_no_batch
    scan_layers: bool = False
    loss_chunk_size: int = 0  # causal LM: loss over chunks of positions, no full logits


def hf_config_for(name: str, seq_len: int):
    """A transformers config for a named size (random weights) or from a directory."""
    from transformers import AutoConfig

    sizes = named_sizes()
    if name in sizes:
        family, kwargs = sizes[name]
        config = AutoConfig.for_model(family, **kwargs)
    else:
        config = AutoConfig.from_pretrained(name)
    for attr in ("attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob",
                 "attention_dropout"):
        if hasattr(config, attr):
            setattr(config, attr, 0.0)  # benchmark the matmuls, not the dropout masks
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0
    return config


def matmul_parameters(params: Any, spec) -> int:
    """Parameters used in matrix multiplications: 2-D kernels, plus the tied output projection."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    total = 0
    for path, leaf in flat:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name.endswith("kernel") and leaf.ndim in (2, 3):  # 3: scanned layers, (layers, in, out)
            total += leaf.size
    if spec.tied_lm_head:  # the token embedding doubles as the output projection
        total += spec.hf_config.vocab_size * spec.hf_config.hidden_size
    return int(total)


def flops_per_token(params: Any, spec, seq_len: int) -> float:
    width, layers = spec.hf_config.hidden_size, spec.hf_config.num_hidden_layers
    attention = (6 if spec.is_decoder else 12) * layers * seq_len * width
    return 6.0 * matmul_parameters(params, spec) + attention


def measure_peak_flops(dtype: str, size: int = 0) -> float:
    """FLOP/s of a large square matmul on the default device (median of 5 after warm-up)."""
    on_cpu = jax.default_backend() == "cpu"
    size = size or (2048 if on_cpu else 8192)
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (size, size), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.dtype(dtype))
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    times = []
    for _ in range(5):
        tic = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - tic)
    return 2.0 * size**3 / statistics.median(times)


def peak_memory_bytes() -> dict:
    stats = jax.devices()[0].memory_stats() or {}
    return {"device_peak_bytes": stats.get("peak_bytes_in_use"),
            "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_bench(settings: BenchSettings) -> dict:
    """Build the model, compile the real train step (cold, then warm from the persistent cache), time it."""
    from mgpt import optim
    from mgpt.config import OptimizerConfig, ParallelConfig
    from mgpt.models import build_model, make_spec
    from mgpt.parallel import make_mesh, shard_batch
    from mgpt.tasks import get_task
    from mgpt.train import state as state_lib
    from mgpt.train.step import train_step

    hf_config = hf_config_for(settings.model, settings.seq_len)
    decoder = get_family(hf_config.model_type).is_decoder
    task_kind = settings.task or ("causal_lm" if decoder else "sequence_classification")
    task = get_task(task_kind, settings.loss_chunk_size)
    spec = make_spec(hf_config, task.head, num_labels=None if task.head == "causal_lm" else 2, dtype=settings.dtype,
                     remat=settings.remat, scan_layers=settings.scan_layers, attention_impl=settings.attention_impl)
    model = build_model(spec)
    mesh = make_mesh(ParallelConfig())
    rng = np.random.default_rng(settings.seed)
    batch = {
        "input_ids": rng.integers(0, hf_config.vocab_size, (settings.batch_size, settings.seq_len), dtype=np.int32),
        "attention_mask": np.ones((settings.batch_size, settings.seq_len), np.int32),
        "example_weight": np.ones((settings.batch_size,), np.float32),
    }
    batch["labels"] = batch["input_ids"] if task_kind == "causal_lm" else rng.integers(
        0, 2, (settings.batch_size,), dtype=np.int32)
    # plain arrays: drop the logical-partitioning boxes init puts on the params
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, jnp.asarray(batch["input_ids"][:1]))["params"]))
    params = init(jax.random.PRNGKey(settings.seed))
    optimizer = optim.make_optimizer(OptimizerConfig(name=settings.optimizer, learning_rate=1e-4,
                                                     schedule="constant"), 1000, params)
    state, shardings = state_lib.create_state(params, optimizer, settings.seed, mesh)
    device_batch = shard_batch(batch, mesh)
    step = jax.jit(functools.partial(train_step, model=model, task=task, optimizer=optimizer),
                   donate_argnums=0, out_shardings=(shardings, None))

    cold, warm = _compile_times(step, state, device_batch)
    compiled = step.lower(state, device_batch).compile()
    times = []
    for i in range(settings.warmup + settings.steps):
        tic = time.perf_counter()
        state, metrics = compiled(state, device_batch)
        jax.block_until_ready(metrics["loss"])
        if i >= settings.warmup:
            times.append(time.perf_counter() - tic)
    median = statistics.median(times)
    tokens_per_second = settings.batch_size * settings.seq_len / median
    fpt = flops_per_token(params, spec, settings.seq_len)
    peak = settings.peak_tflops * 1e12 if settings.peak_tflops else measure_peak_flops(settings.dtype)
    achieved = fpt * tokens_per_second
    return {
        "settings": dataclasses.asdict(settings),
        "device": str(jax.devices()[0].device_kind),
        "num_devices": jax.device_count(),
        "backend": jax.default_backend(),
        "parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
        "matmul_parameters": matmul_parameters(params, spec),
        "compile_seconds_cold": cold,
        "compile_seconds_warm": warm,
        "step_seconds_median": median,
        "step_seconds_all": times,
        "tokens_per_second": tokens_per_second,
        "flops_per_token": fpt,
        "flops_formula": "6*matmul_params + (6 if causal else 12)*layers*seq_len*width",
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12,
        "peak_source": "given" if settings.peak_tflops else f"measured {settings.dtype} matmul",
        "mfu": achieved / peak,
        "final_loss": float(metrics["loss"]),
        **peak_memory_bytes(),
    }


def _compile_times(step, state, batch) -> tuple[float, float]:
    """Compile once into an empty persistent cache (cold), then again after clearing in-memory caches (warm)."""
    from jax.experimental.compilation_cache import compilation_cache

    with tempfile.TemporaryDirectory() as cache_dir:
        previous = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        # JAX picks its cache (or none) once per process: make it pick this directory, and forget it after
        compilation_cache.reset_cache()
        try:
            tic = time.perf_counter()
            step.lower(state, batch).compile()
            cold = time.perf_counter() - tic
            jax.clear_caches()
            tic = time.perf_counter()
            step.lower(state, batch).compile()
            warm = time.perf_counter() - tic
        finally:
            jax.config.update("jax_compilation_cache_dir", previous[0])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
            compilation_cache.reset_cache()
    return cold, warm


def write_result(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def summary(result: dict) -> str:
    s = result["settings"]
    return (f"{s['model']} {s['dtype']} batch {s['batch_size']}x{s['seq_len']} on {result['num_devices']} "
            f"{result['device']}: step {result['step_seconds_median'] * 1e3:.1f} ms, "
            f"{result['tokens_per_second']:.0f} tokens/s, compile {result['compile_seconds_cold']:.1f}s cold / "
            f"{result['compile_seconds_warm']:.1f}s warm, {result['achieved_tflops']:.3f} TFLOP/s = "
            f"{100 * result['mfu']:.1f}% of {result['peak_tflops']:.3f} ({result['peak_source']})")
