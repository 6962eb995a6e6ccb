"""Memory and speed options change how a model runs, never what it computes.

bf16 compute keeps float32 master weights, gradients, optimizer state and loss; remat, scanned layers and
the chunked causal-LM loss give the same numbers as the plain model; the chunked loss really never holds the
(B, T, V) logits; the persistent compilation cache is filled by one run and read by the next.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import optim, parallel
from mgpt.config import OptimizerConfig, ParallelConfig
from mgpt.models import attention as attention_lib
from mgpt.models import build_model, load_pretrained, make_spec, save_pretrained
from mgpt.models import scan as scan_lib
from mgpt.models.partitioning import unboxed
from mgpt.tasks import get_task
from mgpt.train import engine as engine_lib
from mgpt.train.step import gradients

from fixtures_tiny import tiny_gpt2, write_classification_experiment
from test_sharding_rules import _batch, tiny_llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("memory")
    return {"gpt2": tiny_gpt2(directory / "gpt2"), "llama": tiny_llama(directory / "llama")}


@pytest.fixture(scope="module")
def gpt2_reference(checkpoints):
    """The plain tiny GPT-2 (dropout on), its params, and its mean loss and gradients on ``_batch()``."""
    model, params, _, _ = load_pretrained(checkpoints["gpt2"], task="causal_lm")
    return (model, params) + _grads(model, params, _batch())


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _grads(model, params, batch, task=None, rng=0):
    """Mean loss and mean-loss gradients (the trainer's division by the token count)."""
    g, s, c = jax.jit(lambda p: gradients(p, batch, jax.random.PRNGKey(rng), model=model,
                                          task=task or get_task("causal_lm")))(params)
    return float(s / c), jax.tree_util.tree_map(lambda x: x / c, g)


def test_bf16_compute_keeps_float32_weights_grads_state_and_loss(checkpoints, gpt2_reference):
    mesh = parallel.make_mesh(ParallelConfig(num_devices=1))
    model, params, _, _ = load_pretrained(checkpoints["gpt2"], task="causal_lm", dtype="bfloat16")
    batch = _batch()
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, batch["input_ids"]))(params))
    assert "bf16[8,16,32]" in jaxpr  # hidden states really run in bfloat16
    loss16, grads = _grads(model, params, batch)
    loss32 = gpt2_reference[2]  # the same dropout masks, in float32
    assert {x.dtype for x in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}
    assert abs(loss16 - loss32) < 0.02 * abs(loss32)  # bf16 rounding only
    optimizer = optim.make_optimizer(OptimizerConfig(name="adamw", schedule="constant"), 10, params)
    engine = engine_lib.make_engine("jit", mesh, model, get_task("causal_lm"), optimizer)
    state = engine.create_state(params, seed=0)
    old = jax.tree_util.tree_leaves(state)
    state, metrics = engine.step(state, batch)
    floats = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}  # params + Adam moments
    assert metrics["loss"].dtype == jnp.float32
    assert all(x.is_deleted() for x in old)  # the step donates the state it replaces


@pytest.mark.parametrize("policy", ["full", "dots_no_batch"])  # ("dots" sits between the two)
def test_remat_gives_identical_loss_and_grads(checkpoints, gpt2_reference, policy):
    batch = _batch()
    model, params, loss, grads = gpt2_reference  # dropout on: the recomputation replays the same masks
    rematted, _, _, _ = load_pretrained(checkpoints["gpt2"], task="causal_lm", remat=policy)
    assert str(jax.make_jaxpr(lambda p: rematted.apply({"params": p}, batch["input_ids"]))(params)).count(
        "remat2[") == 2  # one per block (jax.checkpoint)
    loss_r, grads_r = _grads(rematted, params, batch)
    assert abs(loss - loss_r) < 1e-6
    assert _max_diff(grads, grads_r) < 1e-6


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_scanned_layers_equal_unscanned_and_round_trip(checkpoints, family, tmp_path):
    batch = _batch()
    model, params, spec, tok = load_pretrained(checkpoints[family], task="causal_lm", dropout=0.0)
    scanned, stacked, sspec, _ = load_pretrained(checkpoints[family], task="causal_lm", dropout=0.0,
                                                 scan_layers=True)
    name = scan_lib.layer_stack(spec)[0]
    assert f"{name}_0" not in stacked["backbone"] and stacked["backbone"][name]
    assert _max_diff(scan_lib.to_scanned(params, spec), stacked) == 0.0
    def run(m, p):
        return jax.jit(lambda p: m.apply({"params": p}, batch["input_ids"], attention_mask=batch["attention_mask"],
                                         return_hidden_states=True))(p)

    (logits, hidden), (logits_s, hidden_s) = run(model, params), run(scanned, stacked)
    assert _max_diff(logits, logits_s) < 1e-5
    assert len(hidden) == len(hidden_s) == 3 and _max_diff(hidden, hidden_s) < 1e-5
    # Export unstacks: the saved checkpoint loads back, scanned or not, to the same weights.
    save_pretrained(tmp_path / "out", scanned, stacked, tok)
    _, again, _, _ = load_pretrained(tmp_path / "out", task="causal_lm")
    assert _max_diff(again, params) == 0.0
    _, again_s, _, _ = load_pretrained(tmp_path / "out", task="causal_lm", scan_layers=True)
    assert _max_diff(again_s, stacked) == 0.0
    assert _max_diff(scan_lib.to_unscanned(stacked, spec), params) == 0.0


