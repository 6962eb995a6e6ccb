"""Model layer: GPT-2, BERT/RoBERTa/DistilBERT and Llama-family backbones, task heads, Hugging Face checkpoint I/O."""

from mgpt.models.gguf_export import save_gguf
from mgpt.models.heads import ModelSpec, TaskModel, build_model, make_spec
from mgpt.models.hf import CheckpointError, LoadReport, load_pretrained, load_tokenizer, save_pretrained

__all__ = [
    "CheckpointError",
    "LoadReport",
    "ModelSpec",
    "TaskModel",
    "build_model",
    "load_pretrained",
    "load_tokenizer",
    "make_spec",
    "save_gguf",
    "save_pretrained",
]
