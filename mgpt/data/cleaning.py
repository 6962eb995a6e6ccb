"""Cleaning: label renaming, text normalisation, and dropping empty, duplicate or out-of-range examples.

Every drop is counted by reason, so a run can say exactly what it threw away (the trainer writes
the counts to ``<workdir>/cleaning.json``). What is done is set in the data config; the defaults
change nothing. Files to predict on are normalised and relabelled but never lose an example: each
input line gets its prediction.
"""

from __future__ import annotations

import logging
import re
import unicodedata

from mgpt.data.errors import DataError

logger = logging.getLogger("mgpt")

# Reasons an example is dropped, in the order they are checked.
REASONS = ("label_dropped", "empty", "too_short", "too_long", "duplicate")

_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines
_NEWLINES = re.compile(r"\s*\n\s*")  # a run of whitespace holding a newline


def normalize_text(text: str) -> str:
    """Unicode NFKC, then each run of whitespace becomes one space, or one newline when it holds
    one (paragraphs survive for language modelling); the ends are stripped."""
    text = unicodedata.normalize("NFKC", text)
    return _SPACES.sub(" ", _NEWLINES.sub("\n", text)).strip()


def _texts(example: dict) -> list[str]:
    """The input texts of an example (the completion counts for causal LM; every message of a chat)."""
    if "tokens" in example:
        return [" ".join(example["tokens"])]
    if "messages" in example:
        return [m["content"] for m in example["messages"]]
    return [example[key] for key in ("text", "text_pair") if key in example]


def _map_labels(example: dict, label_map: dict, where: str) -> bool:
    """Rename labels / tags in place; False when the example's single label maps to "" (drop it)."""
    if "tags" in example:
        tags = [str(label_map.get(tag, tag)) for tag in example["tags"]]
        if any(not tag for tag in tags):
            raise DataError(f"{where}: data.label_map maps a tag to '' (tags cannot be dropped, only renamed)")
        example["tags"] = tags
        return True
    if "label" not in example or isinstance(example["label"], float):  # regression targets are not renamed
        return True
    label = example["label"]
    if isinstance(label, list):  # multi-label: a label mapped to "" leaves the set
        mapped = [str(label_map.get(x, x)) for x in label]
        example["label"] = list(dict.fromkeys(x for x in mapped if x))
        return True
    example["label"] = str(label_map.get(label, label))
    return bool(example["label"])


def _normalise(example: dict) -> dict:
    out = dict(example)
    if "tokens" in out:
        # Words keep their boundaries (the tags align with them); a word NFKC empties stays as it was.
        out["tokens"] = [unicodedata.normalize("NFKC", w).strip() or w for w in out["tokens"]]
    for key in ("text", "text_pair"):
        if key in out:
            out[key] = normalize_text(out[key])
    if "messages" in out:
        out["messages"] = [dict(m, content=normalize_text(m["content"])) for m in out["messages"]]
    return out


def _length_reason(example: dict, data_cfg) -> str | None:
    texts = _texts(example)
    words = sum(len(t.split()) for t in texts)
    chars = sum(len(t) for t in texts)
    if (data_cfg.min_words and words < data_cfg.min_words) or (data_cfg.min_chars and chars < data_cfg.min_chars):
        return "too_short"
    if (data_cfg.max_words and words > data_cfg.max_words) or (data_cfg.max_chars and chars > data_cfg.max_chars):
        return "too_long"
    return None


def _key(example: dict) -> tuple:
    """What makes two examples the same input (labels are not part of it)."""
    if "tokens" in example:
        return tuple(example["tokens"])
    if "messages" in example:
        return tuple((m["role"], m["content"]) for m in example["messages"])
    return tuple(example.get(key, "") for key in ("text", "text_pair"))


def clean_examples(examples: list[dict], data_cfg, where: str = "", keep_all: bool = False
                   ) -> tuple[list[dict], dict[str, int]]:
    """Clean one split: returns the kept examples (in order) and the drop count of each reason.

    ``keep_all`` (files to predict on): normalise and relabel, drop nothing.
    """
    for name in ("min_words", "max_words", "min_chars", "max_chars"):
        if getattr(data_cfg, name) < 0:
            raise DataError(f"data.{name} must be >= 0 (0: no limit), got {getattr(data_cfg, name)}")
    label_map = {str(k): v for k, v in dict(data_cfg.label_map).items()}
    counts = dict.fromkeys(REASONS, 0)
    kept, seen = [], set()
    for i, example in enumerate(examples):
        example = _normalise(example) if data_cfg.normalize_text else dict(example)
        if label_map and not _map_labels(example, label_map, f"{where} example {i}"):
            if keep_all:  # to predict on: the example stays, its label is gone
                del example["label"]
            else:
                counts["label_dropped"] += 1
                continue
        if keep_all:
            kept.append(example)
            continue
        if data_cfg.drop_empty and any(not t.strip() for t in _texts(example) or [""]):
            counts["empty"] += 1
            continue
        reason = _length_reason(example, data_cfg)
        if reason:
            counts[reason] += 1
            continue
        if data_cfg.drop_duplicates:
            key = _key(example)
            if key in seen:
                counts["duplicate"] += 1
                continue
            seen.add(key)
        kept.append(example)
    dropped = {reason: n for reason, n in counts.items() if n}
    logger.info("cleaning %s: %d examples read, %d kept%s", where or "data", len(examples), len(kept),
                "; dropped " + ", ".join(f"{n} {reason}" for reason, n in dropped.items()) if dropped else "")
    if not kept:
        raise DataError(f"{where or 'data'}: cleaning dropped every example ({dropped}); loosen the data.* filters")
    return kept, counts
