"""BitFit (Ben Zaken et al. 2022): train only the backbone's biases (and the head); no new parameters."""

from __future__ import annotations

from typing import Any

import jax

from mgpt.config import PeftConfig
from mgpt.peft import method as method_lib


def trains(names: tuple) -> bool:
    """Every bias of the backbone (the head is governed by ``peft.train_head``)."""
    return names[-1] == "bias"


def _init(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    return {}


def _same_base(base: Any, peft: dict, cfg: PeftConfig) -> Any:
    return base  # the trained biases are base params already: merged as they are


method_lib.register_method(method_lib.PeftMethod("bitfit", _init, merge=_same_base, unmerge=_same_base,
                                                 trains=trains))
