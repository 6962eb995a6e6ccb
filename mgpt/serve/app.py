"""The FastAPI app: endpoints over an already-loaded predictor (tests build it in-process; only
:mod:`mgpt.serve.server` opens a socket).

A causal LM serves ``/v1/completions`` and ``/v1/chat/completions`` (OpenAI's bodies, ``stream`` as
server-sent events); a task head serves ``/v1/classify``, ``/v1/tag`` or ``/v1/score``; with an
:class:`~mgpt.serve.assistant.Assistant` a classifier also serves ``/v1/assist``. Every endpoint answers
errors as ``{"error": {"message", "type", "param"}}``: 401 without the API key, 404 for an endpoint this
model does not serve, 413 for an input over the compiled length, 422 for a malformed body (naming the
field), 503 when the batching queue is full.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import re
import secrets

import numpy as np
from scipy.special import softmax
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from seqeval.metrics.sequence_labeling import get_entities

from mgpt.data import DataError
from mgpt.serve import completions
from mgpt.serve.batcher import Batcher, QueueFull
from mgpt.serve.predictors import Prompt
from mgpt.serve.schemas import (AssistRequest, ChatRequest, ClassifyRequest, CompletionRequest, RequestError,
                                TagRequest, TextsRequest)
from mgpt.tasks import word_predictions


@dataclasses.dataclass(frozen=True)
class GenerationDefaults:
    """What a completion request leaves out: the experiment's ``task.*`` generation settings."""

    max_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


