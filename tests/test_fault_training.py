"""Fault injection for training: non-finite steps, corrupted and non-finite checkpoints, best/ ahead of the
state, resumes of another run, and SIGTERM at a random step. Each test asserts the invariant."""

import functools
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from mgpt.train import checkpoint as checkpoint_lib
from mgpt.train import loop, reporting
from mgpt.train.errors import NonFiniteError, ResumeError
from mgpt.train.step import apply_gradients

from fixtures_tiny import tiny_bert, tiny_gpt2, write_classification_experiment
from test_buckets import _config, train_steps, varied  # noqa: F401 -- varied: the module fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVE_EVERY = ("checkpoint.enabled=true", "checkpoint.async_save=false", "checkpoint.save_every=1",
              "checkpoint.max_to_keep=3", "train.num_epochs=2")


def _latest_params(workdir):
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                    options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return step, state


def _assert_same_params(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(b["params"])
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_non_finite_step_leaves_the_state_unchanged():
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}
    optimizer = optax.adam(0.1)
    state = {"step": jnp.array(4), "params": params, "opt_state": optimizer.init(params), "rng": jax.random.PRNGKey(0)}
    step = jax.jit(functools.partial(apply_gradients, optimizer=optimizer))
    for bad in (jnp.nan, jnp.inf):
        grads = {"w": jnp.array([bad, 1.0]), "b": jnp.array(1.0)}
        new, metrics = step(state, grads, jnp.array(1.0), jnp.array(1.0))
        assert int(new["step"]) == 5 and float(metrics["nonfinite"]) == 1.0
        for x, y in zip(jax.tree_util.tree_leaves((new["params"], new["opt_state"])),
                        jax.tree_util.tree_leaves((state["params"], state["opt_state"]))):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    new, metrics = step(state, {"w": jnp.array([1.0, 1.0]), "b": jnp.array(1.0)}, jnp.array(1.0), jnp.array(1.0))
    assert float(metrics["nonfinite"]) == 0.0 and not np.array_equal(new["params"]["w"], params["w"])
    # a finite gradient whose update overflows the params is skipped too
    huge = jax.jit(functools.partial(apply_gradients, optimizer=optax.sgd(1e38)))
    new, metrics = huge(state, {"w": jnp.array([10.0, 1.0]), "b": jnp.array(1.0)}, jnp.array(1.0), jnp.array(1.0))
    assert float(metrics["nonfinite"]) == 1.0
    np.testing.assert_array_equal(np.asarray(new["params"]["w"]), np.asarray(params["w"]))


def test_divergent_run_stops_and_never_saves_a_non_finite_checkpoint(varied, tmp_path):  # noqa: F811
    workdir = str(tmp_path / "nan")
    config = _config(varied, "sequence_classification", *SAVE_EVERY, "optimizer.learning_rate=1e37",
                     "optimizer.name=sgd", "optimizer.max_grad_norm=0", "train.max_nonfinite_steps=3",
                     "train.log_every=100")
    with pytest.raises(NonFiniteError, match=r"3 consecutive training steps \(up to step \d+\).*"
                                             r"train.max_nonfinite_steps=3"):
        loop.train(config, workdir)
    steps = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "[0-9]*")))
    assert steps, "the skipped steps' (unchanged, finite) states were checkpointed"
    for step in steps:
        manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=ocp.CheckpointManagerOptions(create=False))
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        assert checkpoint_lib.all_finite(state)
    for event in reporting.read_metrics(workdir):  # nothing non-finite was logged either
        assert all(np.isfinite(v) for v in event.values() if isinstance(v, float))


def _save_raw(workdir, step, state, meta):
    """Write a checkpoint as Orbax would, bypassing mgpt's checks (to inject a bad one)."""
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                    options=ocp.CheckpointManagerOptions(max_to_keep=10))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()
    manager.close()


def _truncate_a_data_file(step_dir):
    files = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
             if os.path.isfile(p) and os.path.getsize(p) > 64 and "d" in os.path.basename(os.path.dirname(p))]
    files = files or [p for p in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
                      if os.path.isfile(p) and os.path.getsize(p) > 64]
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)


def _remove_manifest(step_dir):
    for path in glob.glob(os.path.join(step_dir, "state", "*")):
        if os.path.isfile(path):
            os.remove(path)  # _METADATA, manifest.ocdbt, ...


def _garbage_metadata(step_dir):
    for path in glob.glob(os.path.join(step_dir, "**", "*metadata*"), recursive=True) + \
            glob.glob(os.path.join(step_dir, "**", "_METADATA"), recursive=True):
        if os.path.isfile(path):
            with open(path, "w") as f:
                f.write("{not json")


