#!/usr/bin/env bash
# The GPU checks of issue 13, as one script for one NVIDIA H200 (from the repository root):
#
#   bash experiments/benchmarks/h200_llama1b.sh [OUTPUT_DIR]          (default bench_results/)
#
# 1. Train-step throughput of Llama-1B (random weights, the real mgpt train step): bf16 compute with float32
#    master weights and loss, cuDNN flash attention, sequence length 2048, the causal-LM loss over
#    512-position chunks (the (8, 2048, 128256) logits are never held whole). Memory at batch 8: ~20 GB of
#    params, gradients and AdamW state (fp32), activations well under 100 GB; BATCH=16 REMAT=dots_no_batch
#    trades recomputation for a larger batch.
# 2. A SmolLM2-135M fine-tuning step in bf16 (`smollm2-135m`: the packaged GGUF file's architecture, checked by
#    tests/test_smollm2_real.py, at random weights, since the device machine has neither the file nor a network).
#
# MFU is against the 790 bf16 TFLOP/s the issue sets for one H200 (override with PEAK_TFLOPS, or 0 to measure
# with a matmul). Each run writes its JSON and prints one summary line (tokens/s, MFU).
set -euo pipefail
OUT="${1:-bench_results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import jax; print('jax', jax.__version__, jax.devices())"
python -m mgpt.cli bench \
  --model llama-1b --seq-len 2048 --batch-size "${BATCH:-8}" \
  --dtype bfloat16 --attention-impl cudnn --remat "${REMAT:-none}" --loss-chunk-size 512 \
  --steps "${STEPS:-10}" --warmup 2 --peak-tflops "${PEAK_TFLOPS:-790}" \
  --output "$OUT/h200_llama1b.json"
python -m mgpt.cli bench \
  --model smollm2-135m --seq-len "${SMOL_SEQ:-2048}" --batch-size "${SMOL_BATCH:-16}" \
  --dtype bfloat16 --attention-impl cudnn --loss-chunk-size 512 \
  --steps "${STEPS:-10}" --warmup 2 --peak-tflops "${PEAK_TFLOPS:-790}" \
  --output "$OUT/h200_smollm2_135m.json"
