"""Request and response bodies (pydantic), and :class:`RequestError`, the 4xx a request earns.

The OpenAI-compatible bodies take the fields mgpt supports and refuse any other (422 naming it), so a
client never believes a setting (``presence_penalty``, ``n=2``, ...) was applied when it was not.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a one-line ``message``, the body field ``param``."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(_Strict):
    """What OpenAI's completion bodies share; None takes the experiment's task.* default."""

    model: Optional[str] = None  # accepted for OpenAI clients; the server serves one model
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0)  # 0 is greedy, as in mgpt generate
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    top_k: Optional[int] = Field(None, ge=0)  # not in OpenAI's API; 0 is off
    stop: Optional[Union[str, list[str]]] = None
    stream: bool = False
    seed: Optional[int] = None
    n: Literal[1] = 1
    user: Optional[str] = None

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]] = Field(min_length=1)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str
    name: Optional[str] = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class TextsRequest(_Strict):
    """``/v1/classify``, ``/v1/score`` and ``/v1/tag``: one text or a list of them."""

    input: Union[str, list[str]] = Field(min_length=1)
    model: Optional[str] = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ClassifyRequest(TextsRequest):
    top_k: Optional[int] = Field(None, ge=1)  # labels listed per input (default: all)


class TagRequest(TextsRequest):
    pass


class AssistRequest(_Strict):
    question: str = Field(min_length=1)
    model: Optional[str] = None


class LabelScore(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    label: str  # the predicted label (arg-max, as mgpt predict)
    score: float
    labels: list[LabelScore]  # most likely first


class Entity(BaseModel):
    type: str
    text: str
    start: int  # character span in the input: text == input[start:end]
    end: int
    words: list[int]  # word indices [first, last] (words are the input's whitespace-separated pieces)


class Tagging(BaseModel):
    words: list[str]
    tags: list[str]  # one per word, as mgpt predict writes them
    entities: list[Entity]


class AssistAnswer(BaseModel):
    intent: str
    confidence: float
    handoff: bool  # True: the confidence is under the threshold, the answer is the hand-off message
    answer: str
