"""How much the ``mgpt`` command says: mgpt's own log at the chosen level, libraries only when something is wrong.

mgpt's messages (logger ``"mgpt"``) follow ``--log-level``. Every other library logs through the root logger at
WARNING (or higher, with ``--log-level error``), so JAX's INFO probe of absent accelerators ("Unable to initialize
backend 'tpu'") and Orbax's per-save narration stay out of a CPU run. transformers logs through its own handler;
its "advisory" warnings (among them "PyTorch was not found", which only says its PyTorch models are unavailable:
mgpt never uses them) are turned off by its documented switch before it is imported.
"""

from __future__ import annotations

import logging
import os

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_imports(level: str = "info") -> None:
    """Set the environment switches libraries read when they are imported (call before importing them)."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if level == "error":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def configure(level: str = "info") -> None:
    """Log mgpt's messages at ``level`` (one of :data:`LEVELS`) and other libraries' at WARNING or above."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    quiet_imports(level)
    number = getattr(logging, level.upper())
    libraries = max(number, logging.WARNING)
    logging.basicConfig(level=libraries, format=FORMAT)
    logging.getLogger().setLevel(libraries)  # also when a handler was already installed (basicConfig did nothing)
    logging.getLogger("mgpt").setLevel(number)
    logging.getLogger("transformers").setLevel(libraries)
