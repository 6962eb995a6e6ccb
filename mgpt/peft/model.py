"""The :class:`PeftModel` wrapper: any mgpt task model plus a PEFT method, with the Linen ``apply`` interface.

Params are ``{"base": <the model's params>, "peft": {<method>: <new params>}}``. Inside ``apply``:

* LoRA / DoRA / IA3 rewrite the targeted base kernels (``W' = W + s A B`` and friends) before the model runs;
* adapters (and LoRA dropout while training) hook the targeted ``Dense`` layers with
  ``flax.linen.intercept_methods``;
* prompt tuning feeds ``inputs_embeds`` (and trims the virtual positions from per-position outputs),
  prefix tuning feeds ``prefix_key_values``;
* BitFit adds no params: it only trains the base biases.

Frozen base params are wrapped in ``stop_gradient`` so their (unused) gradients are never computed; the
optimizer still freezes them with ``optax.set_to_zero`` through :func:`trainable_mask`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax

from mgpt.config import ConfigError, PeftConfig
from mgpt.peft import adapters, ia3, lora, prompts, targets

METHODS = ("none", "lora", "dora", "adapter", "prefix", "prompt", "ia3", "bitfit")


@dataclasses.dataclass(frozen=True, eq=False)
class PeftModel:
    """A task model with a PEFT method; ``apply`` takes ``{"params": {"base": ..., "peft": ...}}``.

    ``model``: the Linen task model; ``spec``: its :class:`mgpt.models.ModelSpec`; ``cfg``: the
    :class:`mgpt.config.PeftConfig`; ``base_trainable``: bool tree like the base params (head, BitFit biases).
    """

    model: Any
    spec: Any
    cfg: PeftConfig
    base_trainable: Any

    def apply(self, variables: dict, input_ids=None, attention_mask=None, token_type_ids=None, *,
              deterministic: bool = True, rngs: Optional[dict] = None, return_hidden_states: bool = False,
              **kwargs):
        """Logits like the wrapped model's ``apply`` (same shapes), computed with the PEFT method."""
        if "method" in kwargs:
            raise ValueError("PeftModel.apply: method= is not supported; apply runs the whole task model")
        params = variables["params"]
        base = jax.tree_util.tree_map(
            lambda x, trained: x if trained else jax.lax.stop_gradient(x), params["base"], self.base_trainable)
        peft = params["peft"]
        cfg, method = self.cfg, self.cfg.method
        rngs = dict(rngs or {})
        interceptors = []
        if method in ("lora", "dora"):
            s = lora.scale(cfg.alpha, lora.rank_of(peft["lora"]), cfg.use_rslora)
            if cfg.dropout > 0 and not deterministic and "dropout" in rngs:
                # fold_in: the adapter's dropout key differs from the model's own
                key = jax.random.fold_in(rngs["dropout"], 0x10AA)
                interceptors.append(lora.dropout_interceptor(base, peft["lora"], s, cfg.dropout, key))
            else:
                base = lora.transform(base, peft["lora"], s)
        elif method == "ia3":
            base = ia3.transform(base, peft["ia3"])
        elif method == "adapter":
            interceptors.append(adapters.interceptor(peft["adapter"], cfg.adapter_activation))
        elif method == "prompt":
            if kwargs.get("inputs_embeds") is not None or kwargs.get("position_ids") is not None:
                raise ValueError("prompt tuning builds inputs_embeds and positions itself; pass input_ids only")
            kwargs["inputs_embeds"], attention_mask, token_type_ids = prompts.prompt_inputs(
                base, peft["prompt"], self.spec, input_ids, attention_mask, token_type_ids)
            input_ids = None
        elif method == "prefix":
            if kwargs.get("prefix_key_values") is not None:
                raise ValueError("prefix tuning supplies prefix_key_values itself")
            batch = (input_ids if input_ids is not None else kwargs["inputs_embeds"]).shape[0]
            kwargs["prefix_key_values"] = prompts.prefix_key_values(peft["prefix"], batch, self.spec.compute_dtype)
        with contextlib.ExitStack() as stack:
            for interceptor in interceptors:
                stack.enter_context(nn.intercept_methods(interceptor))
            out = self.model.apply({"params": base}, input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, deterministic=deterministic, rngs=rngs,
                                   return_hidden_states=return_hidden_states, **kwargs)
        if method == "prompt":
            out = prompts.trim_positions(out, peft["prompt"]["embeddings"].shape[0], self.spec, return_hidden_states)
        return out

    def trainable_mask(self, params: dict) -> dict:
        """True where a parameter of ``{"base", "peft"}`` is trained."""
        return {"base": self.base_trainable, "peft": jax.tree_util.tree_map(lambda _: True, params["peft"])}


