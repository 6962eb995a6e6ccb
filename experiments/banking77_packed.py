"""Banking77 intents with all-MiniLM-L6-v2 on packed rows: several queries per 64-token row.

    mgpt train experiments/banking77_packed.py --workdir runs/banking77_packed

The data, model and schedule of experiments/banking77_intent.py, with ``data.pack``: training queries are
packed best-fit into rows of ``data.max_length`` tokens; the BERT pooler and the classifier score each
query of a row on its own [CLS] (attention and positions stay per query). A batch is 8 rows, about the
32 queries of the unpacked run's batch. Evaluation is per query. Timed against PyTorch by
``python experiments/benchmarks/epoch_compare.py banking77 --pack --pack-rows 8``.
"""

import dataclasses
import os

from mgpt.config import load_experiment

UNPACKED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "banking77_intent.py")
ROWS_PER_BATCH = 8  # Banking77 queries average ~14 sub-words: ~4 per 64-token row


def get_config():
    config = load_experiment(UNPACKED)
    return dataclasses.replace(config, name="banking77_packed", data=dataclasses.replace(config.data, pack=True),
                               train=dataclasses.replace(config.train, batch_size=ROWS_PER_BATCH))
