#!/usr/bin/env bash
# Train-step throughput of Llama-1B (random weights, the real mgpt train step) on one NVIDIA H200:
# bf16 compute with float32 master weights and loss, cuDNN flash attention, sequence length 2048,
# the causal-LM loss over 512-position chunks (the (8, 2048, 128256) logits are never held whole).
#
#   bash experiments/benchmarks/h200_llama1b.sh [OUTPUT.json]       (from the repository root)
#
# Memory at batch 8: ~20 GB of params, gradients and AdamW state (fp32), activations well under 100 GB;
# set BATCH=16 REMAT=dots_no_batch to trade recomputation for a larger batch. MFU is against
# the 790 bf16 TFLOP/s the issue sets for one H200 (override with PEAK_TFLOPS, or 0 to measure with a matmul).
set -euo pipefail
OUT="${1:-bench_results/h200_llama1b.json}"
python -m mgpt.cli bench \
  --model llama-1b --seq-len 2048 --batch-size "${BATCH:-8}" \
  --dtype bfloat16 --attention-impl cudnn --remat "${REMAT:-none}" --loss-chunk-size 512 \
  --steps "${STEPS:-10}" --warmup 2 --peak-tflops "${PEAK_TFLOPS:-790}" \
  --output "$OUT"
