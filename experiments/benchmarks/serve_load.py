"""Load figures of `mgpt serve` on loopback: requests/s and p50/p95 latency at several concurrencies.

    python experiments/benchmarks/serve_load.py --classify experiments/customer_service_assistant.py \
        --checkpoint runs/assistant --chat experiments/smollm2_scitldr_chat.py --output bench_results/serve_load.json

/v1/classify on the checkpoint's classifier (Banking77 questions), and /v1/chat/completions (greedy,
16 new tokens) on SmolLM2-135M-Instruct as it loads (GGUF). The server runs in this process (uvicorn in a
thread, 127.0.0.1, a free port); each concurrency level sends at most --requests requests and stops after
--seconds. Shapes are compiled before timing starts.
"""

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time

import httpx
import numpy as np
import uvicorn

from mgpt import cli
from mgpt.known_models import smollm2_path
from mgpt.serve import server
from mgpt.serve.app import create_app

QUESTIONS = ["I still have not received my new card", "How do I top up with Apple Pay?",
             "Why was I charged twice for the same coffee?", "My transfer has been pending for two days",
             "What is the exchange rate today?", "I forgot my passcode", "Can I get a virtual card?",
             "Someone used my card without permission"]


def _serve(app):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=instance.run, daemon=True).start()
    while not instance.started:
        time.sleep(0.05)
    return instance, f"http://127.0.0.1:{port}"


async def _level(url, path, bodies, concurrency, seconds):
    latencies, failures, start, first_failure = [], 0, time.perf_counter(), None
    queue = list(bodies)

    async def worker(client):
        nonlocal failures, first_failure
        while queue and time.perf_counter() - start < seconds:
            body = queue.pop()
            began = time.perf_counter()
            reply = await client.post(path, json=body)
            latencies.append(time.perf_counter() - began)
            if reply.status_code != 200:
                failures += 1
                first_failure = first_failure or f"{reply.status_code} {reply.text[:200]}"

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies), "failures": failures,
            "requests_per_s": len(latencies) / wall, "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p95_ms": 1000 * float(np.percentile(latencies, 95)), "seconds": wall, "first_failure": first_failure}


def measure(predictor, name, path, make_body, levels, requests, seconds, max_queue):
    predictor.warm_up()
    app = create_app(predictor, model_name=name, max_queue=max_queue)
    instance, url = _serve(app)
    rows = []
    try:
        for concurrency in levels:
            bodies = [make_body(i) for i in range(requests)]
            row = asyncio.run(_level(url, path, bodies, concurrency, seconds))
            row["model_calls"] = httpx.get(f"{url}/health").json()["model_calls"]
            rows.append(row)
            print(json.dumps(dict(row, endpoint=path)), flush=True)
    finally:
        instance.should_exit = True
    return rows


def _config(experiment, overrides):
    return cli._config(cli.build_parser().parse_args(["serve", experiment, "--checkpoint", "x"]
                                                     + sum((["--set", o] for o in overrides), [])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classify", help="classification experiment")
    parser.add_argument("--checkpoint", help="its run workdir")
    parser.add_argument("--chat", help="causal-LM experiment served with --model (default: SmolLM2 GGUF)")
    parser.add_argument("--chat-model", default=None)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=64, help="most requests per level (chat: a quarter)")
    parser.add_argument("--seconds", type=float, default=60.0, help="most seconds per level")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",")]
    result = {"machine": f"{os.cpu_count()} CPU cores", "load_average_before": os.getloadavg()[0],
              "command": " ".join(sys.argv), "levels": levels}
    if args.classify:
        predictor = server.build_predictor(_config(args.classify, []), args.checkpoint, None, args.max_batch, None)
        result["classify"] = measure(predictor, "classifier", "/v1/classify",
                                     lambda i: {"input": QUESTIONS[i % len(QUESTIONS)]}, levels, args.requests,
                                     args.seconds, max_queue=256)
    if args.chat:
        # short prompts and answers keep the compiled set small (lengths 16, 32, 64; 16 steps); SmolLM2's
        # template adds its own system turn (~30 tokens) to every conversation
        config = _config(args.chat, ["data.max_length=64", "task.max_new_tokens=16"])
        predictor = server.build_predictor(config, None, args.chat_model or smollm2_path(), args.max_batch, 16)
        body = lambda i: {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],  # noqa: E731
                          "max_tokens": 16, "temperature": 0}
        result["chat"] = measure(predictor, "smollm2", "/v1/chat/completions", body, levels,
                                 max(args.requests // 4, 8), args.seconds, max_queue=256)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