def check_config(cfg: PeftConfig) -> None:
    """Fail early, naming the key, on a PEFT config that cannot work."""
    if cfg.method not in METHODS:
        raise ConfigError(f"peft.method={cfg.method!r}: expected one of {', '.join(METHODS)}")
    if cfg.method in ("lora", "dora") and cfg.rank < 1:
        raise ConfigError(f"peft.rank must be >= 1, got {cfg.rank}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"peft.dropout must be in [0, 1), got {cfg.dropout}")


def base_trainable(base: Any, cfg: PeftConfig) -> Any:
    """Which base params train: the head (``train_head``), and for BitFit every backbone bias."""
    def trained(path, _):
        names = [getattr(p, "key", str(p)) for p in path]
        if names[0] == "head":
            return bool(cfg.train_head)
        return cfg.method == "bitfit" and names[-1] == "bias"

    mask = jax.tree_util.tree_map_with_path(trained, base)
    if cfg.method == "bitfit" and not any(jax.tree_util.tree_leaves(mask)):
        raise ConfigError("peft.method=bitfit: the model has no bias parameters to train")
    return mask


def init_params(rng: jax.Array, base: Any, spec, cfg: PeftConfig) -> dict:
    """The new PEFT params for ``cfg.method`` (``{}`` for BitFit)."""
    kind = spec.backbone_kind
    method = cfg.method
    if method in ("lora", "dora"):
        pattern = cfg.target_modules or targets.default_pattern(targets.LORA_DEFAULTS, kind, "peft.target_modules")
        paths = targets.match(base, pattern, "peft.target_modules")
        return {"lora": lora.init(rng, base, paths, cfg.rank, dora=method == "dora")}
    if method == "ia3":
        pattern = cfg.target_modules or targets.default_pattern(targets.IA3_DEFAULTS, kind, "peft.target_modules")
        ff_pattern = cfg.feedforward_modules or targets.default_pattern(
            targets.IA3_FEEDFORWARD_DEFAULTS, kind, "peft.feedforward_modules")
        paths = targets.match(base, pattern, "peft.target_modules")
        feedforward = set(targets.match(base, ff_pattern, "peft.feedforward_modules", allow_empty=True))
        if not feedforward <= set(paths):
            raise ConfigError(f"peft.feedforward_modules matches modules outside peft.target_modules: "
                              f"{sorted(feedforward - set(paths))}")
        return {"ia3": ia3.init(base, paths, feedforward)}
    if method == "adapter":
        sites = adapters.sites(base, kind, cfg.adapter_placement)
        return {"adapter": adapters.init(rng, base, sites, cfg.adapter_size, cfg.init_std)}
    if method == "prompt":
        return {"prompt": prompts.init_prompt(rng, base, spec, cfg.num_virtual_tokens)}
    if method == "prefix":
        return {"prefix": prompts.init_prefix(rng, spec, cfg.num_virtual_tokens, cfg.init_std)}
    if method == "bitfit":
        return {}
    raise ConfigError(f"peft.method={method!r}: nothing to wrap")


def wrap(model, params: Any, spec, cfg: PeftConfig, rng: jax.Array) -> tuple[PeftModel, dict]:
    """``(peft_model, {"base": params, "peft": <fresh PEFT params>})`` for ``cfg.method`` (not "none")."""
    check_config(cfg)
    if cfg.method == "none":
        raise ConfigError("peft.method='none': there is nothing to wrap; use the model as it is")
    if getattr(spec, "scan_layers", False):
        raise ConfigError(f"peft.method={cfg.method!r}: PEFT targets per-layer modules; load the model with "
                          "scan_layers=False (model.scan_layers=false)")
    peft = init_params(rng, params, spec, cfg)
    return PeftModel(model, spec, cfg, base_trainable(params, cfg)), {"base": params, "peft": peft}


def merge(params: dict, cfg: PeftConfig) -> Any:
    """Plain base params computing what the PEFT model computes (LoRA, DoRA, IA3; BitFit as is).

    Adapters, prompts and prefixes add computation that no weight of the base model can hold, so they fail.
    """
    base, peft, method = params["base"], params["peft"], cfg.method
    if method in ("lora", "dora"):
        return lora.transform(base, peft["lora"], lora.scale(cfg.alpha, lora.rank_of(peft["lora"]), cfg.use_rslora))
    if method == "ia3":
        return ia3.transform(base, peft["ia3"])
    if method in ("bitfit", "none"):
        return base
    raise ValueError(f"peft.method={method!r} cannot be merged into the base weights (it adds computation); "
                     "merge works for lora, dora, ia3 and bitfit")


def unmerge(merged: Any, peft: dict, cfg: PeftConfig) -> dict:
    """``{"base", "peft"}`` back from :func:`merge`'s output and the PEFT params (LoRA, IA3, BitFit)."""
    method = cfg.method
    if method in ("lora", "dora"):
        s = lora.scale(cfg.alpha, lora.rank_of(peft["lora"]), cfg.use_rslora)
        return {"base": lora.unmerge(merged, peft["lora"], s), "peft": peft}
    if method == "ia3":
        return {"base": ia3.unmerge(merged, peft["ia3"]), "peft": peft}
    if method == "bitfit":
        return {"base": merged, "peft": peft}
    raise ValueError(f"peft.method={method!r} has no merge to undo")
