"""docs/architecture.md names only modules that exist (NAME stands for a module to be written), and every family module."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "architecture.md")


def _code_spans() -> list[str]:
    with open(DOC, encoding="utf-8") as f:
        return re.findall(r"`([^`]+)`", f.read())


def _python_files() -> set[str]:
    found = set()
    for top in ("mgpt", "tests"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            found.update(os.path.relpath(os.path.join(folder, name), ROOT) for name in files if name.endswith(".py"))
    return found


def test_every_named_path_exists():
    missing = [span for span in _code_spans()
               if span.startswith(("mgpt/", "tests/")) and "NAME" not in span and not os.path.exists(os.path.join(ROOT, span))]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_named_module_file_exists():
    names = {os.path.basename(path) for path in _python_files()}
    bare = [span for span in _code_spans() if re.fullmatch(r"[a-z_0-9]+\.py", span)]
    assert bare, "expected module names such as `llama.py` in the doc"
    missing = [span for span in bare if span not in names]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_dotted_module_exists():
    dotted = [span for span in _code_spans() if re.fullmatch(r"mgpt(\.[a-z_0-9]+)+", span)]
    missing = []
    for name in dotted:
        parts = name.split(".")
        # the longest prefix that is a module or package; what follows is an attribute (a function)
        if not any(os.path.exists(os.path.join(ROOT, *parts[:n]) + ".py")
                   or os.path.isdir(os.path.join(ROOT, *parts[:n])) for n in range(len(parts), 1, -1)):
            missing.append(name)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_family_module_is_documented():
    families = sorted(name for name in os.listdir(os.path.join(ROOT, "mgpt", "models", "families"))
                      if name.endswith(".py") and name != "__init__.py")
    spans = set(_code_spans())
    assert [name for name in families if name not in spans] == []
