"""NER on WNUT-17 with all-MiniLM-L6-v2 on packed rows: several sentences per 128-token row.

    mgpt train experiments/wnut17_packed.py --workdir runs/wnut17_packed

The data, model and schedule of experiments/wnut17_minilm.py, with ``data.pack``: training sentences are
packed best-fit into rows of ``data.max_length`` tokens (attention and positions stay per sentence), so
one program compiles and nearly every computed token is real. A batch is 8 rows, which hold about the 32
sentences of the unpacked run's batch (the final metrics' ``train_examples`` / ``train_steps`` says how
many). Evaluation is per sentence, as in the unpacked run. Timed against PyTorch by
``python experiments/benchmarks/epoch_compare.py wnut17 --pack --pack-rows 8``.
"""

import dataclasses
import os

from mgpt.config import load_experiment

UNPACKED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wnut17_minilm.py")
ROWS_PER_BATCH = 8  # WNUT-17 sentences average ~31 sub-words: ~4 per 128-token row


def get_config():
    config = load_experiment(UNPACKED)
    return dataclasses.replace(config, name="wnut17_packed", data=dataclasses.replace(config.data, pack=True),
                               train=dataclasses.replace(config.train, batch_size=ROWS_PER_BATCH))
