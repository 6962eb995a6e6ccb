"""`mgpt serve` end to end: the real server (uvicorn in a thread on a free loopback port) called with the
`openai` client and `httpx`. References: `mgpt generate` (greedy) for completions, `mgpt predict` for
classification and tagging; batching, limits, errors, the queue and the API key by their HTTP answers."""

import asyncio
import contextlib
import csv
import json
import os
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import uvicorn

from mgpt import cli
from mgpt.config import ConfigError, import_experiment
from mgpt.serve import server
from mgpt.serve.app import create_app
from mgpt.serve.assistant import Assistant

from fixtures_tiny import tiny_bert, write_classification_experiment, write_ner_experiment
from test_chat_data import _experiment as chat_experiment
from test_chat_data import msg, qa, tiny_chat_gpt2, write_jsonl


@contextlib.contextmanager
def running(app):
    """``app`` served by uvicorn on 127.0.0.1 at a free port; yields the base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(timeout=30)


def _config(experiment):
    return cli._config(cli.build_parser().parse_args(["serve", experiment, "--checkpoint", "x"]))


CLASSIFY_TEXTS = ["the movie was great", "the plot was awful", "music lovely", "acting grim", "very nice plot",
                  "really bad acting"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny BERT sentiment classifier trained by `mgpt train`, its `mgpt predict` output, and its server."""
    directory = tmp_path_factory.mktemp("serve_cls")
    experiment = write_classification_experiment(str(directory), tiny_bert(directory / "model"))
    workdir = str(directory / "run")
    assert cli.main(["train", experiment, "--workdir", workdir]) == 0
    source, output = str(directory / "inputs.csv"), str(directory / "predictions.jsonl")
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([["review"]] + [[t] for t in CLASSIFY_TEXTS])
    assert cli.main(["predict", experiment, "--checkpoint", workdir, "--input", source, "--output", output]) == 0
    with open(output) as f:
        predicted = [json.loads(line)["prediction"] for line in f]
    predictor = server.build_predictor(_config(experiment), workdir, None, max_batch=8, max_new_tokens=None)
    predictor.warm_up()
    return experiment, workdir, predictor, predicted


def test_classify_equals_mgpt_predict(classifier):
    _, _, predictor, predicted = classifier
    with running(create_app(predictor, model_name="tiny_cls")) as url:
        reply = httpx.post(f"{url}/v1/classify", json={"input": CLASSIFY_TEXTS, "top_k": 1})
    assert reply.status_code == 200
    data = reply.json()["data"]
    assert [d["label"] for d in data] == predicted
    for d in data:
        assert len(d["labels"]) == 1 and d["labels"][0]["label"] == d["label"]
        assert 0.5 <= d["score"] <= 1.0  # the arg-max of two probabilities


def test_fifty_concurrent_requests_are_batched_and_compile_nothing(classifier):
    _, _, predictor, predicted = classifier
    compiled = predictor.compilations
    app = create_app(predictor, model_name="tiny_cls", wait_s=0.02)
    texts = [CLASSIFY_TEXTS[i % len(CLASSIFY_TEXTS)] for i in range(50)]

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"input": t}) for t in texts))

    with running(app) as url:
        replies = asyncio.run(fire(url))
        health = httpx.get(f"{url}/health").json()
    assert [r.status_code for r in replies] == [200] * 50
    expected = [predicted[i % len(CLASSIFY_TEXTS)] for i in range(50)]
    assert [r.json()["data"][0]["label"] for r in replies] == expected
    assert 7 <= app.state.batcher.calls < 50  # at most 8 per call
    assert health["model_calls"] == app.state.batcher.calls
    assert predictor.compilations == compiled  # every shape was compiled at warm-up