def test_scanned_params_load_straight_onto_fsdp(checkpoints):
    mesh = parallel.make_mesh(ParallelConfig())
    scanned, _, _, _ = load_pretrained(checkpoints["llama"], task="causal_lm", scan_layers=True)
    layout = parallel.make_layout(ParallelConfig(rules="fsdp"), mesh, scanned)
    _, params, _, _ = load_pretrained(checkpoints["llama"], task="causal_lm", scan_layers=True,
                                      shardings=layout.model_param_shardings())
    kernel = params["backbone"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert kernel.shape == (2, 32, 64) and tuple(kernel.sharding.spec) == (None, "data", None)  # "layers" axis whole


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # tied output projection / untied lm_head
def test_chunked_loss_equals_full_loss(checkpoints, gpt2_reference, family):
    batch = _batch()  # 15 scored positions: the last chunk of 4 is padded
    if family == "gpt2":
        model, params, loss, grads = gpt2_reference
    else:
        model, params, _, _ = load_pretrained(checkpoints[family], task="causal_lm")
        loss, grads = _grads(model, params, batch)
    loss_c, grads_c = _grads(model, params, batch, task=get_task("causal_lm", loss_chunk_size=4))
    assert abs(loss - loss_c) < 1e-5
    assert _max_diff(grads, grads_c) < 1e-5


def test_chunked_loss_never_holds_the_logits():
    from transformers import GPT2Config

    vocab, rows, length = 8192, 4, 128
    config = GPT2Config(vocab_size=vocab, n_positions=length, n_embd=32, n_layer=1, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    model = build_model(make_spec(config, "causal_lm"))
    params = jax.jit(lambda: unboxed(model.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))["params"]))()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (rows, length)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": ids,
             "example_weight": np.ones((rows,), np.float32)}

    def temp_bytes(task):
        fn = jax.jit(lambda p: gradients(p, batch, jax.random.PRNGKey(0), model=model, task=task))
        return fn.lower(params).compile().memory_analysis().temp_size_in_bytes

    logits_bytes = rows * length * vocab * 4
    full, chunked = temp_bytes(get_task("causal_lm")), temp_bytes(get_task("causal_lm", loss_chunk_size=16))
    print(f"train-step temp memory: full logits {full / 2**20:.1f} MiB, chunked {chunked / 2**20:.1f} MiB, "
          f"B*T*V*4 = {logits_bytes / 2**20:.1f} MiB")
    assert full > logits_bytes > chunked


def test_cudnn_attention_is_asked_for_a_causal_kernel(monkeypatch):
    """With attention_impl="cudnn" the kernel is told the mask is causal (so it can skip blocks) and gets only
    the padding as a mask; run here through XLA, the result is the same as the plain path."""
    calls = []
    real = jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kwargs):
        calls.append((implementation, kwargs.get("is_causal", False), kwargs["mask"].shape))
        return real(*args, implementation=None, **kwargs)

    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 6, 2, 4)) for i in range(3))
    key_mask = jnp.array([[1] * 6, [1] * 4 + [0] * 2])
    expected = attention_lib.attention(q, k, v, key_mask, causal=True)
    monkeypatch.setattr(attention_lib.jax.nn, "dot_product_attention", spy)
    got = attention_lib.attention(q, k, v, key_mask, causal=True, implementation="cudnn")
    assert calls == [("cudnn", True, (2, 1, 6, 6))]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_compilation_cache_is_filled_then_read(tmp_path):
    experiment = write_classification_experiment(str(tmp_path), tiny_gpt2(tmp_path / "model"))
    cache = tmp_path / "xla_cache"
    script = textwrap.dedent(f"""
        import json, sys
        import jax
        from jax import monitoring
        from mgpt import config as config_lib
        from mgpt.train import loop
        hits = []
        monitoring.register_event_listener(lambda event, **kw: hits.append(event)
                                           if event == "/jax/compilation_cache/cache_hits" else None)
        jax.jit(lambda x: x + 1)(1.0)  # something compiles before the loop turns the cache on
        config = config_lib.apply_overrides(config_lib.load_experiment({experiment!r}), [
            "train.max_steps=1", "train.eval_every=100", "train.final_eval_splits=()", "train.eval_splits=()",
            "checkpoint.enabled=false", "train.compilation_cache_dir={cache}"])
        loop.train(config, sys.argv[1])
        print("RESULT", json.dumps({{"hits": len(hits)}}))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1 " + os.environ.get("MGPT_TESTS_XLA_EXTRA", ""), JAX_PLATFORMS="cpu")
    results = []
    for run in ("first", "second"):
        proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / run)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
        results.append(json.loads(line.split(" ", 1)[1]))
        if run == "first":
            entries = set(os.listdir(cache))
    assert results[0]["hits"] == 0 and entries  # the first run writes the cache
    assert results[1]["hits"] >= 1  # the second reads it (the train step among the hits)
    assert any("train_step" in name for name in entries)
