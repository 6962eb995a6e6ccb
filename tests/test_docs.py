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


# --- every page under docs/: paths, config keys, commands, experiments, README links, mkdocs -----------------

DOCS = os.path.join(ROOT, "docs")
SECTIONS = ("model", "data", "task", "optimizer", "train", "parallel", "checkpoint", "peft", "robust")
# A repository path as the pages write it (in backticks, in code blocks or in prose).
_PATH = re.compile(r"(?<![\w./-])((?:mgpt|experiments|tests)/[\w./-]*\w)")
# `section.key` in inline code; not part of a dotted name (mgpt.train.loop), a path, a call (model.apply(...))
# or a class of another library (peft.PeftModel): config fields are lower case.
_KEY = re.compile(r"(?<![\w./-])(" + "|".join(SECTIONS) + r")\.([a-z_]\w*)(?![\w(])")
# `train.csv`, `data.json`: file names that read like section.key
_FILE_SUFFIXES = {"py", "md", "json", "jsonl", "csv", "tsv", "conll", "txt", "sh", "gguf", "png", "yml", "yaml",
                  "safetensors"}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_SUBCOMMANDS = ("train", "eval", "predict", "generate", "convert", "bench")


def _pages() -> dict[str, str]:
    """Every Markdown page under docs/, by path relative to docs/."""
    pages = {}
    for folder, _, files in os.walk(DOCS):
        for name in files:
            if name.endswith(".md"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    pages[os.path.relpath(path, DOCS)] = f.read()
    return dict(sorted(pages.items()))


def _blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def _inline_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", _FENCE.sub("", text))


def _invocations(text: str) -> list[list[str]]:
    """The argument lists of every `mgpt <subcommand> ...` in the page's bash blocks, also inside a quoted
    --command="..." or after `srun ...` / `until ...`."""
    import shlex

    found = []

    def scan(tokens):
        for i, token in enumerate(tokens):
            if "mgpt " in token and token != "mgpt":  # a quoted command line inside an argument
                scan(shlex.split(token.split("=", 1)[-1]))
            elif token == "mgpt" and i + 1 < len(tokens) and tokens[i + 1] in _SUBCOMMANDS:
                args = []
                for arg in tokens[i + 1:]:
                    if arg in (";", "&&", "||", "|", "do"):
                        break
                    args.append(arg.rstrip(";"))
                    if arg.endswith(";"):
                        break
                found.append(args)

    for block in _blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            scan(shlex.split(line, comments=True))
    return found


def test_every_docs_page_names_only_paths_that_exist():
    missing = {}
    for page, text in _pages().items():
        names = {m.rstrip(".") for m in _PATH.findall(text) if "NAME" not in m}
        gone = sorted(n for n in names if not os.path.exists(os.path.join(ROOT, n)))
        if gone:
            missing[page] = gone
    assert not missing, f"docs pages name paths that do not exist: {missing}"


def test_every_docs_page_names_only_real_config_keys():
    import dataclasses

    from mgpt import config

    fields = {section: {f.name for f in dataclasses.fields(config.ExperimentConfig.__dataclass_fields__[section]
                                                           .default_factory)} for section in SECTIONS}
    named, unknown = set(), {}
    for page, text in _pages().items():
        spans = _inline_spans(text) + [arg for args in _invocations(text) for arg in args]
        for section, key in (m for span in spans for m in _KEY.findall(span)):
            if key in _FILE_SUFFIXES:
                continue
            named.add(f"{section}.{key}")
            if key not in fields[section]:
                unknown.setdefault(page, set()).add(f"{section}.{key}")
    assert not unknown, f"docs pages name config keys that mgpt/config.py does not have: {unknown}"
    assert len(named) > 100, f"expected the pages to document many config keys, found {len(named)}"


def test_every_command_in_the_docs_parses_and_its_overrides_apply():
    """Each `mgpt ...` line of a bash block is accepted by the real argument parser, and each --set applies to
    the config (known key, value of the right type)."""
    from mgpt import cli, config

    parser, bad, count = cli.build_parser(), [], 0
    for page, text in _pages().items():
        for args in _invocations(text):
            count += 1
            try:
                parsed = parser.parse_args(args)
            except SystemExit:
                bad.append(f"{page}: mgpt {' '.join(args)}")
                continue
            for override in getattr(parsed, "overrides", []):
                try:
                    config.apply_overrides(config.ExperimentConfig(), [override])
                except config.ConfigError as error:
                    bad.append(f"{page}: --set {override}: {error}")
    assert not bad, "\n".join(bad)
    assert count >= 40, f"expected the pages to show many commands, found {count}"


def _run_block(code: str, where: str) -> dict:
    namespace = {"__name__": f"docs_example_{abs(hash(where))}"}
    exec(compile(code, where, "exec"), namespace)  # noqa: S102 -- the docs' own example code
    return namespace


def test_every_experiment_in_the_docs_validates():
    """The experiment files the pages show build a config that passes every field and cross-field rule."""
    from mgpt.train.validate import validate

    checked = []
    for page, text in _pages().items():
        for index, code in enumerate(_blocks(text, "python")):
            if "def get_config" not in code:
                continue
            namespace = _run_block(code, f"docs/{page} block {index}")
            config = validate(namespace["get_config"]())
            checked.append((page, config.task.kind))
    kinds = {kind for _, kind in checked}
    assert {"sequence_classification", "token_classification", "regression", "generation"} <= kinds, checked
    assert {page for page, _ in checked} >= {"peft.md", "robust.md"}, checked


def test_other_python_in_the_docs_names_what_exists():
    """Code that is not an experiment: its imports run and each `module.attribute` it uses exists."""
    import ast
    import importlib

    missing = []
    for page, text in _pages().items():
        for code in _blocks(text, "python"):
            if "def get_config" in code:
                continue
            tree = ast.parse(code)
            modules = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    base = importlib.import_module(node.module)
                    for alias in node.names:
                        value = getattr(base, alias.name, None)
                        if value is None:
                            try:
                                value = importlib.import_module(f"{node.module}.{alias.name}")
                            except ImportError:
                                missing.append(f"{page}: from {node.module} import {alias.name}")
                                continue
                        modules[alias.asname or alias.name] = value
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                        and node.value.id in modules and not hasattr(modules[node.value.id], node.attr):
                    missing.append(f"{page}: {node.value.id}.{node.attr}")
    assert not missing, missing


def test_readme_links_every_docs_page():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    unlinked = [page for page in _pages() if f"](docs/{page})" not in readme]
    assert not unlinked, f"README.md links no page {unlinked}"


def test_mkdocs_site_lists_every_page_and_builds_strictly(tmp_path):
    """mkdocs.yml's nav holds every page, and `mkdocs build --strict` passes (a broken link between pages fails)."""
    import subprocess
    import sys

    import yaml

    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        site = yaml.safe_load(f)

    def listed(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from (listed(value) if isinstance(value, list) else [value])

    assert sorted(listed(site["nav"])) == sorted(_pages())
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "tasks" / "generation" / "index.html").is_file()