def test_bad_requests_get_clear_4xx(classifier):
    _, _, predictor, _ = classifier
    with running(create_app(predictor, model_name="tiny_cls")) as url:
        missing = httpx.post(f"{url}/v1/classify", json={"text": "good"})
        wrong = httpx.post(f"{url}/v1/classify", json={"input": 3})
        not_json = httpx.post(f"{url}/v1/classify", content=b"{", headers={"content-type": "application/json"})
        too_long = httpx.post(f"{url}/v1/classify", json={"input": ["good", " ".join(["good"] * 30)]})
        elsewhere = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        models = httpx.get(f"{url}/v1/models").json()
    assert missing.status_code == 422
    assert missing.json()["error"]["param"] in ("input", "text")  # the missing field, or the unknown one
    assert wrong.status_code == 422 and wrong.json()["error"]["param"].startswith("input")
    assert not_json.status_code == 422
    assert too_long.status_code == 413
    assert too_long.json()["error"]["message"] == "input 1 has 32 tokens; this server takes at most 12 " \
                                                  "(data.max_length)"  # 30 words + [CLS] + [SEP]
    assert elsewhere.status_code == 404 and "/v1/classify" in elsewhere.json()["error"]["message"]
    assert models["data"][0]["id"] == "tiny_cls"


def test_api_key_is_required_on_every_request(classifier):
    _, _, predictor, predicted = classifier
    with running(create_app(predictor, model_name="tiny_cls", api_key="s3cret")) as url:
        bare = httpx.get(f"{url}/health")
        wrong = httpx.post(f"{url}/v1/classify", json={"input": "good"}, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{url}/v1/classify", json={"input": CLASSIFY_TEXTS[0]},
                           headers={"Authorization": "Bearer s3cret"})
    assert bare.status_code == 401 and wrong.status_code == 401
    assert bare.json()["error"]["type"] == "authentication_error"
    assert right.status_code == 200 and right.json()["data"][0]["label"] == predicted[0]


def test_binding_beyond_loopback_needs_a_key(classifier, capsys):
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("example.org")
    server.check_binding("0.0.0.0", "key", False)
    server.check_binding("0.0.0.0", None, True)
    with pytest.raises(ConfigError, match="--insecure-no-key"):
        server.check_binding("0.0.0.0", None, False)
    experiment, workdir, _, _ = classifier
    assert cli.main(["serve", experiment, "--checkpoint", workdir, "--host", "0.0.0.0"]) == 2
    assert "reachable from other machines" in capsys.readouterr().err


class SlowPredictor:
    """Stands in for a model that takes 0.3 s per call, one input per call."""

    endpoint, kind, batches, label_names = "classify", "sequence_classification", (1,), ["neg", "pos"]

    def encode_texts(self, texts):
        return list(texts)

    def run(self, items):
        time.sleep(0.3)
        return [np.array([0.0, 1.0]) for _ in items]


def test_a_full_queue_answers_503_and_the_server_keeps_serving():
    app = create_app(SlowPredictor(), model_name="slow", max_queue=1, wait_s=0.0)

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"input": "x"}) for _ in range(5)))

    with running(app) as url:
        replies = asyncio.run(fire(url))
        after = httpx.post(f"{url}/v1/classify", json={"input": "x"})
    codes = sorted(r.status_code for r in replies)
    assert 200 in codes and 503 in codes and set(codes) == {200, 503}
    busy = next(r for r in replies if r.status_code == 503).json()["error"]
    assert busy["type"] == "overloaded_error" and "queue is full" in busy["message"]
    assert after.status_code == 200 and after.json()["data"][0]["label"] == "pos"


