"""Chat data: conversations (``{"messages": [{"role", "content"}, ...]}`` JSONL, the OpenAI / TRL format)
rendered with the checkpoint tokenizer's chat template, the loss on the assistant turns only.

Reading (:func:`chat_records`) checks every record and names its ``file:line``; an example is
``{"messages": [...], "where": "file:line"}`` (:func:`mgpt.data.records.example_from_record`).
Encoding (:func:`encode_chat`) renders each conversation with ``tokenizer.apply_chat_template``; an
assistant turn's tokens are those between the rendering of the messages before it with
``add_generation_prompt=True`` and the rendering that includes it (its content and its end-of-turn
marker as the template writes them). That works with any template whose renderings of a
conversation's prefixes are prefixes of its full rendering (checked; a DataError names the line
otherwise). Everything else (system and user turns, the template's scaffolding) gets label
``IGNORE_INDEX``.

Generation continues a conversation from its messages before the last assistant message, rendered with
``add_generation_prompt=True`` (:func:`prompt_messages`, :func:`generation_prompt`); the reference is
that message's content (:func:`reference`). The rendered prompt holds its special tokens already, so
it is handed over as token ids, never re-tokenized (a second BOS would creep in).
"""

from __future__ import annotations

from typing import Any, Sequence

from mgpt.constants import IGNORE_INDEX
from mgpt.data.encode import Encoded, lm_arrays, warn_truncated
from mgpt.data.errors import DataError
from mgpt.data.records import Records

ROLES = ("system", "user", "assistant")
ASSISTANT = "assistant"


def check_messages(value: Any, where: str, field: str = "messages", need_assistant: bool = True) -> list[dict]:
    """``value`` as a list of ``{"role", "content"}`` messages, checked; a bad one fails naming ``where``.

    Other keys of a message are dropped (templates see role and content only). ``need_assistant``:
    a conversation without an assistant turn has nothing to train on or to score against.
    """
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field {field!r} must be a non-empty list of {{'role', 'content'}} messages, "
                        f"got {value!r:.80}")
    messages = []
    for i, message in enumerate(value):
        place = f"{where}: {field}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{place} must be an object with 'role' and 'content', got {message!r:.80}")
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            raise DataError(f"{place}: missing key {missing[0]!r}; a message has 'role' and 'content', "
                            f"it has {sorted(message)}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise DataError(f"{place}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{place}: content must be a string, got {content!r:.80}")
        messages.append({"role": role, "content": content})
    if need_assistant and not any(m["role"] == ASSISTANT for m in messages):
        raise DataError(f"{where}: the conversation has no assistant message (roles: "
                        f"{[m['role'] for m in messages]}); expected at least one to train on")
    return messages


def chat_records(records: Records, messages_column: str = "messages", labels_optional: bool = False) -> Records:
    """The rows of a JSONL file of conversations, each record's ``messages_column`` checked
    (:func:`check_messages`); the data path's ``"chat"`` reader (:data:`mgpt.data.formats.READERS`).

    Records keep their other fields; the messages are stored under ``"messages"``. With
    ``labels_optional`` (a file to predict on) a conversation may lack an assistant turn.
    """
    rows = []
    for where, record in records.rows:
        if messages_column not in record:
            raise DataError(f"{where}: missing key {messages_column!r} (data.messages_column: the conversation); "
                            f"the object has keys {sorted(record)}")
        messages = check_messages(record[messages_column], where, messages_column, not labels_optional)
        rows.append((where, dict(record, messages=messages)))
    return Records(records.source, rows, records.missing)


def check_template(tokenizer, where: str = "") -> None:
    """Fail naming ``where`` when the tokenizer has no chat template to render conversations with."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{where or 'data'}: conversations are rendered with the tokenizer's chat template, and "
                        "this tokenizer has none (tokenizer.chat_template is empty)")


def render_ids(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template (special tokens as it writes them)."""
    return list(tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=False,
                                              add_generation_prompt=add_generation_prompt))


