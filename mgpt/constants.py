"""Constants every layer shares; this module imports nothing, so any module may import it."""

IGNORE_INDEX = -100  # the label value losses, metrics and batching skip (the PyTorch / transformers convention)
