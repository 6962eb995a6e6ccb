"""Compressed data files: ``.gz``, ``.bz2`` and ``.xz`` are read as if they were the file they compress.

The suffix decides, as it does for pandas and the ``datasets`` library: ``train.csv.gz`` is a gzip-compressed
CSV file. Every reader opens its files through :func:`mgpt.data.records.text_file`, which asks this module,
so each format reads each compression the same way, line numbers included (they count the decompressed lines).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from typing import IO, Callable

from mgpt.data.errors import DataError

# suffix -> (name in messages, the module's open(path, mode, ...))
COMPRESSIONS = {".gz": ("gzip", gzip.open), ".bz2": ("bzip2", bz2.open), ".xz": ("xz", lzma.open)}

# What the decompressors raise for a file cut short or not in their format: gzip.BadGzipFile and bz2's
# "Invalid data stream" are OSErrors, a truncated stream is an EOFError, damaged deflate data a zlib.error.
READ_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


def _compression(path: str | os.PathLike) -> tuple[str, Callable]:
    """``(name, open)`` of the compression ``path``'s suffix names; ``("", open)`` for a plain file."""
    return COMPRESSIONS.get(os.path.splitext(os.fspath(path))[1].lower(), ("", open))


def compression_of(path: str | os.PathLike) -> str:
    """The compression ``path``'s suffix names ("gzip", "bzip2", "xz"), or "" for a plain file."""
    return _compression(path)[0]


def open_text(path: str, encoding: str, newline: str | None = None) -> IO[str]:
    """``path`` opened as text, decompressed on the fly when its suffix names a compression."""
    return _compression(path)[1](path, "rt", encoding=encoding, newline=newline)


def read_bytes(path: str) -> bytes:
    """The (decompressed) bytes of ``path``."""
    with _compression(path)[1](path, "rb") as f:
        return f.read()


def damaged_file_error(path: str, error: Exception) -> DataError:
    """The one-line error for a compressed file that does not decompress (truncated, or another format)."""
    kind = compression_of(path)
    detail = str(error) or type(error).__name__
    return DataError(f"{path}: cannot decompress this {kind} file ({detail}); expected a complete {kind} file, as "
                     f"its suffix {os.path.splitext(path)[1]!r} says (is it truncated, or not {kind} at all?)")
