"""The model calls behind the endpoints, jitted once per shape of a fixed set compiled at start-up.

:class:`TaskPredictor` serves a task head (classification, tagging, regression): texts are encoded by
the same encoders ``mgpt predict`` uses (:mod:`mgpt.data.encode`), so its outputs equal the command's.
:class:`Generator` serves a causal LM with :func:`mgpt.serve.decoding.decode_rows`. Both take encoded
items one request at a time (``encode_*``, host side, in the request) and run lists of them in one call
(``run``, in the batcher's worker thread); ``traces`` counts compilations, which must not grow after
:meth:`warm_up`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np

from mgpt.data import chat
from mgpt.data.encode import encode_texts, encode_tokens, pad_id
from mgpt.generate import settings_for
from mgpt.serve.batcher import batch_ladder, length_ladder, pad_batch, smallest_fit
from mgpt.serve.decoding import TRACES, decode_rows
from mgpt.serve.schemas import RequestError
from mgpt.train.engine import TraceCounter
from mgpt.train.step import forward

# task kind -> the endpoint that serves it
TASK_ENDPOINTS = {"sequence_classification": "classify", "multi_label_classification": "classify",
                  "token_classification": "tag", "regression": "score"}


def too_long(index: int, length: int, limit: int, what: str) -> RequestError:
    return RequestError(413, f"input {index} has {length} tokens; this server takes at most {limit} {what}",
                        "input")


@dataclasses.dataclass
class Encoded:
    """One input ready for a batch: its token rows (and, for tagging, how words map to sub-words)."""

    arrays: dict[str, list[int]]  # input_ids, attention_mask (, token_type_ids): unpadded
    word_index: np.ndarray | None = None  # tagging: each word's first sub-word position (-1: none)

    @property
    def length(self) -> int:
        return len(self.arrays["input_ids"])


class TaskPredictor:
    """A classification, tagging or regression head over batches of ``max_batch`` rows at most and
    lengths of ``length_ladder(max_length)`` (``data.max_length``: longer inputs are refused, not cut)."""

    def __init__(self, model, params, tokenizer, task, label_names: Sequence[str], max_length: int,
                 max_batch: int, lengths: Sequence[int] = ()):
        if task.name not in TASK_ENDPOINTS:
            raise ValueError(f"task {task.name!r} has no serving endpoint; served: {', '.join(TASK_ENDPOINTS)}")
        self.params, self.tokenizer, self.task = params, tokenizer, task
        self.kind, self.endpoint = task.name, TASK_ENDPOINTS[task.name]
        self.label_names = list(label_names)
        self.max_length = max_length
        self.batches = batch_ladder(max_batch)
        self.lengths = tuple(lengths) or length_ladder(max_length)
        self.traces = TraceCounter(functools.partial(_logits, model=model))
        self._logits = jax.jit(self.traces)

    def encode_texts(self, texts: Sequence[str]) -> list[Encoded]:
        """Each text tokenized as training encoded it; one longer than ``max_length`` tokens is a 413."""
        encoded = encode_texts([{"text": t} for t in texts], self.tokenizer, _room(texts))
        return self._rows(encoded.arrays)

    def encode_words(self, words: Sequence[Sequence[str]]) -> list[Encoded]:
        """Pre-split words, each word's tag read at its first sub-word (as ``mgpt predict`` reads it)."""
        room = _room([" ".join(w) for w in words])
        encoded = encode_tokens([{"tokens": list(w)} for w in words], self.tokenizer, room, {})
        rows = self._rows({k: v for k, v in encoded.arrays.items() if k != "labels"})
        for row, index, count in zip(rows, encoded.word_index, encoded.num_words):
            row.word_index = index[:count]
        return rows

    def _rows(self, arrays: dict[str, np.ndarray]) -> list[Encoded]:
        rows = []
        for i, length in enumerate(arrays["attention_mask"].sum(axis=1)):
            if length > self.max_length:
                raise too_long(i, int(length), self.max_length, "(data.max_length)")
            rows.append(Encoded({key: value[i, :length].tolist() for key, value in arrays.items()}))
        return rows

    def run(self, items: Sequence[Encoded]) -> list[np.ndarray]:
        """Logits of each item: ``(C,)``, ``(T, C)`` for tagging (its own length), ``()`` for a score."""
        batch = smallest_fit(len(items), self.batches)
        length = smallest_fit(max(item.length for item in items), self.lengths)
        arrays = {}
        for key in items[0].arrays:
            fill = pad_id(self.tokenizer) if key == "input_ids" else 0
            arrays[key] = pad_batch([item.arrays[key] for item in items], batch, length, fill)[0]
        logits = np.asarray(self._logits(self.params, arrays))
        if self.endpoint == "tag":
            return [logits[i, :item.length] for i, item in enumerate(items)]
        return list(logits[: len(items)])

    def warm_up(self) -> int:
        """Compile every (batch, length) shape now; returns how many there are."""
        keys = self.tokenizer("a").keys() & {"input_ids", "attention_mask", "token_type_ids"}
        for batch in self.batches:
            for length in self.lengths:
                self.run([Encoded({key: [1 if key == "attention_mask" else 0] * length for key in keys})] * batch)
        return len(self.batches) * len(self.lengths)

    @property
    def compilations(self) -> int:
        return self.traces.traces


