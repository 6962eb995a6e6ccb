"""``mgpt serve``: load the experiment's model, compile the serving shapes, check the binding rules and run
uvicorn (the only place in mgpt that opens a socket)."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import time

from mgpt.config import ConfigError

logger = logging.getLogger("mgpt")

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_binding(host: str, api_key: str | None, insecure_no_key: bool) -> None:
    """Refuse to serve beyond loopback without an API key, unless told so (``--insecure-no-key``)."""
    if not is_loopback(host) and not api_key and not insecure_no_key:
        raise ConfigError(f"--host {host} is reachable from other machines: give an API key (--api-key or "
                          "MGPT_API_KEY), or pass --insecure-no-key to serve without one")


def build_predictor(config, checkpoint: str | None, model_path: str | None, max_batch: int,
                    max_new_tokens: int | None):
    """The predictor of the experiment's model: restored from ``checkpoint``, or ``model_path`` as it loads
    (a fresh head for a task head); returns ``(predictor, label names or None)``."""
    from mgpt.data import chat
    from mgpt.models import load_pretrained
    from mgpt.serve.predictors import Generator, TaskPredictor
    from mgpt.tasks import get_task
    from mgpt.train import setup

    data_cfg, task_cfg = config.data, config.task
    causal = get_task(task_cfg.kind).head == "causal_lm"
    if causal and model_path:  # as mgpt generate --model: the weights alone, no data read
        model, params, spec, tokenizer = load_pretrained(model_path, task="causal_lm", dtype=config.model.dtype)
        if tokenizer is None:
            raise ConfigError(f"--model {model_path}: {spec.load_report.tokenizer_note}")
    else:
        if model_path:
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, name_or_path=model_path))
        if checkpoint:
            run, params, where = setup.load_for_inference(config, checkpoint)
        else:
            run = setup.build_run(config)
            params, where = run.params, f"pretrained {config.model.name_or_path}"
        logger.info("serving params of %s", where)
        model, tokenizer = run.model, run.tokenizer
        if not causal:
            return TaskPredictor(model, params, tokenizer, run.task, run.data.label_names, data_cfg.max_length,
                                 max_batch)

    def wrap(text):  # mgpt generate --prompt: the user turn when the experiment trains through the template
        return chat.prompt_conversation(text, None, data_cfg.system_prompt) if data_cfg.use_chat_template else text

    return Generator(model, params, tokenizer, max_prompt=data_cfg.max_length,
                     max_new_tokens=max_new_tokens or task_cfg.max_new_tokens, max_batch=max_batch, wrap_prompt=wrap)


def _with_threshold(assistant, args):
    """The assistant with the hand-off threshold in force: --assist-threshold, else the run's handoff.json."""
    from mgpt.apps.handoff_run import read_threshold

    threshold, source = args.assist_threshold, "--assist-threshold"
    if threshold is None:
        threshold, source = read_threshold(args.checkpoint), "the run's handoff.json"
    if threshold is None:
        threshold, source = assistant.threshold, "the experiment"
    logger.info("assistant hands off below confidence %.4f (from %s)", threshold, source)
    return dataclasses.replace(assistant, threshold=threshold)


def serve(args, config) -> int:
    """Carry out ``mgpt serve``; returns the exit status."""
    import uvicorn

    from mgpt.serve.app import GenerationDefaults, create_app
    from mgpt.serve.assistant import load_assistant

    api_key = args.api_key or os.environ.get("MGPT_API_KEY") or None
    check_binding(args.host, api_key, args.insecure_no_key)  # before minutes of loading
    assistant = load_assistant(args.experiment)
    if assistant is not None:
        assistant = _with_threshold(assistant, args)
    predictor = build_predictor(config, args.checkpoint, args.model, args.max_batch, args.max_new_tokens)
    start = time.perf_counter()
    shapes = predictor.warm_up()
    logger.info("compiled %d serving shapes in %.1f s", shapes, time.perf_counter() - start)
    tc = config.task
    defaults = GenerationDefaults(max_tokens=args.max_new_tokens or tc.max_new_tokens, temperature=tc.temperature,
                                  top_k=tc.top_k, top_p=tc.top_p, seed=tc.decode_seed)
    name = os.path.basename(os.path.normpath(args.model)) if args.model else config.name
    app = create_app(predictor, model_name=name, api_key=api_key, max_queue=args.max_queue,
                     wait_s=args.batch_wait_ms / 1000.0, assistant=assistant, defaults=defaults)
    print(f"serving {name} ({predictor.kind}) on http://{args.host}:{args.port}"
          f"{' (API key required)' if api_key else ''}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
