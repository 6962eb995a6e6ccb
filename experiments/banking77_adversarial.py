"""Banking77 intents with all-MiniLM-L6-v2 and adversarial training on the input embeddings (FGM).

    mgpt train experiments/banking77_adversarial.py --workdir runs/banking77_fgm
    mgpt train experiments/banking77_adversarial.py --set robust.adversarial=freelb --set robust.steps=3

The data, model and optimizer of experiments/banking77_intent.py, with ``robust.adversarial=fgm``: every step
also trains on the embeddings moved by ``epsilon * g / ||g||`` (g: the loss gradient with respect to the word
embeddings, its L2 norm taken per query over its real tokens), averaging the clean and the adversarial loss.
``--set robust.adversarial=pgd|freelb|smart`` swaps the method (``robust.steps``, ``robust.step_size``);
``--set robust.rdrop_alpha=1`` adds R-Drop. Evaluation also scores typo'd and word-dropped copies of the
validation and test splits (``train.eval_perturbations``) and reports the drop. Compared with plain fine-tuning
and the other methods by ``python experiments/benchmarks/robust_compare.py``.
"""

import dataclasses
import os

from mgpt.config import load_experiment

PLAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "banking77_intent.py")
ROBUST = dict(adversarial="fgm", epsilon=0.1)  # per query; 1.0 (norm of a whole word embedding) stops learning
PERTURBATIONS = ("char:0.05", "char:0.1", "delete:0.1")  # typos at 5% and 10% of characters; 10% of words dropped


def get_config():
    config = load_experiment(PLAIN)
    return dataclasses.replace(
        config, name="banking77_adversarial",
        robust=dataclasses.replace(config.robust, **ROBUST),
        train=dataclasses.replace(config.train, eval_perturbations=PERTURBATIONS),
    )