def render_text(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The text of ``messages`` rendered by the chat template (what :func:`render_ids` tokenizes)."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_messages(messages: Sequence[dict]) -> list[dict]:
    """What generation continues: the messages before the last assistant message (all of them when none)."""
    last = [i for i, m in enumerate(messages) if m["role"] == ASSISTANT]
    return list(messages[: last[-1]]) if last else list(messages)


def reference(messages: Sequence[dict]) -> str | None:
    """The content of the last assistant message (the generation reference); None when there is none."""
    replies = [m["content"] for m in messages if m["role"] == ASSISTANT]
    return replies[-1] if replies else None


def generation_prompt(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Token ids generation continues: :func:`prompt_messages` rendered with ``add_generation_prompt=True``."""
    return render_ids(tokenizer, prompt_messages(messages), add_generation_prompt=True)


def _check_prefix(prefix: list[int], ids: list[int], where: str, turn: int) -> None:
    if ids[: len(prefix)] != prefix:
        raise DataError(f"{where}: the chat template is not prefix-stable at message {turn}: the rendering of the "
                        "messages before it (with add_generation_prompt=True) is not a prefix of the rendering with "
                        "it, so the assistant tokens cannot be located")


def conversation_ids(tokenizer, messages: Sequence[dict], where: str = "") -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one conversation: labels are the ids on assistant turns, -100 elsewhere."""
    ids = render_ids(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(ids)
    for turn, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        start = render_ids(tokenizer, messages[:turn], add_generation_prompt=True) if turn else []
        upto = render_ids(tokenizer, messages[: turn + 1])
        _check_prefix(start, upto, where, turn)
        _check_prefix(upto, ids, where, turn + 1)
        labels[len(start): len(upto)] = upto[len(start):]
    return ids, labels


def prompt_conversation(prompt: str, target: str | None = None, system_prompt: str = "") -> list[dict]:
    """A prompt (and its target) as a conversation: ``[system?, user: prompt, assistant: target?]``."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    if target is not None:
        messages.append({"role": ASSISTANT, "content": target})
    return messages


def fit_prompt(tokenizer, messages: list[dict], max_length: int) -> list[dict]:
    """``messages`` with the last user message's content cut from its end, token by token, until the
    whole conversation renders to at most ``max_length`` tokens (so the assistant turn is never cut)."""
    user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    for _ in range(4):  # a cut can change how neighbouring text tokenizes; a few rounds settle it
        excess = len(render_ids(tokenizer, messages)) - max_length
        if excess <= 0:
            break
        content = tokenizer(messages[user]["content"], add_special_tokens=False)["input_ids"]
        kept = tokenizer.decode(content[: max(0, len(content) - excess)])
        messages = messages[:user] + [dict(messages[user], content=kept)] + messages[user + 1:]
    return messages


def encode_prompts_as_chat(examples: Sequence[dict], tokenizer, max_length: int, system_prompt: str = "", *,
                           where: str = "") -> Encoded:
    """Prompt/target examples (``"text"``, ``"text_pair"``) as one-turn conversations
    (:func:`prompt_conversation`) encoded by :func:`encode_chat`; a prompt too long is shortened first."""
    if not examples:
        raise DataError(f"{where or 'data'}: no examples to encode")
    check_template(tokenizer, where)
    conversations, shortened = [], 0
    for example in examples:
        messages = prompt_conversation(example["text"], example.get("text_pair"), system_prompt)
        fitted = fit_prompt(tokenizer, messages, max_length)
        shortened += fitted is not messages
        conversations.append({"messages": fitted, "where": example.get("where") or where})
    warn_truncated(shortened, len(examples), max_length, where, "; their prompts were shortened")
    return encode_chat(conversations, tokenizer, max_length, where=where)


def encode_chat(examples: Sequence[dict], tokenizer, max_length: int, *, where: str = "") -> Encoded:
    """Conversations into right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (assistant tokens only).

    Longer conversations keep their first ``max_length`` tokens (one warning says how many were cut).
    ``prompt_ids`` holds each example's generation prompt (:func:`generation_prompt`), untruncated.
    """
    if not examples:
        raise DataError(f"{where or 'data'}: no examples to encode")
    check_template(tokenizer, where)
    rows, label_rows, prompts = [], [], []
    truncated = 0
    for example in examples:
        ids, labels = conversation_ids(tokenizer, example["messages"], example.get("where") or where)
        truncated += len(ids) > max_length
        rows.append(ids[:max_length])
        label_rows.append(labels[:max_length])
        prompts.append(generation_prompt(tokenizer, example["messages"]))
    warn_truncated(truncated, len(examples), max_length, where, "; their later turns are not trained on")
    return Encoded(arrays=lm_arrays(rows, label_rows, max_length, tokenizer), num_truncated=truncated,
                   prompt_ids=prompts)

