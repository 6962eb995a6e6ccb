"""What the `mgpt` command prints: --version, --log-level, a short start-up summary, no library noise on a
CPU run (JAX's TPU probe, transformers' "PyTorch was not found"), progress bars only on a terminal."""

import io
import json
import logging
import os
import subprocess
import sys
from importlib import metadata

import pytest

from mgpt import cli, log_setup

from fixtures_tiny import tiny_gpt2, write_classification_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A fresh interpreter that finds no torch, as on a machine without it: importlib.util.find_spec (what transformers
# asks) says None and an import fails. (sys.modules["torch"] = None would trip scipy, which looks there.)
NO_TORCH = """
import importlib.abc, importlib.util, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (None if name.split(".")[0] == "torch"
                                                       else find_spec(name, package))
"""
WITHOUT_TORCH = NO_TORCH + "from mgpt.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.fixture(autouse=True)
def restore_log_levels():
    """The command sets logger levels and transformers' switches for its process; other tests get theirs back."""
    switches = {name: os.environ.get(name) for name in ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "TRANSFORMERS_VERBOSITY")}
    saved = {name: logging.getLogger(name).level for name in ("", "mgpt", "transformers")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    for name, value in switches.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    """A tiny run trained by `mgpt train` in a subprocess without torch; its stderr."""
    directory = tmp_path_factory.mktemp("quiet")
    experiment = write_classification_experiment(str(directory), tiny_gpt2(directory / "model"))
    workdir = str(directory / "run")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("CI", None)  # CI=true makes transformers' logger propagate; users' shells do not set it
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "train", experiment, "--workdir", workdir,
                             "--set", "train.max_steps=2", "--set", "train.progress_bar=true"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return experiment, workdir, result.stderr


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mgpt {metadata.version('mgpt')}\n"


def test_log_level_is_one_of_four(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--log-level", "loud", "compare", "x"])
    assert "argument --log-level: invalid choice: 'loud'" in capsys.readouterr().err


@pytest.mark.parametrize("level, mgpt_level, library_level", [
    ("debug", logging.DEBUG, logging.WARNING), ("info", logging.INFO, logging.WARNING),
    ("warning", logging.WARNING, logging.WARNING), ("error", logging.ERROR, logging.ERROR)])
def test_log_levels_of_mgpt_and_of_the_libraries(level, mgpt_level, library_level):
    log_setup.configure(level)
    assert logging.getLogger("mgpt").getEffectiveLevel() == mgpt_level
    # JAX's backend probe logs "Unable to initialize backend 'tpu'" at INFO through this logger
    assert logging.getLogger("jax._src.xla_bridge").getEffectiveLevel() == library_level
    assert logging.getLogger("transformers").getEffectiveLevel() == library_level
    assert os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] == "1"


def test_the_simulated_machine_without_torch_is_what_transformers_complains_about():
    # The reference for the next test: without mgpt's settings, importing transformers there prints the line.
    switches = ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "TRANSFORMERS_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in switches}
    result = subprocess.run([sys.executable, "-c", NO_TORCH + "import transformers\n"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert "PyTorch was not found" in result.stderr


def test_a_cpu_run_has_no_library_noise_and_a_short_summary(quiet_run):
    _, _, stderr = quiet_run
    assert "PyTorch was not found" not in stderr
    assert "Unable to initialize backend" not in stderr
    assert "it/s" not in stderr and "train:" not in stderr  # stderr is a pipe: no progress bar
    messages = [line.split(" mgpt: ", 1)[1] for line in stderr.splitlines() if " INFO mgpt: " in line]
    start = next(i for i, m in enumerate(messages) if m.startswith("model: "))
    summary = messages[start: start + 6]
    assert summary[0].endswith("(gpt2, float32); task sequence_classification")
    assert summary[1:3] == ["labels (2): neg, pos", "examples: train 44, validation 16, test 20"]
    assert summary[3].startswith("parameters: ") and summary[3].endswith(" trainable")
    total, trainable = (int(part.split()[0]) for part in summary[3][len("parameters: "):].split(", "))
    assert total == trainable > 0
    assert summary[4] == "devices: 8 cpu; mesh data=8 (rules dp)"  # tests/conftest.py's eight CPU devices
    assert summary[5] == "steps: 6 per epoch of batch 8, 2 in all (train.max_steps)"  # 44 examples / 8, rounded up


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_evaluation_and_prediction_draw_a_bar_on_a_terminal_only(quiet_run, tmp_path, monkeypatch, command):
    experiment, workdir, _ = quiet_run
    source = tmp_path / "input.csv"
    source.write_text("review\n" + "".join(f"the movie was {w}\n" for w in ["great", "awful"] * 5))
    args = {"eval": ["--split", "test", "--output", str(tmp_path / "report.json")],
            "predict": ["--input", str(source), "--output", str(tmp_path / "predictions.jsonl")]}[command]
    for bar in ("true", "false"):
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert cli.main([command, experiment, "--checkpoint", workdir, "--set", f"train.progress_bar={bar}",
                         *args]) == 0
        drawn = terminal.getvalue()
        if bar == "false":
            assert "it/s" not in drawn
        elif command == "eval":  # (cleared when done: leave=False)
            assert "\rtest:   0%|" in drawn and "| 0/3 [" in drawn  # 20 test examples in batches of 8
        else:
            assert "\rpredict:   0%|" in drawn and "| 0/2 [" in drawn  # 10 lines in batches of 8
    monkeypatch.undo()


def test_log_level_warning_silences_mgpt_info(quiet_run, tmp_path, caplog):
    experiment, workdir, _ = quiet_run
    output = str(tmp_path / "report.json")
    base = ["eval", experiment, "--checkpoint", workdir, "--split", "test", "--output", output]
    assert cli.main(base) == 0
    assert any(r.name == "mgpt" and r.levelno == logging.INFO for r in caplog.records)
    caplog.clear()
    assert cli.main(["--log-level", "warning", *base]) == 0
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    with open(output) as f:
        assert json.load(f)["num_examples"] == 20
