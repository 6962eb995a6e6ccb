"""One module per model family; importing this package registers every family (see mgpt.models.family)."""

from mgpt.models.families import (  # noqa: F401 -- imported for their register() calls
    bert,
    distilbert,
    gemma,
    gpt2,
    llama,
    mistral,
    phi3,
    qwen2,
    qwen3,
    roberta,
)
