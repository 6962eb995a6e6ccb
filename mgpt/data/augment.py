"""Data augmentation for training, and the perturbed copies that robustness evaluation scores.

An operation is ``"op:rate"`` (``data.augment``, ``train.eval_perturbations``), rate in (0, 1]:

- text ops (EDA, Wei & Zou 2019, on whitespace-separated words): ``swap`` (about rate x words pairs of words
  swap places), ``delete`` (each word goes with probability rate; never the last one), ``insert`` (about
  rate x words insertions of a synonym of a word of the text, from ``data.synonyms_file``, or of a copy of a
  word of the text when none has a synonym or there is no file), ``synonym`` (each word with a synonym is
  replaced by one with probability rate; needs the file), ``char`` (keyboard typos at that fraction of
  letters and digits: a QWERTY neighbour instead, deletion, a neighbour inserted, or the next character
  swapped in, chosen at random).
- token classification (label-preserving, Dai & Adel 2020): ``label_replace`` (each word, with probability
  rate, replaced by a training word of the same tag, B-/I- kept), ``mention_replace`` (each entity mention,
  with probability rate, replaced by a training mention of the same type, tags rewritten B-X I-X ...),
  ``segment_shuffle`` (the words of each same-label segment -- a mention, or a run of O -- shuffled with
  probability rate). Of the text ops, ``char`` (per word, a word never emptied) and ``synonym`` (one-word
  synonyms only; the tag follows the word) keep words and tags aligned; ``swap``, ``delete`` and ``insert``
  would break the tags' BIO structure and are refused for token classification.
- embedding ops ``token_cutoff`` / ``span_cutoff`` (Shen et al. 2020) act on the input embeddings in the
  train step (mgpt.robust); here they are only parsed, valid for every task (:func:`embedding_ops`).

Every random choice comes from a numpy Generator seeded with ``(seed, step, example index)`` in training
(:func:`example_rng`) and ``(seed, example index)`` for evaluation copies (:func:`perturb_split`): an
augmented example is a pure function of those, so resumed runs see the same batches and every evaluation
scores the same perturbed text. The functions never mutate their inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from mgpt.config import ConfigError
from mgpt.data.errors import DataError
from mgpt.data.labels import LABEL_NONE, LABEL_TAGS
from mgpt.data.records import text_file

logger = logging.getLogger("mgpt")

WORD_OPS = ("swap", "delete", "insert")  # change the number or the order of words
TEXT_OPS = WORD_OPS + ("synonym", "char")
TAG_OPS = ("label_replace", "mention_replace", "segment_shuffle")
EMBEDDING_OPS = ("token_cutoff", "span_cutoff")
ALL_OPS = TEXT_OPS + TAG_OPS + EMBEDDING_OPS
# The seed of every evaluation copy: the same perturbed text whatever train.seed, so runs compare on one copy.
PERTURBATION_SEED = 0
# Mixed into the seeds so augmentation streams differ from every other use of (seed, step).
TRAIN_SALT = 0x617567
CHOICE_SALT = 0x636877  # whether an example is augmented at a step (data.augment_probability)
EVAL_SALT = 0x657661

_KEYBOARD = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Each key's QWERTY neighbours among letters and digits (rows are staggered by half a key)."""
    neighbours = {}
    for r, row in enumerate(_KEYBOARD):
        for c, key in enumerate(row):
            near = [(r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)]
            neighbours[key] = "".join(_KEYBOARD[i][j] for i, j in near
                                      if 0 <= i < len(_KEYBOARD) and 0 <= j < len(_KEYBOARD[i]))
    return neighbours


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


@dataclasses.dataclass(frozen=True)
class Op:
    """One ``"op:rate"`` entry."""

    name: str
    rate: float

    @property
    def spec(self) -> str:
        """The canonical ``"op:rate"`` (how metric keys name a perturbation, e.g. ``validation@char:0.05``)."""
        return f"{self.name}:{self.rate:g}"


@dataclasses.dataclass(frozen=True)
class Pools:
    """What ops draw replacements from: synonym groups and the training split's words and mentions."""

    synonyms: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # lower-case word -> others
    tag_tokens: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # tag -> training words
    mentions: Mapping[str, tuple[tuple[str, ...], ...]] = dataclasses.field(default_factory=dict)  # type -> mentions


