"""Workdir discipline: one process per workdir, a metrics log that survives crashes and fresh starts,
`mgpt eval` that never overwrites the run's own report, and one-line errors with documented statuses."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mgpt import cli
from mgpt.config import ConfigError
from mgpt.data import DataError
from mgpt.models import CheckpointError
from mgpt.train import reporting
from mgpt.train.workdir import WorkdirLocked, lock_path, lock_workdir, read_holder

from fixtures_tiny import tiny_gpt2, write_classification_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A second process: takes the lock, says so, and holds it until its stdin closes.
HOLDER = """
import sys
from mgpt.train.workdir import lock_workdir
with lock_workdir(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _start_holder(workdir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "locked"
    return process


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# -- the workdir lock ---------------------------------------------------------------------------------


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    holder = _start_holder(workdir)
    try:
        started = time.monotonic()
        with pytest.raises(WorkdirLocked) as info:
            with lock_workdir(str(workdir)):
                pytest.fail("took a lock another process holds")
        assert time.monotonic() - started < 2.0  # refused, not waited for
        message = str(info.value)
        assert str(workdir) in message and f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert isinstance(info.value, RuntimeError)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    # the holder exited cleanly: the lock is free and its record gone
    assert read_holder(str(workdir)) is None
    with lock_workdir(str(workdir)) as mine:
        assert mine["pid"] == os.getpid() and read_holder(str(workdir))["pid"] == os.getpid()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    workdir = tmp_path / "run"
    holder = _start_holder(workdir)
    holder.send_signal(signal.SIGKILL)  # no clean-up runs: the record stays behind
    holder.wait(timeout=30)
    holder.stdin.close()
    assert read_holder(str(workdir))["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        with lock_workdir(str(workdir)):
            assert read_holder(str(workdir))["pid"] == os.getpid()
    assert f"stale lock: pid {holder.pid} on {socket.gethostname()}" in caplog.text


def test_a_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path, caplog):
    workdir = tmp_path / "run"
    workdir.mkdir()
    pid = _dead_pid()
    (workdir / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}) + "\n")
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        with lock_workdir(str(workdir)) as mine:
            assert mine["pid"] == os.getpid()
    assert f"{workdir}: taking over a stale lock: pid {pid}" in caplog.text and "is gone" in caplog.text
    assert read_holder(str(workdir)) is None


def test_a_lock_recorded_by_another_host_is_not_taken_over(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / ".lock").write_text(json.dumps({"pid": 4242, "host": "elsewhere.invalid"}) + "\n")
    with pytest.raises(WorkdirLocked, match=r"pid 4242 on host elsewhere\.invalid.*delete .*\.lock"):
        with lock_workdir(str(workdir)):
            pass
    assert read_holder(str(workdir))["host"] == "elsewhere.invalid"  # the other host's record is kept


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(KeyError):
        with lock_workdir(str(workdir)):
            raise KeyError("boom")
    assert read_holder(str(workdir)) is None and os.path.exists(lock_path(str(workdir)))
    holder = _start_holder(workdir)  # another process gets it straight away
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0


# -- metrics.jsonl --------------------------------------------------------------------------------------


def _events(*steps):
    return [{"kind": "train", "step": step, "loss": 1.0 / step} for step in steps]


def _write_lines(path, events, tail=""):
    path.write_text("".join(json.dumps(event) + "\n" for event in events) + tail)


def test_a_torn_last_line_is_dropped_with_a_warning_and_does_not_block_resume(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, _events(1, 2, 3), tail='{"kind": "train", "step": 4, "lo')  # cut mid-write
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        assert reporting.read_metrics(str(tmp_path)) == _events(1, 2, 3)
        writer = reporting.MetricsWriter(str(tmp_path), resume_step=3)
    assert f"{path}:4: dropping a torn last line" in caplog.text
    writer.write("train", 4, {"loss": 0.25})
    writer.close()
    assert reporting.read_metrics(str(tmp_path)) == _events(1, 2, 3, 4)


