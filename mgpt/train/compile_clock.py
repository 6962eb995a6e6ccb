"""Seconds JAX spends turning Python into programs: tracing, lowering and XLA compilation.

JAX reports each phase through ``jax.monitoring``; one listener, registered on first use, adds them up
per thread. The loop reads :func:`seconds` before and after each step, so the figure it reports is the
compile time of the train step alone (bucketed shapes compile once each, the first time they occur).
"""

from __future__ import annotations

import threading

import jax

# The durations jax.monitoring records for one compilation (jax._src.dispatch names them).
COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})

_totals = threading.local()
_registered = False
_lock = threading.Lock()


def _listen(event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
        _totals.seconds = getattr(_totals, "seconds", 0.0) + float(duration)


def seconds() -> float:
    """Compile seconds this thread has spent since the first call (the first call returns 0.0)."""
    global _registered
    with _lock:
        if not _registered:
            jax.monitoring.register_event_duration_secs_listener(_listen)
            _registered = True
    return getattr(_totals, "seconds", 0.0)