# ---------------------------------------------------------------------------------------------- parsing specs


def _parse_one(entry, key: str) -> Op:
    expected = f"expected 'op:rate' with op one of {', '.join(ALL_OPS)} and rate in (0, 1], e.g. 'char:0.05'"
    if not isinstance(entry, str) or entry.count(":") != 1:
        raise ConfigError(f"{key} entry {entry!r}: {expected}")
    name, _, rate_text = entry.partition(":")
    name = name.strip()
    if name not in ALL_OPS:
        raise ConfigError(f"{key} entry {entry!r}: unknown op {name!r}; {expected}")
    try:
        rate = float(rate_text)
    except ValueError:
        raise ConfigError(f"{key} entry {entry!r}: rate {rate_text!r} is not a number; {expected}") from None
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"{key} entry {entry!r}: rate {rate:g} is not in (0, 1]; {expected}")
    return Op(name, rate)


def parse_ops(specs: Iterable[str], key: str = "data.augment", label_kind: str | None = None,
              synonyms_file: str = "") -> tuple[Op, ...]:
    """The ops of ``specs`` (``"op:rate"`` each), checked for the task's ``label_kind`` (None: not checked).

    Fails with one :class:`ConfigError` line naming ``key``, the entry and what is expected: an unknown op, a
    rate outside (0, 1], an op listed twice (an op:rate, for evaluation copies), ``synonym`` without ``data.synonyms_file``, a token-classification
    op on a text task or a word-moving op on token classification, an embedding op in an evaluation copy.
    """
    if isinstance(specs, str):
        raise ConfigError(f"{key}={specs!r}: expected a tuple of 'op:rate' entries, e.g. ('char:0.05',)")
    ops, seen = [], set()
    for entry in specs:
        op = _parse_one(entry, key)
        # Training applies every op once; evaluation copies may use one op at several rates (char:0.05, char:0.1).
        identity = op.name if key == "data.augment" else op.spec
        if identity in seen:
            raise ConfigError(f"{key} entry {entry!r}: {identity!r} is listed twice; expected each "
                              f"{'op' if key == 'data.augment' else 'op:rate'} once")
        seen.add(identity)
        if op.name == "synonym" and not synonyms_file:
            raise ConfigError(f"{key} entry {entry!r}: needs data.synonyms_file (one group of interchangeable "
                              "words per line); expected a synonyms file or no 'synonym' op")
        if op.name in EMBEDDING_OPS and key != "data.augment":
            raise ConfigError(f"{key} entry {entry!r}: {op.name} acts on embeddings in the train step, not on the "
                              f"text; expected one of {', '.join(TEXT_OPS + TAG_OPS)}")
        if label_kind == LABEL_TAGS and op.name in WORD_OPS:
            raise ConfigError(f"{key} entry {entry!r}: {op.name} moves words and would break the tags' alignment "
                              "for token classification; expected one of "
                              f"{', '.join(('char', 'synonym') + TAG_OPS + EMBEDDING_OPS)}")
        if label_kind is not None and label_kind != LABEL_TAGS and op.name in TAG_OPS:
            raise ConfigError(f"{key} entry {entry!r}: {op.name} needs word tags (task.kind='token_classification'); "
                              f"expected one of {', '.join(TEXT_OPS + EMBEDDING_OPS)}")
        ops.append(op)
    return tuple(ops)


def text_ops(specs: Iterable[str], label_kind: str | None = None, synonyms_file: str = "",
             key: str = "data.augment") -> tuple[Op, ...]:
    """The ops of ``specs`` that change examples (text and token ops), in order; embedding ops left out."""
    return tuple(op for op in parse_ops(specs, key, label_kind, synonyms_file) if op.name not in EMBEDDING_OPS)


def embedding_ops(specs: Iterable[str]) -> dict[str, float]:
    """``{"token_cutoff": rate, "span_cutoff": rate}`` for those of ``specs`` (``data.augment``) the train step applies."""
    return {op.name: op.rate for op in parse_ops(specs) if op.name in EMBEDDING_OPS}