def test_appending_after_a_torn_line_does_not_glue_the_next_event_onto_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, _events(1, 2), tail='{"kind": "tr')
    writer = reporting.MetricsWriter(str(tmp_path))  # as finish() opens it: append
    writer.write("train", 3, {"loss": 1.0 / 3})
    writer.close()
    assert reporting.read_metrics(str(tmp_path)) == _events(1, 2, 3)


@pytest.mark.parametrize("damaged, line", [
    ('{"kind": "train", "step": 2, "lo\n', 2),  # in the middle
    ('{"kind": "train", "step": 3, "lo\n', 3),  # last, but complete with its newline: not a torn write
])
def test_a_damaged_line_before_the_end_is_an_error_naming_file_and_line(tmp_path, damaged, line):
    path = tmp_path / "metrics.jsonl"
    before = _events(1) if line == 2 else _events(1, 2)
    after = _events(3) if line == 2 else []
    path.write_text("".join(json.dumps(e) + "\n" for e in before) + damaged
                    + "".join(json.dumps(e) + "\n" for e in after))
    content = path.read_bytes()
    with pytest.raises(reporting.MetricsLogError, match=rf"^{path}:{line}: expected one JSON object per line"):
        reporting.read_metrics(str(tmp_path))
    with pytest.raises(reporting.MetricsLogError, match=rf"^{path}:{line}:"):
        reporting.MetricsWriter(str(tmp_path), resume_step=1)
    assert path.read_bytes() == content  # nothing rewritten over the evidence
    assert issubclass(reporting.MetricsLogError, CheckpointError)  # the CLI reports it in one line


def test_the_resume_rewrite_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, _events(1, 2, 3, 4))
    original = path.read_bytes()
    replaced = []
    real_replace = os.replace

    def checked_replace(src, dst):
        # At the moment of the swap the old file is whole, and the new one complete beside it.
        assert os.path.dirname(os.path.abspath(src)) == str(tmp_path) and dst == str(path)
        assert path.read_bytes() == original
        with open(src) as f:
            assert [json.loads(line) for line in f] == _events(1, 2)
        replaced.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(reporting.os, "replace", checked_replace)
    reporting.MetricsWriter(str(tmp_path), resume_step=2).close()
    monkeypatch.undo()
    assert len(replaced) == 1 and reporting.read_metrics(str(tmp_path)) == _events(1, 2)


def test_a_rewrite_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, _events(1, 2, 3))
    original = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reporting.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        reporting.MetricsWriter(str(tmp_path), resume_step=1)
    monkeypatch.undo()
    assert path.read_bytes() == original and sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


def test_a_fresh_start_moves_the_old_log_aside_and_finish_appends(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    _write_lines(path, _events(1, 2, 3))
    old = path.read_bytes()
    (tmp_path / "metrics.jsonl.1").write_text("older run\n")
    with caplog.at_level(logging.INFO, logger="mgpt"):
        writer = reporting.MetricsWriter(str(tmp_path), fresh=True)
    assert f"moved the previous run's {path} to {path}.2" in caplog.text
    assert (tmp_path / "metrics.jsonl.2").read_bytes() == old
    assert (tmp_path / "metrics.jsonl.1").read_text() == "older run\n"
    assert not path.exists()  # nothing of the old run in the new log
    writer.write("train", 1, {"loss": 0.5})
    writer.close()
    final = reporting.MetricsWriter(str(tmp_path))  # the writer finish() opens: same run, appends
    final.write("final", 1, {"test/accuracy": 1.0})
    final.close()
    assert reporting.read_metrics(str(tmp_path)) == [{"kind": "train", "step": 1, "loss": 0.5},
                                                     {"kind": "final", "step": 1, "test/accuracy": 1.0}]
    assert not (tmp_path / "metrics.jsonl.3").exists()


def test_fresh_and_resumed_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="fresh metrics log cannot resume from step 5"):
        reporting.MetricsWriter(str(tmp_path), resume_step=5, fresh=True)


