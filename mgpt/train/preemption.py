"""Pre-emption: SIGTERM (what schedulers and cloud VMs send before they reclaim a machine) and SIGINT
(Ctrl-C) become a request that the loop honours at the next step boundary: it saves that step, waits for
the save to finish, and ends with :class:`mgpt.train.errors.Interrupted` (the CLI exits with status 3).

On one host the handlers are ours. On several hosts every process must stop at the same step, so no
handler is installed and the decision is JAX's pre-emption sync point
(``multihost_utils.reached_preemption_sync_point``, fed by the coordination service that
``jax.distributed.initialize`` starts, which sees the SIGTERM). A second signal while stopping restores the
default handler, so it ends the process at once.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax

log = logging.getLogger("mgpt")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """A context manager that installs the handlers; :meth:`requested` says whether to stop after ``step``."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        # Handlers install only in the main thread; several hosts leave signals to JAX's notifier.
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.signal_name = name
        log.warning("%s received: saving the current step and stopping (send it again to stop at once)", name)

    def requested(self, step: int) -> bool:
        """Whether to stop after ``step`` (on several hosts: whether all agree to stop at it)."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            try:
                stop = multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # jax.distributed started without the pre-emption service
                return False
            if stop:
                self.signal_name = "SIGTERM"
            return stop
        return self.signal_name is not None
