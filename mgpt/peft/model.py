"""The :class:`PeftModel` wrapper: any mgpt task model plus a registered PEFT method, with Linen's interface.

Params are ``{"base": <the model's params>, "peft": <the method's params>}``. The wrapper has ``init`` and
``apply(..., method=...)`` like the Linen model it wraps, so callers (the train step's chunked loss, the
layout's abstract init) treat both alike. On every call it hands the method (:mod:`mgpt.peft.method`) a
:class:`~mgpt.peft.method.Call` -- the wrapped model's method, its inputs, the params -- and runs what comes
back: kernels rewritten (LoRA, DoRA, IA3), interceptors on ``Dense`` layers (adapters, LoRA dropout), inputs
added (prompts, prefixes), outputs trimmed (prompts).

Frozen base params are wrapped in ``stop_gradient`` so their (unused) gradients are never computed; the
optimizer still freezes them with ``optax.set_to_zero`` through :meth:`PeftModel.trainable_mask`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Optional

import flax.linen as nn
import jax
from flax.core import meta

from mgpt import optim
from mgpt.config import ConfigError, PeftConfig
from mgpt.models import scan as scan_lib
from mgpt.models.layers import BackboneInputs
from mgpt.peft import adapters, bitfit, ia3, lora, prompts  # noqa: F401 -- importing registers their methods
from mgpt.peft.method import Call, PeftMethod, get_method, method_names

METHODS = ("none",) + method_names()
_PEFT_SALT = 0x9EF7  # the PEFT params' init key differs from the model's own


def _names(path) -> tuple:
    return tuple(str(getattr(p, "key", p)) for p in path)


def _bind(model, method: str, args: tuple, kwargs: dict) -> dict:
    """The wrapped model's ``method`` arguments by name, as passed (defaults not filled in)."""
    signature = inspect.signature(getattr(type(model), method))
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        # TaskModel.__call__ / encode take (*args, **kwargs): the named inputs of every backbone
        return dict(inspect.signature(BackboneInputs).bind(*args, **kwargs).arguments)
    bound = signature.bind(None, *args, **kwargs).arguments
    bound.pop(next(iter(signature.parameters)))  # self
    return dict(bound)


@dataclasses.dataclass(frozen=True, eq=False)
class PeftModel:
    """A task model with a PEFT method; ``apply`` takes ``{"params": {"base": ..., "peft": ...}}``.

    ``model``: the Linen task model; ``spec``: its :class:`mgpt.models.ModelSpec`; ``cfg``: the
    :class:`mgpt.config.PeftConfig`; ``extra_trainable``: a regex over ``base/...`` and ``peft/...`` param
    paths (``optimizer.trainable``) of further params to train, e.g. the LayerNorms; None for none.
    """

    model: Any
    spec: Any
    cfg: PeftConfig
    extra_trainable: Optional[str] = None

    @property
    def method(self) -> PeftMethod:
        return get_method(self.cfg.method)

    def init(self, rngs, *args, **kwargs) -> dict:
        """``{"params": {"base": <the model's init>, "peft": <fresh PEFT params>}}`` (works under ``jax.eval_shape``;
        the base keeps the model's logical-axis boxes)."""
        variables = self.model.init(rngs, *args, **kwargs)
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        peft = self.method.init(jax.random.fold_in(key, _PEFT_SALT), meta.unbox(variables["params"]), self.spec,
                                self.cfg)
        return dict(variables, params={"base": variables["params"], "peft": peft})

    def apply(self, variables: dict, *args, method=None, rngs: Optional[dict] = None, **kwargs):
        """The wrapped model's ``method`` (default ``__call__``; e.g. ``"encode"``, ``"project"``) computed with
        the PEFT method; outputs have the shapes the plain model's have."""
        name = "__call__" if method is None else method if isinstance(method, str) else method.__name__
        params = variables["params"]
        mask = self.trainable_mask(params)
        base = jax.tree_util.tree_map(
            lambda x, trained: x if trained else jax.lax.stop_gradient(x), params["base"], mask["base"])
        call = self.method.apply(Call(name, _bind(self.model, name, args, kwargs), base, params["peft"], self.spec,
                                      self.cfg, dict(rngs or {})))
        with contextlib.ExitStack() as stack:
            for interceptor in call.interceptors:
                stack.enter_context(nn.intercept_methods(interceptor))
            out = self.model.apply({"params": call.base}, method=None if name == "__call__" else name,
                                   rngs=call.rngs, **call.inputs)
        return call.finish(out)

    def trains_base(self, names: tuple) -> bool:
        """Whether the base param at ``names`` trains: the head (``train_head``), and what the method trains."""
        return bool(self.cfg.train_head) if names[0] == "head" else self.method.trains(names)

    def trainable_mask(self, params: dict) -> dict:
        """True where a parameter of ``{"base", "peft"}`` is trained (every PEFT param; see :meth:`trains_base`;
        and whatever ``extra_trainable`` names)."""
        mask = {"base": jax.tree_util.tree_map_with_path(lambda path, _: self.trains_base(_names(path)),
                                                         params["base"]),
                "peft": jax.tree_util.tree_map(lambda _: True, params["peft"])}
        if self.extra_trainable is not None:
            extra = optim.trainable_mask(params, self.extra_trainable)
            mask = jax.tree_util.tree_map(lambda a, b: a or b, mask, extra)
        return mask

    def with_trainable(self, extra_trainable: Optional[str]) -> "PeftModel":
        """This wrapper also training the params ``extra_trainable`` names (``"all"`` or None: nothing more)."""
        return dataclasses.replace(self, extra_trainable=None if extra_trainable in (None, "all") else extra_trainable)