def _non_finite(workdir, step):
    _, state = _latest_params(workdir)
    poisoned = jax.tree_util.tree_map(lambda x: x * np.nan if np.issubdtype(np.asarray(x).dtype, np.floating) else x,
                                      state)
    poisoned["step"] = np.asarray(step, np.int32)
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                    options=ocp.CheckpointManagerOptions(create=False))
    meta = manager.restore(manager.latest_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    manager.close()
    _save_raw(workdir, step, poisoned, meta)


CORRUPTIONS = ["truncated", "no_manifest", "garbage_metadata", "empty_step_dir", "non_finite"]


@pytest.fixture(scope="module")
def straight_params(varied, tmp_path_factory):  # noqa: F811
    """The final state of an uninterrupted run with a checkpoint every step."""
    straight = str(tmp_path_factory.mktemp("straight"))
    loop.train(_config(varied, "sequence_classification", *SAVE_EVERY), straight)
    return _latest_params(straight)[1]


@pytest.fixture(scope="module")
def stopped_at_4(varied, tmp_path_factory):  # noqa: F811
    """A workdir of the same run stopped after step 4 (each corruption test damages its own copy)."""
    workdir = str(tmp_path_factory.mktemp("stopped") / "run")
    assert loop.train(_config(varied, "sequence_classification", *SAVE_EVERY), workdir, stop_after=4) == {}
    return workdir


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupted_latest_checkpoint_falls_back_to_the_previous_intact_one(varied, straight_params, stopped_at_4,  # noqa: F811
                                                                           tmp_path, kind, caplog):
    workdir = str(tmp_path / "faulty")
    shutil.copytree(stopped_at_4, workdir)
    if kind == "empty_step_dir":  # a step directory with nothing in it (a crash right after mkdir)
        os.makedirs(os.path.join(workdir, "checkpoints", "5"))
        bad_step, resumed_from = 5, 4
    elif kind == "non_finite":
        _non_finite(workdir, 5)
        bad_step, resumed_from = 5, 4
    else:
        step_dir = os.path.join(workdir, "checkpoints", "4")
        {"truncated": _truncate_a_data_file, "no_manifest": _remove_manifest,
         "garbage_metadata": _garbage_metadata}[kind](step_dir)
        bad_step, resumed_from = 4, 3
    caplog.set_level("WARNING", logger="mgpt")
    loop.train(_config(varied, "sequence_classification", *SAVE_EVERY), workdir)
    assert any(f"step {bad_step}" in r.getMessage() and "checkpoints.bad" in r.getMessage() for r in caplog.records)
    assert glob.glob(os.path.join(workdir, "checkpoints.bad", f"{bad_step}-*"))
    resumed = [e for e in reporting.read_metrics(workdir) if e["kind"] == "train"]
    assert resumed_from + 1 in [e["step"] for e in resumed]
    _assert_same_params(straight_params, _latest_params(workdir)[1])  # ends where the uninterrupted run does


def test_best_ahead_of_the_state_is_discarded_and_best_saving_goes_on(varied, tmp_path, caplog):  # noqa: F811
    overrides = ("checkpoint.enabled=true", "checkpoint.async_save=false", "train.num_epochs=3",
                 "checkpoint.max_to_keep=5")
    straight = str(tmp_path / "straight")
    loop.train(_config(varied, "sequence_classification", *overrides), straight)
    workdir = str(tmp_path / "crash")
    loop.train(_config(varied, "sequence_classification", *overrides), workdir)
    checkpoints = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "[0-9]*")))
    # a crash after best/ committed but before checkpoints/ did: only the first epoch's checkpoint is left
    first = checkpoints[0]
    for step in checkpoints[1:]:
        shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
    best = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "best", "[0-9]*")))
    if best[-1] <= first:  # no best beyond it in this trajectory: plant one (as from another trajectory)
        shutil.copytree(os.path.join(workdir, "best", str(best[-1])), os.path.join(workdir, "best", str(checkpoints[-1])))
    caplog.set_level("WARNING", logger="mgpt")
    loop.train(_config(varied, "sequence_classification", *overrides), workdir)
    assert any("is ahead of the resumed step" in r.getMessage() for r in caplog.records)
    with open(os.path.join(workdir, "eval_test.json")) as f, open(os.path.join(straight, "eval_test.json")) as g:
        report, reference = json.load(f), json.load(g)
    assert report["params"] == reference["params"]  # the same best, of this trajectory, was saved again
    assert report["accuracy"] == reference["accuracy"]


