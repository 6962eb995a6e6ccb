"""Customer-service assistant: Banking77 intents (all-MiniLM-L6-v2) answered from a template per intent.

    mgpt train experiments/customer_service_assistant.py --set train.num_epochs=3 \
        --set optimizer.learning_rate=2e-4 --workdir runs/assistant
    mgpt handoff experiments/customer_service_assistant.py --checkpoint runs/assistant --target-accuracy 0.95
    mgpt serve experiments/customer_service_assistant.py --checkpoint runs/assistant

The model, data and hyperparameters of experiments/banking77_intent.py. ``get_assistant()`` is the serving
hook: with it, ``mgpt serve`` adds ``POST /v1/assist`` ({"question": ...} -> intent, confidence, and the
intent's answer from assets/banking77_answers.json, or a hand-off to a human agent when the model's
probability for its top intent is below the threshold: the one ``mgpt handoff`` chose on the run's validation
split, else ``CONFIDENCE_THRESHOLD``).
"""

import dataclasses
import os

from mgpt.config import load_experiment

HERE = os.path.dirname(os.path.abspath(__file__))
INTENT = os.path.join(HERE, "banking77_intent.py")
ANSWERS = os.path.join(HERE, "assets", "banking77_answers.json")  # intent label -> one short answer
# Below this top-intent probability the question goes to a person: a wrong canned answer costs more than a wait.
CONFIDENCE_THRESHOLD = 0.5
HANDOFF = "I am not sure I understood. I am passing you to a member of our team, who will reply shortly."


def get_config():
    return dataclasses.replace(load_experiment(INTENT), name="customer_service_assistant")


def get_assistant():
    """The answer templates and the hand-off rule that ``mgpt serve`` exposes as ``/v1/assist``."""
    from mgpt.serve.assistant import Assistant

    return Assistant.from_file(ANSWERS, threshold=CONFIDENCE_THRESHOLD, handoff=HANDOFF)
