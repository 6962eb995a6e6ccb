"""A checkpoint name or path -> a local directory: a local directory as is, a Hugging Face Hub id downloaded.

Only config, safetensors weights and tokenizer files are fetched, never pickles. With ``HF_HUB_OFFLINE=1`` a
Hub id fails at once, saying to pass a local directory, instead of waiting on the network.
"""

from __future__ import annotations

import os

from mgpt.models.safetensors_io import INDEX_FILE, CheckpointError

# The files transformers' AutoTokenizer reads; any one of them means the directory has a tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
# Files fetched from the Hub: config, safetensors weights and tokenizer files only (never pickles).
HUB_ALLOW_PATTERNS = ["config.json", "model.safetensors", "model-*.safetensors", INDEX_FILE, *TOKENIZER_FILES]


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_checkpoint_dir(name_or_path: str | os.PathLike) -> str:
    """A local directory as is; a Hub id is downloaded (config, safetensors, tokenizer files only) when online."""
    text = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(text):
        return text
    if os.path.exists(text):
        raise CheckpointError(f"{text} is a file; pass the checkpoint directory that holds config.json")
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or not text
    if looks_like_path:
        raise CheckpointError(f"checkpoint directory not found: {text!r}")
    hint = "pass a local directory holding config.json, model.safetensors and (for training) the tokenizer files"
    if offline():
        raise CheckpointError(f"{text!r} is not a local directory and HF_HUB_OFFLINE=1 forbids downloading it; {hint}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id=text, allow_patterns=HUB_ALLOW_PATTERNS)
    except Exception as exc:  # network, auth, missing repo: all end the same way
        raise CheckpointError(
            f"could not download {text!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
