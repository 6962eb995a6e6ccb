"""pmap mode and multi-host runs give the parameters of the default single-program run."""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mgpt import config as config_lib
from mgpt import parallel
from mgpt.train import loop, setup
from mgpt.train.checkpoint import restore_params

from fixtures_tiny import tiny_gpt2, write_classification_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("modes")
    return write_classification_experiment(str(directory), tiny_gpt2(directory / "model"))


def _params_after(experiment, workdir, *overrides):
    config = config_lib.apply_overrides(config_lib.load_experiment(experiment), list(overrides))
    run = setup.build_run(config)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(run.mesh)), run.params)
    params, _, where = restore_params(os.path.join(workdir, "checkpoints"), target)
    return params, where


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


COMMON = ["train.max_steps=3", "train.eval_every=100", "checkpoint.keep_best=false", "train.final_eval_splits=()"]


def test_pmap_equals_jit(experiment, tmp_path):
    results = {}
    for mode in ("jit", "pmap"):
        workdir = str(tmp_path / mode)
        config = config_lib.apply_overrides(config_lib.load_experiment(experiment), COMMON + [f"parallel.mode={mode}"])
        loop.train(config, workdir)
        results[mode], where = _params_after(experiment, workdir)
        assert where.endswith("step 3")
    assert _max_diff(results["jit"], results["pmap"]) < 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(experiment, workdir, devices, *overrides, process=None):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} " + os.environ.get("MGPT_TESTS_XLA_EXTRA", ""), JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "mgpt.cli", "train", experiment, "--workdir", workdir]
    for item in COMMON + list(overrides):
        command += ["--set", item]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one(experiment, tmp_path):
    single = str(tmp_path / "single")
    one = _cli(experiment, single, 4)
    out, _ = one.communicate(timeout=600)
    assert one.returncode == 0, out

    shared = str(tmp_path / "multi")
    port = _free_port()
    hosts = [
        _cli(experiment, shared, 2, "parallel.distributed=true", f"parallel.coordinator_address=127.0.0.1:{port}",
             "parallel.num_processes=2", f"parallel.process_id={i}")
        for i in range(2)
    ]
    outputs = [host.communicate(timeout=600)[0] for host in hosts]
    for i, host in enumerate(hosts):
        assert host.returncode == 0, f"process {i} failed:\n" + "\n---\n".join(outputs)

    a, where_a = _params_after(experiment, single)
    b, where_b = _params_after(experiment, shared)  # written once by the two processes together
    assert where_a.endswith("step 3") and where_b.endswith("step 3")
    assert _max_diff(a, b) < 1e-5
