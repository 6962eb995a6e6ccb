"""The family protocol: one :class:`Family` record per transformers ``model_type``, and the registry.

Generic code (loading, export, heads, PEFT, generation, scan, bench) asks the family of a spec
(``get_family(spec.family)``) and never compares family names. A family module declares everything in one
place: how it reads a transformers config into the common :class:`Arch` record, its tensor-name table,
what it ignores, which Flax backbone and head it builds, its PEFT default targets, its scan layout, its
KV-cache geometry and its benchmark sizes.

How to add a family (say ``phi3``)
----------------------------------
1. Write ``mgpt/models/families/phi3.py``. Reuse what exists: a Llama-like decoder reconfigures
   :mod:`mgpt.models.families.llama` (see ``mistral.py``, ``qwen2.py``, ``gemma.py``: a ``read_arch`` that
   adjusts ``llama.read_arch``'s record, then :func:`mgpt.models.families.llama.decoder_family`); where its
   layers differ it subclasses the Llama modules at their hooks (``LlamaAttention.project_qkv`` for fused or
   normalised q/k/v, ``LlamaDecoderLayer.attention_cls`` / ``feed_forward``, ``LlamaBackbone.layer_cls``)
   and passes its own ``build_backbone`` and ``tensor_table`` to ``decoder_family``. An encoder reuses
   :mod:`mgpt.models.families.bert` (see ``roberta.py``, ``distilbert.py``). New layers are built from
   :mod:`mgpt.models.layers` and :func:`mgpt.models.attention.attention`; never import a sibling family for a
   shared piece -- move the piece into the layer kit instead.
2. Its architecture record subclasses :class:`Arch` (the shared fields keep their names; extras are
   allowed), read by ``read_arch(hf_config, dropout)``, which refuses configs it cannot run.
3. Its table ``tensor_table(spec) -> {hf_name: Entry}`` (rows with :func:`mgpt.models.mappings.add_rows`)
   names every tensor of every head, without the ``base_prefix``; loading reads it forwards, export
   backwards. ``ignored`` lists the checkpoint tensors deliberately unused, with the reason.
4. End the module with ``register(Family(name=..., ...))`` and import it in
   ``mgpt/models/families/__init__.py``. Then add its tiny checkpoint to ``tests/family_checkpoints.py``
   and parity / export round-trip tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

TASKS = ("sequence_classification", "token_classification", "regression", "causal_lm")
# Keys of Family.peft_targets: regexes (re.search) over '/'-joined module paths of the task model's params.
PEFT_TARGET_KEYS = ("lora", "ia3", "ia3_feedforward", "adapter_attention", "adapter_ffn")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Arch:
    """The architecture record every family reads its config into (hashable, static under jit).

    The shared notions keep these names in every family; a family's subclass adds its own fields.
    ``num_kv_heads`` equals ``num_heads`` without grouped-query attention; ``head_dim`` is the per-head width.
    Dropout rates are those of the transformers model, or all ``ModelConfig.dropout`` when it is set.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    activation: str
    norm_eps: float
    max_positions: int
    initializer_range: float
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    classifier_dropout: float = 0.0
    tie_word_embeddings: bool = False


def config_fields(config, **names: str) -> dict:
    """``{arch field: config.<name>}``: the shared :class:`Arch` fields under a family's config names."""
    return {field: getattr(config, name) for field, name in names.items()}


def standard_kv_geometry(arch: Arch) -> tuple[int, int, int]:
    """``(num_layers, num_kv_heads, head_dim)``: the per-layer key/value shape of caches and prefixes."""
    return arch.num_layers, arch.num_kv_heads, arch.head_dim


def _always_scannable(arch: Arch) -> Optional[str]:
    return None


