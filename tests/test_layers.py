"""No import runs back up the layers: every mgpt module imports only its own layer and the ones below.

The layers, lowest first (``LAYERS``; a module belongs to the longest prefix that names it):

0. foundation -- ``mgpt.config`` (with ``mgpt.config_parse``) and the modules that import nothing of mgpt
   but the config: ``mgpt.constants``, ``mgpt.known_models``, ``mgpt.known_data`` (files that packages ship; known_models finds its files through it),
   ``mgpt.log_setup`` (the command's logging levels), ``mgpt.losses``, ``mgpt.metrics``,
   ``mgpt.text_metrics``, ``mgpt.optim`` (Optax from ``OptimizerConfig``), and ``mgpt.assets`` (a
   stand-alone data generator script).
1. ``mgpt.data``: read records, clean, split, encode, batch.
2. ``mgpt.models``, with ``mgpt.parallel`` (meshes and layouts over the models' logical axes) and
   ``mgpt.generate`` (KV-cache decoding of a model over ``mgpt.data`` batches).
3. ``mgpt.peft`` and ``mgpt.robust``: transforms of params, forward pass and loss.
4. ``mgpt.tasks``: pure encode / loss / predict / metrics; never ``mgpt.train``.
5. ``mgpt.train``: run assembly, loop, steps, evaluation, checkpoints; with ``mgpt.bench`` (times the
   train step) and ``mgpt.apps`` (the monitor and ranking: pure cores, and runners over trained runs).
6. ``mgpt.cli`` and ``mgpt.serve`` (the commands), and the ``mgpt`` package itself (its lazy facade
   re-exports ``load_pretrained`` / ``save_pretrained``, so importing names from ``mgpt`` counts as the top).

Imports inside functions count too: a lazy import is still a dependency. A new module lands in its
package's layer; a new top-level module must be added to ``LAYERS`` (the test says so).
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = (
    ("foundation", ("mgpt.config", "mgpt.config_parse", "mgpt.constants", "mgpt.known_models", "mgpt.known_data",
                    "mgpt.log_setup", "mgpt.losses",
                    "mgpt.metrics", "mgpt.text_metrics", "mgpt.optim", "mgpt.assets")),
    ("data", ("mgpt.data",)),
    ("models", ("mgpt.models", "mgpt.parallel", "mgpt.generate")),
    ("peft", ("mgpt.peft", "mgpt.robust")),
    ("tasks", ("mgpt.tasks",)),
    ("train", ("mgpt.train", "mgpt.bench", "mgpt.apps")),
    ("cli", ("mgpt.cli", "mgpt.serve", "mgpt")),  # "mgpt" is the package alone, not a prefix of every module
)


def layer_of(module: str) -> int | None:
    """Index into ``LAYERS`` of ``module`` (longest matching prefix), or None when no layer names it."""
    best, length = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix != "mgpt"
            if (module == prefix or below) and len(prefix) > length:
                best, length = rank, len(prefix)
    return best


def package_modules(root: str = ROOT) -> dict[str, str]:
    """Dotted name -> file of every Python module under ``mgpt/``."""
    out = {}
    for directory, _, files in os.walk(os.path.join(root, "mgpt")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every mgpt module that ``source`` (the text of ``module``) imports.

    ``from a import b`` names ``a.b`` when that is a module, else ``a``; relative imports are resolved.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if target in known else base))
    return sorted((line, name) for line, name in found if name == "mgpt" or name.startswith("mgpt."))


def violations(root: str = ROOT) -> list[str]:
    """One line per import under ``root/mgpt`` that points up the layers (or module no layer places)."""
    modules = package_modules(root)
    known, out = set(modules), []
    for module, path in sorted(modules.items()):
        rank = layer_of(module)
        if rank is None:
            out.append(f"{module}: in no layer; add it to LAYERS in tests/test_layers.py")
            continue
        with open(path) as f:
            source = f.read()
        for line, target in imported_modules(source, module, path.endswith("__init__.py"), known):
            target_rank = layer_of(target)
            if target_rank is not None and target_rank > rank:
                out.append(f"{os.path.relpath(path, root)}:{line}: {module} ({LAYERS[rank][0]}) imports "
                           f"{target} ({LAYERS[target_rank][0]}), a higher layer")
    return out


def test_no_import_points_up_the_layers():
    problems = violations()
    assert not problems, "imports up the layers:\n" + "\n".join(problems)


def test_every_top_level_module_has_a_layer():
    unplaced = [m for m in package_modules() if layer_of(m) is None]
    assert unplaced == []
    assert layer_of("mgpt.train.setup") == layer_of("mgpt.train") == 5
    assert layer_of("mgpt.tasks.generation") == 4
    assert layer_of("mgpt") == 6 and layer_of("mgpt.models.llama") == 2
    assert layer_of("mgpt.not_placed_yet") is None  # the package's own layer is not a catch-all


def test_checker_flags_upward_imports(tmp_path):
    # A tiny package with one upward import of each form (absolute, from-import, relative, lazy, the facade)
    # and downward ones: exactly the upward ones are reported, with their lines.
    for package in ("mgpt", "mgpt/tasks", "mgpt/train"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "mgpt" / "losses.py").write_text("")
    (tmp_path / "mgpt" / "cli.py").write_text("from mgpt.train import loop\n")
    (tmp_path / "mgpt" / "train" / "loop.py").write_text("from mgpt.tasks import bad\nfrom .. import losses\n")
    (tmp_path / "mgpt" / "tasks" / "bad.py").write_text(
        "import mgpt.train.loop\n"
        "from mgpt.train import loop\n"
        "from ..train.loop import train\n"
        "def f():\n"
        "    from mgpt import cli\n"
        "from mgpt import losses\n"
        "from . import bad\n"
        "from mgpt import load_pretrained\n"
    )
    problems = violations(str(tmp_path))
    where = os.path.join("mgpt", "tasks", "bad.py")
    assert problems == [
        f"{where}:1: mgpt.tasks.bad (tasks) imports mgpt.train.loop (train), a higher layer",
        f"{where}:2: mgpt.tasks.bad (tasks) imports mgpt.train.loop (train), a higher layer",
        f"{where}:3: mgpt.tasks.bad (tasks) imports mgpt.train.loop (train), a higher layer",
        f"{where}:5: mgpt.tasks.bad (tasks) imports mgpt.cli (cli), a higher layer",
        f"{where}:8: mgpt.tasks.bad (tasks) imports mgpt (cli), a higher layer",
    ]