def _room(texts: Sequence[str]) -> int:
    """A length no tokenization of ``texts`` reaches (a token holds at least one byte; 8 for special tokens), so
    nothing is cut before an over-long input is refused with its true length."""
    return max(len(text.encode()) for text in texts) + 8


def _logits(params, batch, *, model):
    return forward(model, params, batch, deterministic=True)


@dataclasses.dataclass
class Prompt:
    """One generation request row: prompt ids, decode settings and the PRNG seed of its sampling."""

    ids: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int


class Generator:
    """A causal LM decoding batches of up to ``max_batch`` left-padded prompts of ``length_ladder(max_prompt)``
    lengths for a ladder of step counts up to ``max_new_tokens``; a request's ``max_tokens`` takes the
    smallest step count that holds it and keeps its first ``max_tokens`` tokens."""

    endpoint = "generate"
    kind = "causal_lm"

    def __init__(self, model, params, tokenizer, *, max_prompt: int, max_new_tokens: int, max_batch: int,
                 wrap_prompt: Callable[[str], Any] = lambda text: text, lengths: Sequence[int] = (),
                 steps: Sequence[int] = ()):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.settings = settings_for(tokenizer, max_new_tokens)  # stop and pad tokens as mgpt generate's
        self.max_prompt, self.max_new_tokens = max_prompt, max_new_tokens
        self.batches = batch_ladder(max_batch)
        self.lengths = tuple(lengths) or length_ladder(max_prompt)
        self.steps = tuple(steps) or length_ladder(max_new_tokens)
        self.wrap_prompt = wrap_prompt  # how mgpt generate --prompt renders a text (chat template or not)
        limit = getattr(model.spec.arch, "n_positions", None)  # learned positions; RoPE has no hard limit
        if limit is not None and self.lengths[-1] + self.steps[-1] > limit:
            raise ValueError(f"a prompt of {self.lengths[-1]} tokens + {self.steps[-1]} new tokens exceeds the "
                             f"model's {limit} positions; lower data.max_length or task.max_new_tokens")
        self.traces = 0

    def encode_prompt(self, text: str, index: int = 0) -> list[int]:
        """A completion prompt's ids, rendered as ``mgpt generate --prompt`` renders it."""
        prompt = self.wrap_prompt(text)
        ids = (chat.render_ids(self.tokenizer, prompt, add_generation_prompt=True) if not isinstance(prompt, str)
               else list(self.tokenizer([prompt], verbose=False)["input_ids"][0]))
        return self._checked(ids, index)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """A conversation's ids: the chat template with the assistant's turn opened (as ``mgpt generate``)."""
        chat.check_template(self.tokenizer, "the model")
        return self._checked(chat.render_ids(self.tokenizer, messages, add_generation_prompt=True), 0)

    def _checked(self, ids: list[int], index: int) -> list[int]:
        if len(ids) > self.max_prompt:
            raise too_long(index, len(ids), self.max_prompt, "in a prompt (data.max_length)")
        if not ids:
            raise RequestError(400, f"prompt {index} is empty after tokenization", "prompt")
        return ids

    def check_max_tokens(self, max_tokens: int) -> None:
        if max_tokens > self.max_new_tokens:
            raise RequestError(400, f"max_tokens={max_tokens} is over this server's limit of "
                               f"{self.max_new_tokens} (--max-new-tokens)", "max_tokens")

    def batch_key(self, max_tokens: int) -> tuple[str, int]:
        """Requests that share a call share a step count."""
        return (self.endpoint, smallest_fit(max_tokens, self.steps))

    def run(self, steps: int, items: Sequence[Prompt]) -> list[np.ndarray]:
        """The new tokens of each prompt (``max_tokens`` of them, pad after a stop token)."""
        batch = smallest_fit(len(items), self.batches)
        length = smallest_fit(max(len(item.ids) for item in items), self.lengths)
        ids, mask = pad_batch([item.ids for item in items], batch, length, self.settings.pad_id, left=True)
        rows = list(items) + [items[0]] * (batch - len(items))
        keys = np.stack([np.asarray(jax.random.PRNGKey(item.seed)) for item in rows])
        settings = (np.asarray([item.temperature for item in rows], np.float32),
                    np.asarray([item.top_k for item in rows], np.int32),
                    np.asarray([item.top_p for item in rows], np.float32))
        before = TRACES["decode_rows"]
        tokens = decode_rows(self.params, ids, mask, keys, *settings, model=self.model, steps=steps,
                             stop_tokens=self.settings.stop_tokens, pad_id=self.settings.pad_id)
        self.traces += TRACES["decode_rows"] - before
        tokens = np.asarray(tokens)
        return [tokens[i, :item.max_tokens] for i, item in enumerate(items)]

    @property
    def compilations(self) -> int:
        return self.traces

    def warm_up(self) -> int:
        """Compile every (batch, prompt length, steps) shape now; returns how many there are."""
        for steps in self.steps:
            for batch in self.batches:
                for length in self.lengths:
                    self.run(steps, [Prompt([self.settings.pad_id] * length, 1, 0.0, 0, 1.0, 0)] * batch)
        return len(self.steps) * len(self.batches) * len(self.lengths)
