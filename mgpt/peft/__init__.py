"""Parameter-efficient fine-tuning as pure transforms of the parameter tree and the forward pass.

``wrap(model, params, spec, peft_cfg, rng) -> (peft_model, {"base": params, "peft": new})`` for LoRA, DoRA,
bottleneck adapters (Houlsby / Pfeiffer), prefix tuning, prompt tuning, IA3 and BitFit; ``merge`` folds
LoRA/DoRA/IA3 into plain base params (``unmerge`` goes back); :mod:`mgpt.peft.hf_format` reads and writes
the ``peft`` library's adapter format; :mod:`mgpt.peft.checkpoint` saves only what trains.
"""

from mgpt.peft.hf_format import load_adapter, save_adapter
from mgpt.peft.model import METHODS, PeftModel, check_config, merge, unmerge, wrap

__all__ = ["METHODS", "PeftModel", "check_config", "load_adapter", "merge", "save_adapter", "unmerge", "wrap"]
