"""The tokenizer that comes with a checkpoint directory, when it has one.

Weights load without a tokenizer (a directory written by ``model.save_pretrained`` alone has none);
training, evaluation, prediction and generation need one, and :func:`load_tokenizer` says so in one line
naming the directory.
"""

from __future__ import annotations

import os
from typing import Optional

from mgpt.models.hub import TOKENIZER_FILES, resolve_checkpoint_dir
from mgpt.models.safetensors_io import CheckpointError

NEEDED_FOR = "training, evaluation, prediction and generation need one"


def has_tokenizer_files(directory: str) -> bool:
    """Whether ``directory`` holds any of the tokenizer files transformers reads (:data:`TOKENIZER_FILES`)."""
    return any(os.path.isfile(os.path.join(directory, name)) for name in TOKENIZER_FILES)


def missing_tokenizer_message(directory: str, needed_for: str = NEEDED_FOR) -> str:
    """The one line said when ``directory`` has no tokenizer files and something needs them."""
    return (f"{directory} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); {needed_for}: "
            "save the base model's tokenizer there (tokenizer.save_pretrained) or copy its tokenizer files in")


def find_tokenizer(directory: str):
    """The directory's tokenizer (see :func:`load_tokenizer`), or None when it has no tokenizer files.

    Tokenizer files that are present but do not load are an error, never a silent None.
    """
    if not has_tokenizer_files(directory):
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:
        raise CheckpointError(f"{directory}: could not load a tokenizer ({type(exc).__name__}: {exc})") from exc
    return prepare_tokenizer(tokenizer, directory)


def prepare_tokenizer(tokenizer, where: str):
    """Check a loaded tokenizer is fast and set mgpt's conventions: right padding, pad = eos when it has none."""
    directory = where
    if not getattr(tokenizer, "is_fast", False):
        got = type(tokenizer).__name__
        raise CheckpointError(f"{directory}: mgpt needs a fast tokenizer (tokenizer.json); got {got}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CheckpointError(f"{directory}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike, needed_for: Optional[str] = None):
    """The checkpoint's fast tokenizer, right padding, pad token = eos when it has none (GPT-2, Llama).

    Accepts the same local directory or Hub id as :func:`mgpt.models.load_pretrained`. A directory without
    tokenizer files raises :class:`CheckpointError` with :func:`missing_tokenizer_message` (``needed_for``
    says what needs it; default: training, evaluation, prediction and generation).
    """
    from mgpt.models import gguf_read

    if gguf_read.is_gguf(name_or_path):  # a llama.cpp file carries its tokenizer in the metadata

        directory = os.fspath(name_or_path)
        tokenizer = gguf_read.gguf_tokenizer(directory)
        tokenizer = None if tokenizer is None else prepare_tokenizer(tokenizer, directory)
    else:
        directory = resolve_checkpoint_dir(name_or_path)
        tokenizer = find_tokenizer(directory)
    if tokenizer is None:
        raise CheckpointError(missing_tokenizer_message(directory, needed_for or NEEDED_FOR))
    return tokenizer
