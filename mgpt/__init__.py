"""mgpt: fine-tune pretrained transformer language models with JAX, Flax, Optax and Orbax."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import mgpt.config` does not pull in jax/transformers.
    if name in ("load_pretrained", "save_pretrained", "save_gguf"):
        from mgpt import models

        return getattr(models, name)
    raise AttributeError(f"module 'mgpt' has no attribute {name!r}")


__all__ = ["__version__", "load_pretrained", "save_pretrained", "save_gguf"]
