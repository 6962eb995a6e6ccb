"""Robust fine-tuning: adversarial training on the input embeddings and consistency regularizers.

Pure functions over callables, so they know nothing of models, tasks or the trainer:

* :mod:`mgpt.robust.perturbation`: which tokens belong to which example, per-example L2 norms over real
  tokens, normalised directions, projection onto the epsilon ball, cutoff masks;
* :mod:`mgpt.robust.divergence`: symmetric KL (softmax and Bernoulli outputs), squared differences
  (regression) and Jensen-Shannon, summed over the items a task's loss counts;
* :mod:`mgpt.robust.adversarial`: FGM, PGD, FreeLB and SMART as gradient functions of a loss
  ``loss(params, delta) -> (objective_sum, (reported_sum, count))``;
* :mod:`mgpt.robust.consistency`: R-Drop and cutoff as loss transforms;
* :mod:`mgpt.robust.anchor`: the slow-moving copy of the weights SMART's Bregman proximal term compares with.

The train layer (:mod:`mgpt.train.objective`) binds them to a model and task when the run is built.
"""