def test_resume_refuses_another_model_labels_or_batch_size(varied, tmp_path):  # noqa: F811
    workdir = str(tmp_path / "run")
    overrides = ("checkpoint.enabled=true", "checkpoint.async_save=false")
    assert loop.train(_config(varied, "sequence_classification", *overrides), workdir, stop_after=2) == {}
    other = tiny_gpt2(tmp_path / "other_gpt2", seed=7)  # same shapes, other weights
    with pytest.raises(ResumeError, match=r"^.*checkpoints step 2: this workdir holds a run of another model: "
                                          r"model \(name_or_path, weights;"):
        loop.train(_config(varied, "sequence_classification", *overrides, f"model.name_or_path={other}"), workdir)
    relabelled = {}
    for split in ("train", "test"):
        relabelled[split] = tmp_path / f"relabelled_{split}.csv"
        with open(varied["csv"][split]) as f, open(relabelled[split], "w") as g:
            g.write(f.read().replace(",neg", ",bad").replace(",pos", ",good"))
    with pytest.raises(ResumeError, match=r"labels \(2 saved: neg, pos; now 2: bad, good\)"):
        loop.train(_config(varied, "sequence_classification", *overrides, f"data.train_file={relabelled['train']}",
                           f"data.test_file={relabelled['test']}"), workdir)
    with pytest.raises(ResumeError, match=r"batch_size \(batch_size\).*allow_resume_changes=\[batch_size\]"):
        loop.train(_config(varied, "sequence_classification", *overrides, "train.batch_size=4"), workdir)
    # an intended change, allowed explicitly: more epochs
    reports = loop.train(_config(varied, "sequence_classification", *overrides, "train.num_epochs=2",
                                 "train.allow_resume_changes=[schedule]"), workdir)
    assert reports and max(train_steps(workdir)) == 10


def _run_cli(experiment, workdir, cache_dir):
    # The four processes share a persistent compilation cache (``cache_dir``): each loads the programs the
    # first one compiled instead of compiling them again. A hit is keyed by the program itself, so a resumed
    # process that built a different program would still compile its own.
    # Fully optimised code (not conftest's fast compilation): with the programs cached, running them is the cost.
    flags = os.environ.get("XLA_FLAGS", "").replace(os.environ.get("MGPT_TESTS_XLA_EXTRA", ""), "")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.05",
               XLA_FLAGS=flags)
    return subprocess.Popen([sys.executable, "-m", "mgpt.cli", "train", experiment, "--workdir", workdir,
                             "--set", "checkpoint.async_save=false", "--set", "checkpoint.save_every=4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(workdir, step, process, timeout=300):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0]
        if os.path.exists(path):
            with open(path) as f:
                if any(json.loads(line).get("step", 0) >= step for line in f if line.strip().endswith("}")):
                    return
        time.sleep(0.05)
    raise TimeoutError(f"no step {step} in {path}")


def test_sigterm_and_kill_at_random_steps_resume_bitwise(tmp_path):
    """One trajectory interrupted twice, by SIGTERM and by SIGKILL, each at a random step, against a straight
    run: the final params are bitwise equal and every step ran with the same batch."""
    experiment = write_classification_experiment(str(tmp_path), tiny_bert(tmp_path / "bert"), num_epochs=6,
                                                 log_every=1)
    straight, cache = str(tmp_path / "straight"), tmp_path / "xla_cache"
    process = _run_cli(experiment, straight, cache)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    rng = random.Random(int(time.time()))
    term_at, kill_at = rng.randint(2, 14), rng.randint(18, 30)
    workdir = str(tmp_path / "interrupted")
    process = _run_cli(experiment, workdir, cache)
    _wait_for_step(workdir, term_at, process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 3, out
    assert out.strip().splitlines()[-1].startswith("mgpt: train: SIGTERM: saved step") and "Traceback" not in out
    saved_step, _ = _latest_params(workdir)
    assert saved_step >= term_at  # the step it was on when the signal came, not the last periodic save
    process = _run_cli(experiment, workdir, cache)
    _wait_for_step(workdir, kill_at, process)
    process.kill()  # kill -9: no handler runs; the last periodic checkpoint is where it resumes
    process.communicate(timeout=60)
    process = _run_cli(experiment, workdir, cache)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    _, a = _latest_params(straight)
    _, b = _latest_params(workdir)
    _assert_same_params(a, b)
    assert train_steps(straight) == train_steps(workdir)  # same losses and batch fingerprints at every step


def test_sigint_is_a_stop_request_not_a_keyboard_interrupt():
    from mgpt.train.preemption import StopRequest

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a shell's background job
    with StopRequest() as stop:
        assert not stop.requested(1)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: no KeyboardInterrupt, no traceback
        time.sleep(0.1)
        assert stop.requested(2) and stop.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_unknown_resume_change_is_a_config_error(varied):  # noqa: F811
    from mgpt.config import ConfigError
    from mgpt.train.validate import validate

    with pytest.raises(ConfigError, match="train.allow_resume_changes"):
        validate(_config(varied, "sequence_classification", "train.allow_resume_changes=[epochs]"))