def test_assistant_answers_above_the_threshold_and_hands_off_below(tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"neg": "Sorry to hear that.", "pos": "Glad you liked it!"}))
    assistant = Assistant.from_file(str(answers), threshold=0.6, handoff="A colleague will call you.")
    names = ["neg", "pos"]
    assert assistant.reply(np.array([0.2, 0.8]), names) == {"intent": "pos", "confidence": 0.8, "handoff": False,
                                                            "answer": "Glad you liked it!"}
    assert assistant.reply(np.array([0.55, 0.45]), names) == {"intent": "neg", "confidence": 0.55, "handoff": True,
                                                              "answer": "A colleague will call you."}
    assert assistant.reply(np.array([0.6, 0.4]), names)["handoff"] is False  # at the threshold: answered
    with pytest.raises(ConfigError, match="no entry for 1 of the model's labels"):
        assistant.check_labels(["neg", "pos", "meh"])
    answers.write_text(json.dumps({"neg": ""}))
    with pytest.raises(ConfigError, match="key 'neg': expected a non-empty answer string"):
        Assistant.from_file(str(answers), 0.5, "x")


def test_assist_endpoint_through_the_experiment_hook(classifier, tmp_path):
    experiment, workdir, predictor, predicted = classifier
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"neg": "Sorry to hear that.", "pos": "Glad you liked it!"}))
    hooked = tmp_path / "assistant_experiment.py"
    with open(experiment) as f:
        source = f.read()
    hooked.write_text(source + f'''

def get_assistant():
    from mgpt.serve.assistant import Assistant

    return Assistant.from_file({str(answers)!r}, threshold=THRESHOLD, handoff="A colleague will call you.")
''')
    from mgpt.serve.assistant import load_assistant

    replies = {}
    for threshold in (0.0, 1.0):
        hooked.write_text(hooked.read_text().split("\nTHRESHOLD =")[0] + f"\nTHRESHOLD = {threshold}\n")
        assistant = load_assistant(str(hooked))
        with running(create_app(predictor, model_name="tiny_cls", assistant=assistant)) as url:
            replies[threshold] = [httpx.post(f"{url}/v1/assist", json={"question": t}).json()
                                  for t in CLASSIFY_TEXTS[:2]]
    templates = {"neg": "Sorry to hear that.", "pos": "Glad you liked it!"}
    assert [r["intent"] for r in replies[0.0]] == predicted[:2]
    assert [r["answer"] for r in replies[0.0]] == [templates[p] for p in predicted[:2]]
    assert all(r["handoff"] and r["answer"] == "A colleague will call you." for r in replies[1.0])
    assert load_assistant(experiment) is None  # no hook: no /v1/assist


def test_mgpt_handoff_chooses_on_validation_and_serve_uses_it(classifier):
    from mgpt.apps.handoff import coverage_curve
    from mgpt.serve.assistant import Assistant
    from mgpt.train import scoring, setup

    experiment, workdir, _, _ = classifier
    run, params, _ = setup.load_for_inference(_config(experiment), workdir)
    probabilities = scoring.class_probabilities(run, params, "validation")
    names = run.data.label_names
    correct = [names[p.argmax()] == e["label"] for p, e in zip(probabilities, run.data.examples["validation"])]
    curve = coverage_curve(probabilities.max(axis=1), correct)
    target = max(point["accuracy"] for point in curve)  # reachable by construction
    written = os.path.join(workdir, "handoff.json")
    try:
        assert cli.main(["handoff", experiment, "--checkpoint", os.path.join(workdir, "best"),
                         "--target-accuracy", str(target)]) == 0
        with open(written) as f:
            chosen = json.load(f)
        # the lowest threshold reaching the target: every lower one misses it
        assert chosen["accuracy"] >= target and chosen["split"] == "validation"
        assert all(p["accuracy"] < target for p in curve if p["threshold"] < chosen["threshold"])
        assert chosen["num_questions"] == len(run.data.examples["validation"]) == 16
        hooked = Assistant({n: n for n in names}, threshold=0.5, handoff="later")
        args = cli.build_parser().parse_args(["serve", experiment, "--checkpoint", workdir])
        assert server._with_threshold(hooked, args).threshold == chosen["threshold"]  # the run's file
        args.assist_threshold = 0.25
        assert server._with_threshold(hooked, args).threshold == 0.25  # the flag wins
    finally:
        os.remove(written)
    args.assist_threshold = None
    assert server._with_threshold(hooked, args).threshold == 0.5  # no file: the experiment's own


