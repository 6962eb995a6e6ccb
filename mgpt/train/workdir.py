"""One training process per workdir: an exclusive lock on ``<workdir>/.lock``.

Two runs writing the same checkpoints and ``metrics.jsonl`` corrupt both, so :func:`lock_workdir` makes
the second one fail at once with :class:`WorkdirLocked`, naming the process that holds the workdir.

How: ``fcntl.flock`` on the lock file, which also records the holder's pid and host. We use flock rather
than creating the file with ``O_CREAT | O_EXCL`` because the kernel drops a flock when its process dies
(even on SIGKILL or an out-of-memory kill), so a crash never leaves a lock that blocks this host, and
taking over after a crash is the same atomic call as taking a free lock. With an ``O_EXCL`` file a
take-over must delete and recreate the file, and two processes doing that at once can both win.

The recorded holder is what tells a crash from a clean exit: a clean release empties the file, so a
free flock on a file that still names a holder means that holder died without releasing. On this host
that is certain (it would still hold the flock), and the lock is taken over with a warning. A holder on
another host is trusted to be alive: flock may not reach across hosts on a network filesystem, so only
the user can know that run is gone (the error says which file to delete).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from typing import Iterator

log = logging.getLogger("mgpt")

LOCK_FILE = ".lock"


class WorkdirLocked(RuntimeError):
    """Another process holds the training workdir (the message names the workdir, pid and host)."""


def lock_path(workdir: str) -> str:
    """The lock file of ``workdir``."""
    return os.path.join(workdir, LOCK_FILE)


def read_holder(workdir: str) -> dict | None:
    """The pid, host and start time recorded in ``workdir``'s lock file; None when nobody is recorded."""
    try:
        with open(lock_path(workdir)) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return _parse_holder(text)


@contextlib.contextmanager
def lock_workdir(workdir: str) -> Iterator[dict]:
    """Hold ``workdir`` exclusively for the ``with`` block; yields this process's holder record.

    Raises :class:`WorkdirLocked` at once (no waiting) when another live process holds it. A lock left
    by a process of this host that died is taken over with a warning. Released on exit, exceptions too.
    """
    os.makedirs(workdir, exist_ok=True)
    fd, holder = _acquire(workdir)
    try:
        yield holder
    finally:
        _release(fd)


def _acquire(workdir: str) -> tuple[int, dict]:
    path = lock_path(workdir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise WorkdirLocked(_locked_message(workdir, _parse_holder(_read_fd(fd)))) from None
        previous = _parse_holder(_read_fd(fd))
        if previous is not None:
            _check_stale(workdir, previous)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_fd(fd, json.dumps(holder) + "\n")
        return fd, holder
    except BaseException:
        os.close(fd)  # closing drops the flock, if we got it
        raise


def _check_stale(workdir: str, previous: dict) -> None:
    """``previous`` is recorded but holds no flock: take over from a dead holder of this host, else refuse."""
    if "unreadable" in previous:  # torn by a crash while it was written (it is written under the flock)
        log.warning("%s: taking over a lock whose record is unreadable (%r)", workdir, previous["unreadable"])
        return
    if previous.get("host") != socket.gethostname():
        raise WorkdirLocked(_locked_message(workdir, previous, other_host=True))
    pid = previous.get("pid")
    # The flock is free, so the recorded process is gone; a live pid now is a reused one.
    state = "is gone" if not _alive(pid) else "no longer holds it (the pid was reused)"
    log.warning("%s: taking over a stale lock: pid %s on %s %s (that run ended without releasing it)",
                workdir, pid, previous.get("host"), state)


def _release(fd: int) -> None:
    # Empty the record before the flock goes: an empty file is what a clean exit leaves.
    try:
        os.ftruncate(fd, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _locked_message(workdir: str, holder: dict | None, other_host: bool = False) -> str:
    known = holder is not None and "pid" in holder
    who = f"pid {holder['pid']} on host {holder.get('host')}" if known else "another process"
    since = f" since {holder['since']}" if holder and holder.get("since") else ""
    message = f"workdir {workdir} is in use by {who}{since}; one training process per workdir"
    if other_host:
        message += (f" (it runs on another host, so this one cannot check that it is alive; if that run is "
                    f"gone, delete {lock_path(workdir)})")
    return message


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _parse_holder(text: str) -> dict | None:
    text = text.strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    return holder if isinstance(holder, dict) else {"unreadable": text[:80]}


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _write_fd(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())
    os.fsync(fd)
