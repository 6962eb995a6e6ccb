"""Banking77 intents with all-MiniLM-L6-v2, trained on augmented queries and scored on perturbed ones.

    mgpt train experiments/banking77_augment.py --workdir runs/banking77_augment

The data, model and schedule of experiments/banking77_intent.py (shared/data/banking77 next to the checkout,
or MGPT_BANKING77_DIR), plus:

- ``data.augment``: each training query, at each step, gets random word swaps (10% of its words), word
  deletions (10%) and keyboard typos (3% of its characters), seeded by (train.seed, step, example), so a
  resumed run sees the same batches;
- ``train.eval_perturbations``: every evaluation also scores copies of the split with typos at 5% and 10% of
  the characters and with 10% of the words deleted (the same copies in every run), reported as
  ``<split>@char:0.05/accuracy`` etc. with the drop from the clean score (``..._drop``).

Compare with ``mgpt train experiments/banking77_intent.py --set train.eval_perturbations="('char:0.05',
'char:0.1','delete:0.1')"`` for the same robustness report without augmentation.
"""

import dataclasses
import os

from mgpt.config import load_experiment

PLAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "banking77_intent.py")
AUGMENT = ("swap:0.1", "delete:0.1", "char:0.03")
PERTURBATIONS = ("char:0.05", "char:0.1", "delete:0.1")


def get_config():
    config = load_experiment(PLAIN)
    return dataclasses.replace(config, name="banking77_augment",
                               data=dataclasses.replace(config.data, augment=AUGMENT),
                               train=dataclasses.replace(config.train, eval_perturbations=PERTURBATIONS))