def test_the_customer_service_experiment_has_one_answer_per_banking77_intent():
    from mgpt.serve.assistant import load_assistant

    assistant = load_assistant("experiments/customer_service_assistant.py")
    with open(_banking77_categories()) as f:
        labels = json.load(f)
    assistant.check_labels(labels)
    assert sorted(assistant.answers) == sorted(labels) and len(labels) == 77
    assert 0.0 < assistant.threshold < 1.0


def _banking77_categories():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    module = import_experiment(os.path.join(root, "experiments", "banking77_intent.py"))
    return f"{module.DATA}/categories.json"


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve_ner")
    experiment = write_ner_experiment(str(directory), tiny_bert(directory / "bert"))
    workdir = str(directory / "run")
    assert cli.main(["train", experiment, "--workdir", workdir]) == 0
    return experiment, workdir, directory


TAG_TEXTS = ["alice visited paris and music", "bob  visited  oslo and the", "rome"]


def test_tag_equals_mgpt_predict_with_character_spans(tagger):
    experiment, workdir, directory = tagger
    source, output = directory / "inputs.conll", str(directory / "predictions.jsonl")
    source.write_text("".join("".join(f"{w} NN O\n" for w in text.split()) + "\n" for text in TAG_TEXTS))
    assert cli.main(["predict", experiment, "--checkpoint", workdir, "--input", str(source), "--output", output]) == 0
    with open(output) as f:
        predicted = [json.loads(line)["prediction"] for line in f]
    predictor = server.build_predictor(_config(experiment), workdir, None, max_batch=2, max_new_tokens=None)
    predictor.warm_up()
    with running(create_app(predictor, model_name="tiny_ner")) as url:
        data = httpx.post(f"{url}/v1/tag", json={"input": TAG_TEXTS}).json()["data"]
        empty = httpx.post(f"{url}/v1/tag", json={"input": "   "})
    assert [d["tags"] for d in data] == predicted
    assert data[1]["words"] == ["bob", "visited", "oslo", "and", "the"]
    for text, d in zip(TAG_TEXTS, data):
        for entity in d["entities"]:
            assert text[entity["start"]:entity["end"]] == entity["text"]
            assert d["tags"][entity["words"][0]] == f"B-{entity['type']}"
    # the tagger learnt its training sentences (as in tests/test_cli.py); spans by hand, two spaces included
    assert predicted[1] == ["B-PER", "O", "B-LOC", "O", "O"]
    assert data[1]["entities"] == [{"type": "PER", "text": "bob", "start": 0, "end": 3, "words": [0, 0]},
                                   {"type": "LOC", "text": "oslo", "start": 14, "end": 18, "words": [2, 2]}]
    assert empty.status_code == 400 and "no words" in empty.json()["error"]["message"]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    """A tiny GPT-2 with a ChatML template fine-tuned for 30 steps on three conversations, served from its
    checkpoint."""
    directory = tmp_path_factory.mktemp("serve_gen")
    model_dir = tiny_chat_gpt2(directory / "model")
    conversations = [{"messages": qa(thing)} for thing in ("sky", "grass", "sun")] * 2
    files = {"train_file": write_jsonl(directory / "train.jsonl", conversations),
             "validation_file": write_jsonl(directory / "validation.jsonl", conversations[:3])}
    experiment = chat_experiment(directory, model_dir, files, kind="generation", eval_every=30)
    workdir = str(directory / "run")
    assert cli.main(["train", experiment, "--workdir", workdir]) == 0
    predictor = server.build_predictor(_config(experiment), workdir, None, max_batch=4, max_new_tokens=6)
    predictor.warm_up()
    return experiment, workdir, predictor, directory


