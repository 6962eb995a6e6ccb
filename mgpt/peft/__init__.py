"""Parameter-efficient fine-tuning as pure transforms of the parameter tree and the forward pass.

``wrap(model, params, spec, peft_cfg, rng) -> (peft_model, {"base": params, "peft": new})`` for LoRA, DoRA,
bottleneck adapters (Houlsby / Pfeiffer), prefix tuning, prompt tuning, IA3 and BitFit -- each a
:class:`~mgpt.peft.method.PeftMethod` registered by name (:func:`register_method`, :func:`get_method`);
``merge`` folds LoRA/DoRA/IA3 into plain base params (``unmerge`` goes back); ``to_scanned``/``to_unscanned``
convert ``{"base", "peft"}`` between layer layouts; :mod:`mgpt.peft.hf_format` reads and writes the ``peft``
library's adapter format; :mod:`mgpt.peft.checkpoint` saves only what trains.
"""

from mgpt.peft.hf_format import load_adapter, save_adapter
from mgpt.peft.method import Call, PeftFormat, PeftMethod, get_method, register_method
from mgpt.peft.model import (METHODS, PeftModel, check_config, merge, to_scanned, to_unscanned, unmerge,
                             wrap)

__all__ = ["METHODS", "Call", "PeftFormat", "PeftMethod", "PeftModel", "check_config", "get_method",
           "load_adapter", "merge", "register_method", "save_adapter", "to_scanned", "to_unscanned", "unmerge",
           "wrap"]
