"""Banking77 intents with all-MiniLM-L6-v2 and the fine-tuning regularizers: label smoothing, layer-wise
learning-rate decay, L2-SP and an exponential moving average of the weights.

    mgpt train experiments/banking77_regularized.py --workdir runs/banking77_regularized

The data, model and optimizer of experiments/banking77_intent.py (the same shared/data/banking77 files next to
the checkout, or MGPT_BANKING77_DIR), with:

- ``task.label_smoothing=0.1``: cross-entropy against optax.smooth_labels(one_hot, 0.1);
- ``optimizer.layer_lr_decay=0.9``: layer i of the 6 trains at lr * 0.9 ** (6 - i), the embeddings at
  lr * 0.9 ** 7, the pooler and classifier at lr;
- ``optimizer.l2_sp=0.01`` with ``optimizer.weight_decay=0``: the encoder decays toward its pretrained
  weights instead of toward zero;
- ``optimizer.ema_decay=0.999``: evaluation, the best checkpoint and the final reports use the average
  (``train.eval_ema``, on by default).

An average at 0.999 forgets its starting point (the pretrained encoder and an untrained classifier) with a
time constant of 1 / (1 - 0.999) = 1000 steps, while the 2 epochs of banking77_intent.py are ~560 steps of
32: this run trains for 8 epochs (~2250 steps) so that the average is mostly made of trained weights. For a
shorter run, ``--set optimizer.ema_warmup=true`` lowers the decay of update t to (1 + t) / (10 + t) while that
is below 0.999: after 10 updates the starting point weighs 6e-5 in the average.
"""

import dataclasses
import os

from mgpt.config import load_experiment

PLAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "banking77_intent.py")
REGULARIZERS = dict(label_smoothing=0.1, layer_lr_decay=0.9, l2_sp=0.01, weight_decay=0.0, ema_decay=0.999)
NUM_EPOCHS = 8  # several EMA time constants (1000 steps) of 32 examples: see the docstring


def get_config():
    config = load_experiment(PLAIN)
    r = REGULARIZERS
    return dataclasses.replace(
        config,
        name="banking77_regularized",
        task=dataclasses.replace(config.task, label_smoothing=r["label_smoothing"]),
        optimizer=dataclasses.replace(config.optimizer, layer_lr_decay=r["layer_lr_decay"], l2_sp=r["l2_sp"],
                                      weight_decay=r["weight_decay"], ema_decay=r["ema_decay"]),
        train=dataclasses.replace(config.train, num_epochs=NUM_EPOCHS, eval_ema=True),
    )