def error_body(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 503: "overloaded_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace-separated words of ``text`` and their character spans."""
    found = list(re.finditer(r"\S+", text))
    return [m.group() for m in found], [m.span() for m in found]


def entities_of(text: str, tags: list[str], spans: list[tuple[int, int]]) -> list[dict]:
    """Entities of per-word IOB tags (seqeval's reading) with their character spans in ``text``."""
    out = []
    for kind, first, last in get_entities(tags):
        start, end = spans[first][0], spans[last][1]
        out.append({"type": kind, "text": text[start:end], "start": start, "end": end, "words": [first, last]})
    return out


def create_app(predictor, *, model_name: str, api_key: str | None = None, max_queue: int = 64,
               wait_s: float = 0.005, assistant=None, defaults: GenerationDefaults = GenerationDefaults()) -> FastAPI:
    """The app serving ``predictor`` (:class:`~mgpt.serve.predictors.TaskPredictor` or ``Generator``, warmed
    up already) as ``model_name``; with ``api_key`` every request needs ``Authorization: Bearer <api_key>``."""

    def run(key, items):
        return predictor.run(key[1], items) if key[0] == "generate" else predictor.run(items)

    batcher = Batcher(run, max_batch=predictor.batches[-1], max_queue=max_queue, wait_s=wait_s)
    if assistant is not None:
        assistant.check_labels(predictor.label_names)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mgpt serve", lifespan=lifespan)
    app.state.batcher, app.state.predictor = batcher, predictor

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key is not None:
            header = request.headers.get("authorization", "")
            if not hmac.compare_digest(header.encode(), f"Bearer {api_key}".encode()):
                return error_body(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return error_body(422, f"{where or 'body'}: {first['msg']}", where or None)

    @app.exception_handler(RequestError)
    async def refused(_, error: RequestError):
        return error_body(error.status, error.message, error.param)

    @app.exception_handler(QueueFull)
    async def overloaded(_, error: QueueFull):
        return error_body(503, str(error))

    @app.exception_handler(DataError)
    async def bad_data(_, error: DataError):
        return error_body(400, str(error))

    def served(endpoint: str) -> None:
        if predictor.endpoint != endpoint and not (endpoint == "assist" and assistant is not None):
            raise RequestError(404, f"this model ({predictor.kind}) does not serve /v1/{endpoint}; it serves "
                                    f"{', '.join(served_paths())}")

    def served_paths() -> list[str]:
        paths = {"generate": ["/v1/completions", "/v1/chat/completions"]}.get(predictor.endpoint,
                                                                             [f"/v1/{predictor.endpoint}"])
        return paths + (["/v1/assist"] if assistant is not None else [])

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "task": predictor.kind, "endpoints": served_paths(),
                "queue": batcher.waiting, "max_queue": max_queue, "max_batch": predictor.batches[-1],
                "model_calls": batcher.calls}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "mgpt"}]}

    async def probabilities(texts: list[str]) -> list[np.ndarray]:
        return [softmax(row) for row in await batcher.submit_many(("task",), predictor.encode_texts(texts))]

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest):
        served("classify")
        names = predictor.label_names
        data = []
        for index, probs in enumerate(await probabilities(body.texts())):
            order = np.argsort(-probs, kind="stable")[: body.top_k or len(names)]
            data.append({"index": index, "label": names[int(np.argmax(probs))], "score": float(probs.max()),
                         "labels": [{"label": names[int(i)], "score": float(probs[i])} for i in order]})
        return {"object": "list", "model": model_name, "data": data}

    @app.post("/v1/assist")
    async def assist(body: AssistRequest):
        served("assist")
        (probs,) = await probabilities([body.question])
        return dict(assistant.reply(probs, predictor.label_names), model=model_name)

    @app.post("/v1/tag")
    async def tag(body: TagRequest):
        served("tag")
        texts = body.texts()
        split = [split_words(text) for text in texts]
        empty = [i for i, (words, _) in enumerate(split) if not words]
        if empty:
            raise RequestError(400, f"input {empty[0]} has no words to tag", "input")
        encoded = predictor.encode_words([words for words, _ in split])
        logits = await batcher.submit_many(("task",), encoded)
        data = []
        for index, (text, (words, spans), item, row) in enumerate(zip(texts, split, encoded, logits)):
            (tags,) = word_predictions(np.argmax(row, axis=-1)[None], item.word_index[None], predictor.label_names,
                                       [len(words)])
            data.append({"index": index, "words": words, "tags": tags, "entities": entities_of(text, tags, spans)})
        return {"object": "list", "model": model_name, "data": data}

    @app.post("/v1/score")
    async def score(body: TextsRequest):
        served("score")
        values = await batcher.submit_many(("task",), predictor.encode_texts(body.texts()))
        return {"object": "list", "model": model_name,
                "data": [{"index": i, "score": float(np.reshape(v, -1)[0])} for i, v in enumerate(values)]}

    async def generate(body, prompts: list[list[int]]) -> list[dict]:
        max_tokens = body.max_tokens or defaults.max_tokens
        predictor.check_max_tokens(max_tokens)
        temperature = defaults.temperature if body.temperature is None else body.temperature
        seed = body.seed if body.seed is not None else (defaults.seed if temperature == 0 else secrets.randbits(31))
        items = [Prompt(ids, max_tokens, temperature, defaults.top_k if body.top_k is None else body.top_k,
                        defaults.top_p if body.top_p is None else body.top_p, seed + i) for i, ids in enumerate(prompts)]
        tokens = await batcher.submit_many(predictor.batch_key(max_tokens), items)
        stop_tokens = predictor.settings.stop_tokens
        results = [completions.finish(predictor.tokenizer, row, stop_tokens, body.stop_strings()) for row in tokens]
        for result, row in zip(results, tokens):
            result["tokens"] = row
        return results

    def pieces(result: dict) -> list[str]:
        return completions.text_pieces(predictor.tokenizer, result["tokens"][: result["completion_tokens"]],
                                       result["text"])

    def sse(events) -> StreamingResponse:
        return StreamingResponse(events, media_type="text/event-stream")

    @app.post("/v1/completions")
    async def complete(body: CompletionRequest):
        served("generate")
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        prompts = [predictor.encode_prompt(text, i) for i, text in enumerate(texts)]
        results = await generate(body, prompts)
        used = sum(map(len, prompts))
        if body.stream:
            return sse(completions.completion_stream(model_name, [pieces(r) for r in results], results, used))
        return completions.completion_body(model_name, results, used)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        served("generate")
        prompt = predictor.encode_chat([{"role": m.role, "content": m.content} for m in body.messages])
        (result,) = await generate(body, [prompt])
        if body.stream:
            return sse(completions.chat_stream(model_name, pieces(result), result, len(prompt)))
        return completions.chat_body(model_name, result, len(prompt))

    return app