# ---------------------------------------------------------------------------------------------- pools


def read_synonyms(path: str, encoding: str = "utf-8") -> dict[str, tuple[str, ...]]:
    """``word -> its synonyms`` from a file with one group per line (words separated by commas, or by spaces
    when a line has no comma; blank lines and lines starting with ``#`` skipped). Words match lower-cased; a
    word in several groups gets all their words."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: synonyms file not found (data.synonyms_file)")
    groups = {}
    with text_file(path, encoding) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            words = [w.strip() for w in line.split(",")] if "," in line else line.split()
            words = list(dict.fromkeys(w for w in words if w))
            for word in words:
                groups.setdefault(word.lower(), []).extend(w for w in words if w.lower() != word.lower())
    if not groups:
        raise DataError(f"{path}: no synonym groups (data.synonyms_file); expected one group of words per line")
    return {word: tuple(dict.fromkeys(others)) for word, others in groups.items() if others}


def mention_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(start, end, type)`` of each entity mention of IOB2 ``tags`` (an I-X that continues nothing starts one)."""
    spans, start, kind = [], None, ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, tag_kind = tag.partition("-")
        if start is not None and not (prefix == "I" and tag_kind == kind):
            spans.append((start, i, kind))
            start = None
        if prefix in ("B", "I") and start is None:
            start, kind = i, tag_kind
    return spans


def build_pools(train_examples: Sequence[dict] = (), synonyms_file: str = "", encoding: str = "utf-8") -> Pools:
    """Pools from the training examples (their words by tag and mentions by type) and the synonyms file."""
    synonyms = read_synonyms(synonyms_file, encoding) if synonyms_file else {}
    tag_tokens: dict[str, list[str]] = {}
    mentions: dict[str, list[tuple[str, ...]]] = {}
    for example in train_examples:
        tags = example.get("tags")
        if "tokens" not in example or tags is None:
            continue
        for token, tag in zip(example["tokens"], tags):
            tag_tokens.setdefault(tag, []).append(token)
        for start, end, kind in mention_spans(tags):
            mentions.setdefault(kind, []).append(tuple(example["tokens"][start:end]))
    return Pools(synonyms=synonyms, tag_tokens={tag: tuple(v) for tag, v in tag_tokens.items()},
                 mentions={kind: tuple(v) for kind, v in mentions.items()})


# ---------------------------------------------------------------------------------------------- one example


def example_rng(seed: int, step: int, index: int) -> np.random.Generator:
    """The Generator that augments example ``index`` of the training split at ``step``."""
    return np.random.default_rng([int(seed) % 2**64, int(step), int(index), TRAIN_SALT])


def augmented_at(seed: int, step: int, index: int, probability: float) -> bool:
    """Whether example ``index`` is augmented at ``step`` (``data.augment_probability``): a draw of its own
    Generator, so the ops' random choices are those of :func:`example_rng` whatever the probability."""
    if probability >= 1.0:
        return True
    return bool(np.random.default_rng([int(seed) % 2**64, int(step), int(index), CHOICE_SALT]).random() < probability)


def _count(expected: float, rng: np.random.Generator) -> int:
    """``expected`` rounded at random to an integer with that mean (floor, plus one with the fraction's chance)."""
    whole = int(np.floor(expected))
    return whole + int(rng.random() < expected - whole)


_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def _synonym_of(word: str, synonyms: Mapping[str, tuple[str, ...]], rng, single_word: bool) -> str | None:
    """A synonym of ``word`` (punctuation around it and a capital first letter kept), or None."""
    lead, core, trail = _CORE.match(word).groups()
    choices = [s for s in synonyms.get(core.lower(), ()) if not single_word or " " not in s]
    if not core or not choices:
        return None
    choice = choices[int(rng.integers(len(choices)))]
    if core[:1].isupper():
        choice = choice[:1].upper() + choice[1:]
    return lead + choice + trail