def check_config(cfg: PeftConfig) -> None:
    """Fail early, naming the key, on a PEFT config that cannot work."""
    if cfg.method != "none":
        get_method(cfg.method).check(cfg)
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"peft.dropout must be in [0, 1), got {cfg.dropout}")


def wrap(model, params: Any, spec, cfg: PeftConfig, rng: jax.Array,
         extra_trainable: Optional[str] = None) -> tuple[PeftModel, dict]:
    """``(peft_model, {"base": params, "peft": <fresh PEFT params>})`` for ``cfg.method`` (not "none").

    ``extra_trainable``: ``optimizer.trainable`` -- a regex over ``base/...``/``peft/...`` paths of further
    params to train (``"all"`` or None: only what the method trains).
    """
    if cfg.method == "none":
        raise ConfigError("peft.method='none': there is nothing to wrap; use the model as it is")
    check_config(cfg)
    peft_model = PeftModel(model, spec, cfg).with_trainable(extra_trainable)
    both = {"base": params, "peft": peft_model.method.init(rng, params, spec, cfg)}
    mask = peft_model.trainable_mask(both)  # also checks extra_trainable matches something
    if not any(jax.tree_util.tree_leaves(mask)):  # e.g. BitFit on a model without biases, head frozen
        raise ConfigError(f"peft.method={cfg.method!r}: the model has no parameters this method trains")
    return peft_model, both


def merge(params: dict, cfg: PeftConfig) -> Any:
    """Plain base params computing what the PEFT model computes (LoRA, DoRA, IA3; BitFit as is).

    Adapters, prompts and prefixes add computation that no weight of the base model can hold, so they fail.
    """
    if cfg.method == "none":
        return params["base"]
    method = get_method(cfg.method)
    if method.merge is None:
        mergeable = ", ".join(name for name in method_names() if get_method(name).merge is not None)
        raise ValueError(f"peft.method={cfg.method!r} cannot be merged into the base weights (it adds "
                         f"computation); merge works for {mergeable}")
    return method.merge(params["base"], params["peft"], cfg)


def unmerge(merged: Any, peft: dict, cfg: PeftConfig) -> dict:
    """``{"base", "peft"}`` back from :func:`merge`'s output and the PEFT params (LoRA, IA3, BitFit)."""
    method = get_method(cfg.method) if cfg.method != "none" else None
    if method is None or method.unmerge is None:
        raise ValueError(f"peft.method={cfg.method!r} has no merge to undo")
    return {"base": method.unmerge(merged, peft, cfg), "peft": peft}


def _relayout(params: dict, convert) -> dict:
    # PEFT groups nested like the base (LoRA, IA3, adapters) follow its layout; prompts and prefixes have none
    peft = {group: convert(tree) if isinstance(tree, dict) and "backbone" in tree else tree
            for group, tree in params["peft"].items()}
    return {"base": convert(params["base"]), "peft": peft}


def to_scanned(params: dict, spec) -> dict:
    """``{"base", "peft"}`` with per-layer entries -> the scanned layout (:func:`mgpt.models.scan.to_scanned`)."""
    return _relayout(params, lambda tree: scan_lib.to_scanned(tree, spec))


def to_unscanned(params: dict, spec) -> dict:
    """The inverse of :func:`to_scanned`."""
    return _relayout(params, lambda tree: scan_lib.to_unscanned(tree, spec))