CONVERSATIONS = [qa("grass")[:1], qa("sun")[:3], [msg("system", "be brief"), msg("user", "what colour is the sky")]]


def _generated(args, output):
    assert cli.main(args + ["--output", str(output)]) == 0
    return [json.loads(line)["generation"] for line in output.read_text().splitlines()]


def test_chat_and_completions_equal_mgpt_generate_greedy(decoder):
    experiment, workdir, predictor, directory = decoder
    inputs = write_jsonl(directory / "inputs.jsonl", [{"messages": m} for m in CONVERSATIONS])
    expected_chat = _generated(["generate", experiment, "--checkpoint", workdir, "--input", inputs,
                                "--max-new-tokens", "5"], directory / "chat.jsonl")
    prompts = ["what colour is the sky", "hello"]
    expected_text = _generated(["generate", experiment, "--checkpoint", workdir, "--max-new-tokens", "5",
                                *sum((["--prompt", p] for p in prompts), [])], directory / "text.jsonl")
    compiled = predictor.compilations
    with running(create_app(predictor, model_name="tiny")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        chats = [client.chat.completions.create(model="tiny", messages=m, max_tokens=5, temperature=0)
                 for m in CONVERSATIONS]
        streamed = ["".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="tiny", messages=m, max_tokens=5, temperature=0, stream=True) if chunk.choices)
            for m in CONVERSATIONS]
        completion = client.completions.create(model="tiny", prompt=prompts, max_tokens=5, temperature=0)
        sampled = client.chat.completions.create(model="tiny", messages=CONVERSATIONS[0], max_tokens=5,
                                                 temperature=1.0, top_p=0.9, seed=3, extra_body={"top_k": 4})
        too_many = httpx.post(f"{url}/v1/chat/completions", json={"messages": CONVERSATIONS[0], "max_tokens": 7})
        unknown = httpx.post(f"{url}/v1/chat/completions", json={"messages": CONVERSATIONS[0],
                                                                 "presence_penalty": 1})
        no_messages = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny"})
        long_prompt = httpx.post(f"{url}/v1/completions", json={"prompt": " ".join(["sky"] * 40)})
    assert [c.choices[0].message.content for c in chats] == expected_chat
    assert expected_chat[1] == "welcome"  # learnt (as in tests/test_chat_data.py)
    assert streamed == expected_chat
    assert [c.text for c in completion.choices] == expected_text
    for c, m in zip(chats, CONVERSATIONS):
        assert c.usage.prompt_tokens == len(predictor.encode_chat(m))
        assert 1 <= c.usage.completion_tokens <= 5
    assert chats[1].choices[0].finish_reason == "stop"  # "welcome" then <|im_end|>
    assert sampled.choices[0].finish_reason in ("stop", "length")
    assert predictor.compilations == compiled  # greedy, sampled and streamed: all warm
    assert too_many.status_code == 400 and "limit of 6" in too_many.json()["error"]["message"]
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "presence_penalty"
    assert no_messages.status_code == 422 and no_messages.json()["error"]["param"] == "messages"
    assert long_prompt.status_code == 413 and "at most 32" in long_prompt.json()["error"]["message"]


def test_stop_strings_cut_the_text(decoder):
    _, _, predictor, _ = decoder
    with running(create_app(predictor, model_name="tiny")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        full = client.chat.completions.create(model="tiny", messages=CONVERSATIONS[1], max_tokens=5, temperature=0)
        cut = client.chat.completions.create(model="tiny", messages=CONVERSATIONS[1], max_tokens=5, temperature=0,
                                             stop=["com"])
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="tiny", messages=CONVERSATIONS[1], max_tokens=5, temperature=0, stop="com", stream=True)
            if chunk.choices)
    assert full.choices[0].message.content == "welcome"
    assert cut.choices[0].message.content == "wel" and cut.choices[0].finish_reason == "stop"
    assert streamed == "wel"
