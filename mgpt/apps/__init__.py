"""Applications built on a fine-tuned model: the sentiment monitor and recommendation ranking.

Each has a pure core (:mod:`mgpt.apps.monitor`, :mod:`mgpt.apps.ranking`: no model, no jax) and a runner that
loads the model the way ``mgpt predict`` does and writes the outputs (:mod:`mgpt.apps.monitor_run`,
:mod:`mgpt.apps.rank_run`); ``mgpt monitor`` and ``mgpt rank`` call the runners.
"""
