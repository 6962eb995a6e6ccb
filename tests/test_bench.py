"""`mgpt bench`: FLOPs formula by hand, and a real (tiny) timed run."""

import json

import pytest

from mgpt import bench

from fixtures_tiny import VOCAB, tiny_bert, tiny_gpt2


def test_gpt2_flops_per_token_by_hand(tmp_path):
    directory = tiny_gpt2(tmp_path / "gpt2")
    result = bench.run_bench(bench.BenchSettings(model=directory, batch_size=8, seq_len=16, steps=2, warmup=1,
                                                 peak_tflops=1.0))
    E, L, V, T = 32, 2, len(VOCAB), 16
    matmul = L * (E * 3 * E + E * E + E * 4 * E + 4 * E * E) + V * E  # blocks + tied output projection
    assert result["matmul_parameters"] == matmul
    assert result["flops_per_token"] == 6 * matmul + 6 * L * T * E
    assert result["tokens_per_second"] == pytest.approx(8 * 16 / result["step_seconds_median"])
    assert result["mfu"] == pytest.approx(result["flops_per_token"] * result["tokens_per_second"] / 1e12)
    assert result["compile_seconds_cold"] > 0 and result["compile_seconds_warm"] > 0
    assert len(result["step_seconds_all"]) == 2


def test_encoder_counts_bidirectional_attention(tmp_path):
    directory = tiny_bert(tmp_path / "bert")
    result = bench.run_bench(bench.BenchSettings(model=directory, batch_size=8, seq_len=16, steps=1, warmup=1,
                                                 peak_tflops=1.0))
    E, L, I, T = 32, 2, 48, 16
    # q, k, v, attention output, intermediate, output per layer; pooler; 2-way classifier
    matmul = L * (4 * E * E + 2 * E * I) + E * E + E * 2
    assert result["matmul_parameters"] == matmul
    assert result["flops_per_token"] == 6 * matmul + 12 * L * T * E


def test_bench_cli_writes_json(tmp_path, capsys):
    from mgpt import cli

    directory = tiny_gpt2(tmp_path / "gpt2")
    output = tmp_path / "bench.json"
    assert cli.main(["bench", "--model", directory, "--batch-size", "8", "--seq-len", "16", "--steps", "1",
                     "--warmup", "1", "--peak-tflops", "1", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["settings"]["seq_len"] == 16 and result["tokens_per_second"] > 0
    assert "tokens/s" in capsys.readouterr().out
