"""Dropout placement and rates against PyTorch, site by site.

The AdamW parity test (test_torch_training_parity.py) runs with dropout off, so it cannot see a dropout
site that is missing, extra or at another rate. Each site adds its own spread to the training-mode logits:
with one kind of dropout on at a time (hidden: embeddings, attention output and FFN output; attention
probabilities; the classifier's), the variance of the logits over a few hundred masks must be the same
in mgpt and in transformers (within 10%), while the same comparison against PyTorch at rate 0.2
instead of 0.3 must come out clearly different (a control that shows the test can tell).
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification

import mgpt

from fixtures_tiny import tiny_bert

SAMPLES = 400


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropout")
    base = tiny_bert(root / "bert", initializer_range=0.2)
    _, params, spec, tokenizer = mgpt.load_pretrained(base, task="token_classification", num_labels=5, seed=3)
    exported = str(root / "exported")
    mgpt.save_pretrained(exported, spec, params, tokenizer)  # the same initialised head for both frameworks
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 30, (8, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[2, 7:] = 0
    return root, exported, ids, mask


def _with_rates(setup, hidden, attention, classifier) -> str:
    """A copy of the exported checkpoint whose config.json sets these dropout rates (read by both frameworks)."""
    root, exported, _, _ = setup
    out = str(root / f"rates_{hidden}_{attention}_{classifier}")
    if not os.path.exists(out):
        shutil.copytree(exported, out)
        with open(os.path.join(out, "config.json")) as f:
            config = json.load(f)
        config.update(hidden_dropout_prob=hidden, attention_probs_dropout_prob=attention,
                      classifier_dropout=classifier)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(config, f)
    return out


def _spread(logits, mask) -> float:
    """Variance over the samples (the batch holds SAMPLES copies of it) at real positions, averaged."""
    logits = np.asarray(logits).reshape(SAMPLES, *mask.shape, -1)
    return float(logits.var(axis=0)[mask.astype(bool)].mean())


def _mgpt_variance(setup, rates):
    _, _, ids, mask = setup
    model, params, _, _ = mgpt.load_pretrained(_with_rates(setup, *rates), task="token_classification", num_labels=5)
    # Every copy of the batch draws its own dropout masks: one forward pass gives all the samples.
    logits = model.apply({"params": params}, np.tile(ids, (SAMPLES, 1)), attention_mask=np.tile(mask, (SAMPLES, 1)),
                         deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    return _spread(logits, mask)


def _torch_variance(setup, rates):
    _, _, ids, mask = setup
    model = AutoModelForTokenClassification.from_pretrained(_with_rates(setup, *rates))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(np.tile(ids, (SAMPLES, 1)), dtype=torch.long),
                       attention_mask=torch.tensor(np.tile(mask, (SAMPLES, 1)), dtype=torch.long)).logits
    return _spread(logits.numpy(), mask)


@pytest.mark.parametrize("site", ["hidden", "attention", "classifier"])
def test_each_dropout_site_spreads_the_logits_as_in_pytorch(setup, site):
    index = ["hidden", "attention", "classifier"].index(site)
    rates, lower = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    rates[index], lower[index] = 0.3, 0.2
    ours = _mgpt_variance(setup, rates)
    assert ours > 0
    assert abs(ours / _torch_variance(setup, rates) - 1) < 0.1
    assert ours / _torch_variance(setup, lower) > 1.2  # the control: a 0.2 rate is told apart