@dataclasses.dataclass(frozen=True)
class Family:
    """Everything generic code needs to know about one transformers ``model_type``.

    name: the transformers ``model_type``.
    is_decoder: causal decoder (causal LM, last-token classification, KV-cache decoding) or encoder.
    read_arch: ``(hf_config, dropout) -> Arch``; raises ValueError on a config mgpt cannot run.
    tensor_table: ``spec -> {hf tensor name without base_prefix: mappings.Entry}``.
    base_prefix: the base-model prefix of task checkpoints (``"transformer."``, ``"bert."``, ``"model."``).
    build_backbone: ``spec -> nn.Module`` called like the backbones (see :class:`mgpt.models.heads.TaskModel`).
    build_head: ``spec -> nn.Module | None``: the task head, called ``head(out, attention_mask,
      deterministic)``; None for a causal LM whose logits come from ``backbone.attend`` (tied embeddings).
    architectures: task -> transformers class name written into config.json on export.
    peft_targets: PEFT default regexes, one per :data:`PEFT_TARGET_KEYS`.
    embedding_path: param path of the token embedding table (prompt tuning reads it).
    ignored: ``(regex, reason)`` of checkpoint tensors deliberately unused (matched after the prefix).
    pooler_tasks: tasks whose head reads the backbone's pretrained pooler (BERT's sequence tasks).
    scan_stack: name of the scanned layer stack in the backbone params (``"h"``, ``"layers"``), or None
      when the family's layers cannot be scanned.
    scan_blocker: ``arch -> reason | None``: why this particular arch cannot run scanned.
    kv_geometry: ``arch -> (num_layers, num_kv_heads, head_dim)`` of KV caches and prefix key/values.
    bench_sizes: named sizes for ``mgpt bench``: name -> transformers config keywords of this model_type.
    gguf: how llama.cpp's GGUF format stores this family (:class:`mgpt.models.gguf_format.GgufLayout`), or
      None when GGUF has no such architecture.
    """

    name: str
    is_decoder: bool
    read_arch: Callable[[Any, Optional[float]], Arch]
    tensor_table: Callable[[Any], dict]
    base_prefix: str
    build_backbone: Callable[[Any], Any]
    build_head: Callable[[Any], Any]
    architectures: Mapping[str, str]
    peft_targets: Mapping[str, str]
    embedding_path: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...] = ()
    pooler_tasks: tuple[str, ...] = ()
    scan_stack: Optional[str] = None
    scan_blocker: Callable[[Arch], Optional[str]] = _always_scannable
    kv_geometry: Callable[[Arch], tuple[int, int, int]] = standard_kv_geometry
    bench_sizes: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    gguf: Optional[Any] = None

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this family's models can be built for (causal LM only for decoders)."""
        return TASKS if self.is_decoder else tuple(t for t in TASKS if t != "causal_lm")

    def hf_architecture(self, task: str) -> Optional[str]:
        """The transformers class of ``task`` (config.json ``architectures``), or None if there is none."""
        return self.architectures.get(task)

    def uses_pooler(self, task: str) -> bool:
        """Whether ``task``'s head reads the pretrained pooler (then the backbone builds and loads it)."""
        return task in self.pooler_tasks

    def tied_lm_head(self, arch: Arch, task: str) -> bool:
        """Causal-LM logits use the token embedding matrix (no separate ``lm_head``)."""
        return task == "causal_lm" and bool(arch.tie_word_embeddings)

    def check_scan(self, arch: Arch) -> None:
        """Raise ValueError when this family, or this arch of it, cannot run with ``scan_layers=True``."""
        if self.scan_stack is None:
            scannable = sorted(f.name for f in all_families() if f.scan_stack is not None)
            raise ValueError(f"scan_layers=True is not supported for {self.name!r}; it is for {scannable}")
        reason = self.scan_blocker(arch)
        if reason:  # a scanned layer is one program for every layer: per-layer differences cannot be expressed
            raise ValueError(f"scan_layers=True: {reason}; run it unscanned")


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (its module calls this once, at import)."""
    missing = [key for key in PEFT_TARGET_KEYS if key not in family.peft_targets]
    if missing:
        raise ValueError(f"family {family.name!r}: peft_targets lacks {missing}")
    if family.name in _REGISTRY and _REGISTRY[family.name] is not family:
        raise ValueError(f"family {family.name!r} is registered twice")
    _REGISTRY[family.name] = family
    return family


def _load_all() -> None:
    import mgpt.models.families  # noqa: F401 -- each family module registers itself


def get_family(model_type: Optional[str]) -> Family:
    """The registered family of a transformers ``model_type``; ValueError naming the supported ones."""
    _load_all()
    if model_type not in _REGISTRY:
        raise ValueError(f"model_type {model_type!r} is not supported; mgpt supports: {sorted(_REGISTRY)}")
    return _REGISTRY[model_type]


def all_families() -> tuple[Family, ...]:
    """Every registered family, by name."""
    _load_all()
    return tuple(_REGISTRY[name] for name in sorted(_REGISTRY))