def _swap(words: list[str], rate: float, rng) -> bool:
    swaps = _count(rate * len(words), rng)
    if len(words) < 2 or not swaps:
        return False
    for _ in range(swaps):
        i, j = rng.choice(len(words), size=2, replace=False)
        words[i], words[j] = words[j], words[i]
    return True


def _delete(words: list[str], rate: float, rng) -> bool:
    if not words:
        return False
    keep = rng.random(len(words)) >= rate
    if not keep.any():  # never an empty text
        keep[int(rng.integers(len(words)))] = True
    if keep.all():
        return False
    words[:] = [w for w, k in zip(words, keep) if k]
    return True


def _insert(words: list[str], rate: float, rng, synonyms) -> bool:
    inserts = _count(rate * len(words), rng)
    if not words or not inserts:
        return False
    for _ in range(inserts):
        with_synonyms = [core for core in (_CORE.match(w).group(2).lower() for w in words) if core in synonyms]
        if with_synonyms:  # a synonym as the file writes it, without the punctuation around the word
            choices = synonyms[with_synonyms[int(rng.integers(len(with_synonyms)))]]
            new = choices[int(rng.integers(len(choices)))]
        else:
            new = words[int(rng.integers(len(words)))]
        words.insert(int(rng.integers(len(words) + 1)), new)
    return True


def _replace_synonyms(words: list[str], rate: float, rng, synonyms, single_word: bool = False) -> bool:
    draws = rng.random(len(words))
    changed = False
    for i, word in enumerate(words):
        if draws[i] < rate:
            new = _synonym_of(word, synonyms, rng, single_word)
            if new is not None and new != word:
                words[i], changed = new, True
    return changed


def _neighbour(char: str, rng) -> str:
    near = KEYBOARD_NEIGHBOURS[char.lower()]
    new = near[int(rng.integers(len(near)))]
    return new.upper() if char.isupper() else new


def char_noise(text: str, rate: float, rng) -> tuple[str, int]:
    """``text`` with keyboard typos at a fraction ``rate`` of its letters and digits, and how many edits were
    made: each chosen character is replaced by a QWERTY neighbour, deleted, followed by an inserted neighbour,
    or swapped with the next character, at random. A text never becomes empty (it is returned unchanged)."""
    chars = list(text)
    draws = rng.random(len(chars))
    kinds = rng.integers(4, size=len(chars))
    out, edits, i = [], 0, 0
    while i < len(chars):
        char = chars[i]
        if draws[i] >= rate or char.lower() not in KEYBOARD_NEIGHBOURS:
            out.append(char)
            i += 1
            continue
        edits += 1
        kind = int(kinds[i])
        if kind == 3 and i + 1 < len(chars) and not chars[i + 1].isspace():  # transposition
            out.extend((chars[i + 1], char))
            i += 2
            continue
        if kind == 1:  # deletion
            pass
        elif kind == 2:  # insertion of a neighbour after the character
            out.extend((char, _neighbour(char, rng)))
        else:  # substitution (also a transposition with nothing to swap with)
            out.append(_neighbour(char, rng))
        i += 1
    new = "".join(out)
    if not new.strip():
        return text, 0
    return new, edits


def _augment_words(text: str, op: Op, rng, pools: Pools) -> str:
    if op.name == "char":
        return char_noise(text, op.rate, rng)[0]
    words = text.split()
    if op.name == "swap":
        changed = _swap(words, op.rate, rng)
    elif op.name == "delete":
        changed = _delete(words, op.rate, rng)
    elif op.name == "insert":
        changed = _insert(words, op.rate, rng, pools.synonyms)
    elif op.name == "synonym":
        changed = _replace_synonyms(words, op.rate, rng, pools.synonyms)
    else:
        raise ValueError(f"op {op.name!r} needs word tags (token classification examples)")
    return " ".join(words) if changed else text  # an unchanged text keeps its own spacing


def _label_replace(tokens: list[str], tags: list[str], rate: float, rng, pools: Pools) -> None:
    draws = rng.random(len(tokens))
    for i, tag in enumerate(tags):
        pool = pools.tag_tokens.get(tag)
        if draws[i] < rate and pool:
            tokens[i] = pool[int(rng.integers(len(pool)))]


