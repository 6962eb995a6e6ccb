"""OpenAI-format completion bodies from generated tokens: the text as ``mgpt generate`` decodes it, cut at
a stop string, usage counts, and the chunks of a streamed answer."""

from __future__ import annotations

import json
import time
import uuid
from typing import Iterator, Sequence

from mgpt.generate import until_stop


def finish(tokenizer, tokens: Sequence[int], stop_tokens: Sequence[int], stop_strings: Sequence[str]) -> dict:
    """``{"text", "finish_reason", "completion_tokens"}`` of one row of new tokens.

    The text is what ``mgpt generate`` prints (cut at the first stop token, special tokens skipped, stripped),
    then cut before the first of ``stop_strings``. ``completion_tokens`` counts the tokens decoded, the
    stop token included."""
    kept = until_stop(tokens, stop_tokens)
    stopped = len(kept) < len(tokens)
    text = tokenizer.decode(kept, skip_special_tokens=True).strip()
    cuts = [text.find(s) for s in stop_strings if s in text]
    if cuts:
        text, stopped = text[: min(cuts)].rstrip(), True
    return {"text": text, "finish_reason": "stop" if stopped else "length",
            "completion_tokens": len(kept) + (1 if len(kept) < len(tokens) else 0)}


def text_pieces(tokenizer, tokens: Sequence[int], final: str) -> list[str]:
    """Pieces of ``final`` as its tokens add them (one per token that adds text); they join to ``final``.

    A prefix's text is only sent once it is a prefix of ``final`` (trailing spaces and half a multi-byte
    character wait for the next token), so the joined stream equals the non-streamed text."""
    pieces, sent = [], ""
    for end in range(1, len(tokens) + 1):
        text = tokenizer.decode(list(tokens[:end]), skip_special_tokens=True).strip()
        if len(text) > len(sent) and final.startswith(text):
            pieces.append(text[len(sent):])
            sent = text
    if len(final) > len(sent):
        pieces.append(final[len(sent):])
    return pieces


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(model: str, results: Sequence[dict], prompt_tokens: int) -> dict:
    """``text_completion`` object: one choice per prompt."""
    choices = [{"index": i, "text": r["text"], "finish_reason": r["finish_reason"], "logprobs": None}
               for i, r in enumerate(results)]
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, sum(r["completion_tokens"] for r in results))}


def chat_body(model: str, result: dict, prompt_tokens: int) -> dict:
    """``chat.completion`` object with the assistant's message."""
    choice = {"index": 0, "message": {"role": "assistant", "content": result["text"]},
              "finish_reason": result["finish_reason"], "logprobs": None}
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(prompt_tokens, result["completion_tokens"])}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def chat_stream(model: str, pieces: Sequence[str], result: dict, prompt_tokens: int) -> Iterator[str]:
    """Server-sent events of a streamed chat answer: a role chunk, one chunk per piece, a finish chunk
    with the usage, then ``data: [DONE]``."""
    head = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    yield _event(dict(head, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}]))
    for piece in pieces:
        yield _event(dict(head, choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
    yield _event(dict(head, choices=[{"index": 0, "delta": {}, "finish_reason": result["finish_reason"]}],
                      usage=usage(prompt_tokens, result["completion_tokens"])))
    yield "data: [DONE]\n\n"


def completion_stream(model: str, pieces_per_prompt: Sequence[Sequence[str]], results: Sequence[dict],
                      prompt_tokens: int) -> Iterator[str]:
    """Server-sent events of streamed completions (``text_completion`` chunks), then ``data: [DONE]``."""
    head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model}
    for index, pieces in enumerate(pieces_per_prompt):
        for piece in pieces:
            yield _event(dict(head, choices=[{"index": index, "text": piece, "finish_reason": None,
                                              "logprobs": None}]))
    for index, result in enumerate(results):
        yield _event(dict(head, choices=[{"index": index, "text": "", "finish_reason": result["finish_reason"],
                                          "logprobs": None}]))
    yield _event(dict(head, choices=[], usage=usage(prompt_tokens, sum(r["completion_tokens"] for r in results))))
    yield "data: [DONE]\n\n"
