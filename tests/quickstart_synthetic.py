"""The quickstart experiment pointed at the synthetic set in mgpt/assets/quickstart: the tests' fast stand-in for
its real Rotten Tomatoes data (320 / 64 / 128 templated sentences, about a minute of training)."""

from importlib import resources


def synthetic_overrides() -> list[str]:
    """``--set`` overrides that make experiments/quickstart.py train on the bundled synthetic files."""
    assets = resources.files("mgpt") / "assets" / "quickstart"
    return [
        f"data.train_file={assets / 'train.csv'}",
        f"data.validation_file={assets / 'validation.csv'}",
        f"data.test_file={assets / 'test.csv'}",
        "data.label_column=label", "data.label_map={}", "data.labels=[]", "data.max_examples=0",
        "data.validation_ratio=0", "data.test_ratio=0", "data.max_length=32",
        "train.batch_size=16", "train.eval_batch_size=64", "train.log_every=5", "train.eval_every=20",
    ]