def _mention_replace(tokens: list[str], tags: list[str], rate: float, rng, pools: Pools) -> None:
    spans = mention_spans(tags)
    draws = rng.random(len(spans))
    for (start, end, kind), draw in reversed(list(zip(spans, draws))):  # right to left: earlier spans stay put
        pool = pools.mentions.get(kind)
        if draw < rate and pool:
            mention = list(pool[int(rng.integers(len(pool)))])
            tokens[start:end] = mention
            tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (len(mention) - 1)


def _segment_shuffle(tokens: list[str], tags: list[str], rate: float, rng) -> None:
    mentions = mention_spans(tags)
    segments, position = [], 0
    for start, end, _ in mentions + [(len(tags), len(tags), "")]:
        if start > position:
            segments.append((position, start))  # a run of O
        if end > start:
            segments.append((start, end))
        position = end
    draws = rng.random(len(segments))
    for (start, end), draw in zip(segments, draws):
        if draw < rate and end - start > 1:
            tokens[start:end] = [tokens[start + int(j)] for j in rng.permutation(end - start)]


def _augment_tagged(example: dict, ops: Sequence[Op], rng, pools: Pools) -> dict:
    tokens = list(example["tokens"])
    tags = list(example["tags"]) if example.get("tags") is not None else None
    for op in ops:
        if op.name == "char":
            tokens = [char_noise(token, op.rate, rng)[0] for token in tokens]
        elif op.name == "synonym":
            _replace_synonyms(tokens, op.rate, rng, pools.synonyms, single_word=True)
        elif op.name in WORD_OPS:
            raise ValueError(f"op {op.name!r} would break the tags' alignment; token classification takes "
                             f"{', '.join(('char', 'synonym') + TAG_OPS)}")
        elif tags is None or op.name in EMBEDDING_OPS:
            continue  # unlabelled words: nothing to keep the tags of; embedding ops act in the train step
        elif op.name == "label_replace":
            _label_replace(tokens, tags, op.rate, rng, pools)
        elif op.name == "mention_replace":
            _mention_replace(tokens, tags, op.rate, rng, pools)
        elif op.name == "segment_shuffle":
            _segment_shuffle(tokens, tags, op.rate, rng)
    new = dict(example, tokens=tokens)
    if tags is not None:
        new["tags"] = tags
    return new


def text_columns(label_kind: str) -> tuple[str, ...]:
    """The example fields augmented for ``label_kind``: the text and its pair, but never a causal-LM /
    generation target (the pair of a LABEL_NONE example is what the model learns to write)."""
    return ("text",) if label_kind == LABEL_NONE else ("text", "text_pair")


def augment_example(example: dict, ops: Sequence[Op], rng: np.random.Generator, pools: Pools | None = None,
                    columns: Sequence[str] = ("text", "text_pair")) -> dict:
    """A new example with ``ops`` applied in order: to ``tokens`` (and ``tags``) of a token-classification
    example, else to each of ``columns`` it has. ``example`` itself is left as it is."""
    pools = pools or Pools()
    if "tokens" in example:
        return _augment_tagged(example, ops, rng, pools)
    new = dict(example)
    for column in columns:
        if isinstance(new.get(column), str):
            for op in ops:
                if op.name in TAG_OPS:
                    raise ValueError(f"op {op.name!r} needs word tags (token classification examples)")
                if op.name not in EMBEDDING_OPS:
                    new[column] = _augment_words(new[column], op, rng, pools)
    return new


def perturb_split(examples: Sequence[dict], specs: Sequence[str | Op], seed: int = 0, pools: Pools | None = None,
                  columns: Sequence[str] = ("text", "text_pair")) -> list[dict]:
    """A perturbed copy of ``examples`` for robustness evaluation: ``specs`` applied to example ``i`` with a
    Generator seeded by ``(seed, i)``, so every call gives the same copy."""
    ops = tuple(s if isinstance(s, Op) else _parse_one(s, "train.eval_perturbations") for s in specs)
    return [augment_example(example, ops, np.random.default_rng([int(seed) % 2**64, i, EVAL_SALT]), pools, columns)
            for i, example in enumerate(examples)]
