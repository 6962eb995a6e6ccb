"""The protocol every PEFT method follows, and the registry of methods by name.

A method is a :class:`PeftMethod`: a frozen record of pure functions. :class:`mgpt.peft.model.PeftModel`
asks the method of its config for each of them and never branches on the method's name:

* ``init(rng, base, spec, cfg) -> peft params`` (a dict keyed by the method's group, e.g. ``{"lora": ...}``);
* ``apply(call) -> call``: how one call of the wrapped model changes -- rewritten kernels (``call.base``),
  Flax method interceptors, extra or replaced inputs, and a ``finish`` applied to the output;
* ``merge(base, peft, cfg) -> base`` / ``unmerge(merged, peft, cfg) -> base`` where the method can be
  folded into (and taken out of) the base weights; None where it cannot;
* ``trains(names) -> bool``: which base params (besides the head) train, by their path;
* ``peft_format``: how its params are written in the ``peft`` library's adapter format, or None.

Each method module registers its methods with :func:`register_method` when it is imported.

Params that a method keeps per targeted ``Dense`` (LoRA's ``A``/``B``, adapters) can travel into the
forward pass *inside* the base tree, next to that layer's kernel (:func:`inject`): an interceptor then reads
them from the module's own variables, so they follow the layer wherever it runs -- also one layer at a time
inside ``nn.scan``, where a scanned stack's leading layer axis is sliced for every leaf alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn

from mgpt.config import ConfigError, PeftConfig
from mgpt.peft import targets

# Methods of the wrapped model that take tokens (input rewrites such as prompts apply to these only).
TOKEN_METHODS = ("__call__", "encode")


def _same(output):
    return output


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of the wrapped model as a PEFT method sees it and changes it.

    ``method``: the wrapped model's method name ("__call__", "encode", "project", ...); ``inputs``: its
    arguments by name, as the caller passed them; ``base``: the params the model runs with; ``peft``: the
    PEFT params; ``finish``: applied to the model's output.
    """

    method: str
    inputs: dict
    base: Any
    peft: Any
    spec: Any
    cfg: PeftConfig
    rngs: dict
    interceptors: tuple = ()
    finish: Callable[[Any], Any] = _same

    @property
    def deterministic(self) -> bool:
        return bool(self.inputs.get("deterministic", True))

    @property
    def takes_tokens(self) -> bool:
        return self.method in TOKEN_METHODS

    def replace(self, **changes) -> "Call":
        return dataclasses.replace(self, **changes)

    def intercept(self, interceptor) -> "Call":
        return self.replace(interceptors=self.interceptors + (interceptor,))

    def then(self, finish: Callable[[Any], Any]) -> "Call":
        """This call with ``finish`` run on the output after the finishes already set."""
        first = self.finish
        return self.replace(finish=lambda out: finish(first(out)))


@dataclasses.dataclass(frozen=True)
class PeftFormat:
    """A method's params in the ``peft`` library's format (``adapter_config.json`` + safetensors).

    ``peft_type``: the config's ``peft_type``; ``group``: the key of the params under ``params["peft"]``;
    ``encode(p) -> {tensor suffix: array}`` for one module's params (PyTorch layout); ``decode(take, p)``
    the module's params back, ``take(suffix, shape)`` reading one tensor; ``config(cfg, tree, name_of)``
    the method's entries of ``adapter_config.json`` (``name_of``: mgpt module path -> transformers name); ``settings(config, select) -> PeftConfig`` the mgpt
    config of a read adapter, ``select(key)`` giving an exact-match regex of the modules a key names.
    """

    peft_type: str
    group: str
    encode: Callable[[dict], dict]
    decode: Callable[[Callable, dict], dict]
    config: Callable[[PeftConfig, Any, Callable], dict]
    settings: Callable[[dict, Callable], PeftConfig]


def _no_check(cfg: PeftConfig) -> None:
    return None


def _apply_nothing(call: Call) -> Call:
    return call


def _trains_nothing(names: tuple) -> bool:
    return False


@dataclasses.dataclass(frozen=True)
class PeftMethod:
    """One PEFT method (see the module docstring for each field)."""

    name: str
    init: Callable[[Any, Any, Any, PeftConfig], dict]
    apply: Callable[[Call], Call] = _apply_nothing
    merge: Optional[Callable[[Any, dict, PeftConfig], Any]] = None
    unmerge: Optional[Callable[[Any, dict, PeftConfig], Any]] = None
    trains: Callable[[tuple], bool] = _trains_nothing
    peft_format: Optional[PeftFormat] = None
    check: Callable[[PeftConfig], None] = _no_check


_REGISTRY: dict[str, PeftMethod] = {}


def register_method(method: PeftMethod) -> PeftMethod:
    """Make ``method`` available by its name (``peft.method=<name>``)."""
    if method.name in _REGISTRY or method.name == "none":
        raise ValueError(f"a PEFT method named {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> PeftMethod:
    """The registered method ``name``; an unknown name fails with the valid ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"peft.method={name!r}: expected one of {', '.join(('none',) + method_names())}")
    return _REGISTRY[name]


def format_for(peft_type: str) -> Optional[PeftFormat]:
    """The ``peft``-library format with this ``peft_type`` (the first method registered with it), or None."""
    for method in _REGISTRY.values():
        if method.peft_format is not None and method.peft_format.peft_type == peft_type:
            return method.peft_format
    return None


def inject(base: Any, per_module: dict[str, dict]) -> Any:
    """The base params with each module's PEFT params (``'/'``-joined module path -> dict) added beside its
    kernel."""
    return targets.set_paths(base, {path: dict(targets.get_path(base, path), **p) for path, p in per_module.items()})


def dense_params(context, key: str) -> Optional[dict]:
    """In an interceptor: the intercepted ``Dense.__call__``'s params if they hold ``key`` (injected), else None."""
    if context.method_name != "__call__" or not isinstance(context.module, nn.Dense):
        return None
    params = context.module.variables.get("params", {})
    return params if key in params else None