# -- the CLI: errors, statuses, eval reports ------------------------------------------------------------


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text('"""Tiny.\n\n    mgpt train tiny.py\n"""\nfrom mgpt.config import *\n\n\ndef get_config():\n'
                    '    return ExperimentConfig(data=DataConfig(train_file="t.csv", validation_file="v.csv"))\n')
    return str(path)


@pytest.mark.parametrize("error_class", [DataError, CheckpointError, ConfigError, WorkdirLocked,
                                         reporting.MetricsLogError])
def test_bad_input_is_one_line_with_status_2_and_debug_shows_the_traceback(experiment, tmp_path, monkeypatch,
                                                                           capsys, error_class):
    def failing_run(args, config):
        raise error_class("the workdir run/\nis not what was expected")

    monkeypatch.setattr(cli, "_run", failing_run)
    argv = ["train", experiment, "--workdir", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "mgpt: train: the workdir run/ is not what was expected\n"
    with pytest.raises(error_class, match="is not what was expected"):
        cli.main(["--debug"] + argv)


def test_a_config_error_keeps_its_one_line_and_debug_raises_it(experiment, capsys):
    argv = ["train", experiment, "--set", "train.batchsize=4"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgpt: config error: ") and "batch_size" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="batch_size"):
        cli.main(["--debug"] + argv)


def test_help_documents_the_exit_statuses():
    text = cli.build_parser().format_help()
    for status in ("0  done", "1  unexpected error", "2  bad config, data or checkpoint, or the workdir is locked",
                   "3  stopped by a signal"):
        assert status in text, text


@pytest.mark.parametrize("where, name", [
    ("/runs/a/best step 6", "eval_test.best.json"),
    ("/runs/a/checkpoints step 12", "eval_test.step_12.json"),
])
def test_eval_report_name_says_which_checkpoint(where, name):
    assert cli._eval_output(None, "/runs/a", "test", where) == os.path.join("/runs/a", name)
    assert cli._eval_output(None, "/runs/a/checkpoints", "test", where) == os.path.join("/runs/a", name)


def test_eval_writes_beside_the_training_report_not_over_it(tmp_path):
    experiment = write_classification_experiment(str(tmp_path), tiny_gpt2(tmp_path / "model"))
    workdir = tmp_path / "run"
    assert cli.main(["train", experiment, "--workdir", str(workdir), "--set", "train.eval_every=3"]) == 0
    own = (workdir / "eval_test.json").read_bytes()
    latest = max(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
    assert cli.main(["eval", experiment, "--checkpoint", str(workdir)]) == 0
    assert cli.main(["eval", experiment, "--checkpoint", str(workdir / "checkpoints")]) == 0
    assert (workdir / "eval_test.json").read_bytes() == own  # the run's final report is untouched
    best = json.loads((workdir / "eval_test.best.json").read_text())
    step = json.loads((workdir / f"eval_test.step_{latest}.json").read_text())
    assert best["params"].startswith(str(workdir / "best") + " step ")
    assert step["params"] == f"{workdir / 'checkpoints'} step {latest}"


def test_a_second_mgpt_train_on_a_held_workdir_is_refused_in_one_line(tmp_path, capsys):
    experiment = write_classification_experiment(str(tmp_path), tiny_gpt2(tmp_path / "gpt2"))
    workdir = tmp_path / "run"
    holder = _start_holder(workdir)
    try:
        assert cli.main(["train", experiment, "--workdir", str(workdir)]) == 2
    finally:
        holder.communicate("\n")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"mgpt: train: workdir {workdir} is in use by pid {holder.pid} on host")
    assert not os.path.exists(workdir / "config.json")  # the held run's config is not overwritten
