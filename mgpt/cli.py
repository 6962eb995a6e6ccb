"""The ``mgpt`` command: ``train``, ``eval``, ``predict``, ``monitor``, ``rank``, ``handoff``, ``generate``, ``serve``, ``convert``, ``bench``.

Exit statuses (also in ``mgpt --help``): see :data:`EXIT_STATUSES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from mgpt import config as config_lib
from mgpt import log_setup


EXIT_STATUSES = """exit status:
  0  done
  1  unexpected error (a traceback is printed)
  2  bad config, data or checkpoint, or the workdir is locked by another run
     (one line "mgpt: <where>: <message>" on stderr; --debug shows the traceback)
  3  stopped by a signal (SIGTERM/SIGINT) after saving; run the same command again to resume"""


def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment file (experiments/NAME.py) with get_config()")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set optimizer.learning_rate=1e-4 (repeatable)",
    )


def _version() -> str:
    """mgpt's version from the installed package's metadata (the source's ``__version__`` when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("mgpt")
    except metadata.PackageNotFoundError:
        from mgpt import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgpt", description="Fine-tune pretrained transformers with JAX.",
                                     epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="on a config, data, checkpoint or workdir error, raise it with its traceback")
    parser.add_argument("--log-level", default="info", choices=log_setup.LEVELS,
                        help="how much mgpt logs (default info); other libraries log warnings and errors only")
    parser.add_argument("--version", action="version", version=f"mgpt {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) an experiment")
    _experiment_args(train)
    train.add_argument("--workdir", help="output directory (default: runs/<experiment name>); reruns resume")

    evaluate = sub.add_parser("eval", help="evaluate a trained checkpoint on a split")
    _experiment_args(evaluate)
    evaluate.add_argument("--checkpoint", help="a run's workdir, or its best/ or checkpoints/ directory; without it the "
                          "pretrained model is evaluated as it loads (zero-shot; a new head is initialised)")
    evaluate.add_argument("--split", default="test", help="validation or test (default: test)")
    evaluate.add_argument("--output", help="report path (default: <checkpoint workdir>/eval_<split>.<which>.json, "
                          "<which> being best or step_<N> for the checkpoint evaluated, or pretrained without "
                          "--checkpoint; never the run's own eval_<split>.json)")

    predict = sub.add_parser("predict", help="predict labels for a file")
    _experiment_args(predict)
    predict.add_argument("--checkpoint", required=True, help="a run's workdir, or its best/ or checkpoints/ directory")
    predict.add_argument("--input", required=True, help="a file in the experiment's data format; labels optional")
    predict.add_argument("--output", required=True, help="JSONL file to write, one prediction per input example")

    monitor = sub.add_parser("monitor", help="sentiment shares per period and topic of a timestamped JSONL stream, "
                                             "with alerts when the negative share surges")
    _experiment_args(monitor)
    monitor.add_argument("--checkpoint", required=True, help="the sentiment run's workdir, or its best/ or checkpoints/")
    monitor.add_argument("--input", required=True, help='JSONL stream, one {"time": ISO-8601, "text": ..., "topic": ...} '
                                                        "per line (topic optional with a topic classifier)")
    monitor.add_argument("--output", required=True, help="directory for monitor.json, monitor_items.jsonl and "
                                                         "monitor_timeline.png")
    monitor.add_argument("--period", default="day", choices=["hour", "day", "week"], help="bucket size, UTC (default day)")
    monitor.add_argument("--baseline-periods", type=int, default=7,
                         help="baseline: mean negative share over this many previous periods (default 7)")
    monitor.add_argument("--min-baseline-periods", type=int, default=1,
                         help="no alert before this many earlier periods form the baseline (default 1)")
    monitor.add_argument("--fixed-baseline", type=float, help="a fixed baseline negative share instead (0 to 1)")
    monitor.add_argument("--margin", type=float, default=0.15, help="alert above baseline + margin (default 0.15)")
    monitor.add_argument("--min-items", type=int, default=10,
                         help="periods with fewer items of a topic neither alert nor count in its baseline (default 10)")
    monitor.add_argument("--negative-label", default="negative", help="the model's negative label (default negative)")
    monitor.add_argument("--topic-experiment", help="experiment of a topic classifier for lines without a topic")
    monitor.add_argument("--topic-checkpoint", help="its run's workdir (with --topic-experiment)")

    rank = sub.add_parser("rank", help="rank each user's candidate items by a click classifier, with ranking metrics")
    _experiment_args(rank)
    rank.add_argument("--checkpoint", required=True, help="a run's workdir, or its best/ or checkpoints/ directory")
    rank.add_argument("--input", required=True, help="a file in the experiment's data format, one (user, candidate) "
                                                     "per row; with labels, the rankings are measured")
    rank.add_argument("--output", required=True, help="directory for rankings.jsonl and rank_metrics.json")
    rank.add_argument("--user-column", default="user", help="column naming the user (default user)")
    rank.add_argument("--item-column", default="item", help="column naming the candidate item (default item)")
    rank.add_argument("--positive-label", default="1", help="the label that means a click (default 1)")
    rank.add_argument("--k", type=int, nargs="+", default=[5, 10], help="cut-offs for NDCG@k and recall@k (default 5 10)")

    hand = sub.add_parser("handoff", help="choose the assistant's hand-off threshold on a run's validation split: "
                                          "the lowest confidence whose answered questions reach a target accuracy")
    _experiment_args(hand)
    hand.add_argument("--checkpoint", required=True, help="the classifier run's workdir, or its best/ or checkpoints/")
    hand.add_argument("--target-accuracy", type=float, default=0.9,
                      help="accuracy the answered questions must reach (default 0.9)")
    hand.add_argument("--split", default="validation", help="held-out split scored (default validation)")
    hand.add_argument("--output", help="JSON to write (default: <workdir>/handoff.json, read by mgpt serve)")

    gen = sub.add_parser("generate", help="generate text from prompts with a trained checkpoint or a HF model")
    _experiment_args(gen)
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a run's workdir, or its best/ or checkpoints/ directory")
    source.add_argument("--model", help="a Hugging Face causal-LM directory (instead of a trained checkpoint)")
    prompts = gen.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", action="append", help="a prompt, used as written (repeatable)")
    prompts.add_argument("--input", help="JSONL file of records; each is rendered with data.prompt_template "
                                          "(or read from data.text_column), or, with a 'messages' list "
                                          "(data.messages_column), with the tokenizer's chat template")
    gen.add_argument("--max-new-tokens", type=int, help="default: task.max_new_tokens")
    gen.add_argument("--temperature", type=float, help="0 is greedy (default: task.temperature)")
    gen.add_argument("--top-k", type=int, help="default: task.top_k (0: off)")
    gen.add_argument("--top-p", type=float, help="default: task.top_p (1: off)")
    gen.add_argument("--seed", type=int, help="sampling seed (default: task.decode_seed)")
    gen.add_argument("--output", help="JSONL file to write (default: print JSON lines)")

    serve = sub.add_parser("serve", help="serve a model over HTTP: OpenAI-compatible completions for a causal LM, "
                                         "/v1/classify, /v1/tag or /v1/score for a task head (docs/serving.md)")
    _experiment_args(serve)
    served = serve.add_mutually_exclusive_group(required=True)
    served.add_argument("--checkpoint", help="a run's workdir, or its best/ or checkpoints/ directory")
    served.add_argument("--model", help="a Hugging Face directory or .gguf file, served as it loads (no fine-tuning)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every request (default: $MGPT_API_KEY)")
    serve.add_argument("--insecure-no-key", action="store_true", help="allow a non-loopback --host without an API key")
    serve.add_argument("--max-batch", type=int, default=8, help="most requests (inputs) per model call (default 8)")
    serve.add_argument("--max-queue", type=int, default=64, help="most inputs waiting; beyond it requests get 503")
    serve.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a call waits for more requests")
    serve.add_argument("--max-new-tokens", type=int, help="generation: most tokens per completion (default: "
                                                          "task.max_new_tokens)")
    serve.add_argument("--assist-threshold", type=float,
                       help="/v1/assist: hand off below this confidence (default: the run's handoff.json from "
                            "mgpt handoff, else the experiment's own threshold)")

    convert = sub.add_parser(
        "convert", help="Hugging Face directory <-> Orbax checkpoint of mgpt params, or to/from a GGUF file "
                        "(direction from SRC's files and DST's suffix)"
    )
    convert.add_argument("src", help="a Hugging Face directory (config.json + safetensors), an mgpt Orbax one, a "
                                     ".gguf file, or (to GGUF) a training run's workdir")
    convert.add_argument("dst", help="the directory to write (must not exist, or be empty, for HF -> Orbax and "
                                     "GGUF -> HF), or a .gguf file")
    convert.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"],
                         help="to GGUF: how 2-D weights are stored (1-D tensors stay f32; default f16)")
    convert.add_argument("--task", help="HF -> Orbax: task head, when config.json's architectures names none")
    convert.add_argument("--num-labels", type=int, help="HF -> Orbax: label count, when it differs from config.json")
    convert.add_argument("--param-dtype", default="float32", help="HF -> Orbax: stored dtype (float32, bfloat16)")
    convert.add_argument("--max-shard-size", default="5GB", help="Orbax -> HF: safetensors shard size (default 5GB)")

    compare = sub.add_parser("compare", help="compare training runs: config differences, metrics, speed, curves")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="workdirs written by mgpt train")
    compare.add_argument("--metric", default="", help="validation metric to compare, e.g. validation/macro_f1 "
                         "(default: the first run's train.best_metric, or its task's default)")
    compare.add_argument("--output", help="write the table: JSON when the name ends in .json, else markdown")
    compare.add_argument("--plot", help="PNG of the runs' training loss and validation metric curves, overlaid")

    bench = sub.add_parser("bench", help="time the real train step on synthetic batches (random weights)")
    bench.add_argument("--model", default="gpt2-small",
                       help="a size the model families declare (gpt2-small, gpt2-medium, llama-125m, llama-1b, "
                            "smollm2-135m, bert-base, qwen3-0.6b, phi3-mini) or a directory with config.json")
    bench.add_argument("--task", default="", help="default: causal_lm for decoders, sequence_classification for encoders")
    bench.add_argument("--batch-size", type=int, default=8)
    bench.add_argument("--seq-len", type=int, default=128)
    bench.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16 (params stay float32)")
    bench.add_argument("--steps", type=int, default=10, help="timed steps after warm-up (median reported)")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--peak-tflops", type=float, default=0.0,
                       help="peak for MFU; default: measured with a large matmul on the device")
    bench.add_argument("--optimizer", default="adamw")
    bench.add_argument("--attention-impl", default="", choices=["", "xla", "cudnn"],
                       help="attention kernel: XLA (default) or cudnn (cuDNN flash attention; NVIDIA GPU, bf16)")
    bench.add_argument("--remat", default="none", choices=["none", "full", "dots", "dots_no_batch"],
                       help="recompute layer activations in the backward pass (see mgpt.models.scan)")
    bench.add_argument("--scan-layers", action="store_true", help="run the layers as one nn.scan")
    bench.add_argument("--loss-chunk-size", type=int, default=0,
                       help="causal LM: compute the loss this many positions at a time (no full logits)")
    bench.add_argument("--output", help="JSON file for the full result")
    return parser


def _compare(args) -> int:
    from mgpt.train import compare

    try:
        records = [compare.load_run(run, name) for run, name in zip(args.runs, compare.run_names(args.runs))]
    except compare.NotARunError as error:
        return _input_error("compare", error, args.debug)
    comparison = compare.compare_runs(records, args.metric)
    print(compare.markdown_table(comparison), end="")
    compare.write_outputs(comparison, args.output, args.plot)
    for path in (args.output, args.plot):
        if path:
            print(f"written to {path}")
    return 0


def _bench(args) -> int:
    from mgpt import bench

    settings = bench.BenchSettings(model=args.model, task=args.task, batch_size=args.batch_size, seq_len=args.seq_len,
                                   dtype=args.dtype, steps=args.steps, warmup=args.warmup,
                                   peak_tflops=args.peak_tflops, optimizer=args.optimizer,
                                   attention_impl=args.attention_impl, remat=args.remat,
                                   scan_layers=args.scan_layers, loss_chunk_size=args.loss_chunk_size)
    result = bench.run_bench(settings)
    print(bench.summary(result))
    if args.output:
        bench.write_result(result, args.output)
        print(f"written to {args.output}")
    return 0


def _convert(args) -> int:
    from mgpt.models import gguf_read
    from mgpt.models.convert import convert
    from mgpt.models.safetensors_io import CheckpointError
    from mgpt.train import export

    try:
        if gguf_read.is_gguf(args.dst) and export.is_run_workdir(args.src):
            export.workdir_to_gguf(args.src, args.dst, args.dtype)
            direction = "run->gguf"
        else:
            direction = convert(args.src, args.dst, task=args.task, num_labels=args.num_labels,
                                param_dtype=args.param_dtype, max_shard_size=args.max_shard_size,
                                gguf_dtype=args.dtype)
    except (CheckpointError, config_lib.ConfigError, ValueError) as error:
        return _input_error("convert", error, args.debug)
    print(f"converted {args.src} -> {args.dst} ({direction})")
    return 0


def _generate(args, config: config_lib.ExperimentConfig) -> int:
    """``mgpt generate``: one JSON line per prompt with the prompt, the generation and the input's fields."""
    import json

    from mgpt import generate
    from mgpt.data import chat

    # (fields, prompt text or messages): every line checked before the model loads
    if args.input:
        inputs = _generate_inputs(args.input, config.data)
    elif config.data.use_chat_template:  # prompted the way it was trained: as the user turn
        inputs = [({}, chat.prompt_conversation(text, None, config.data.system_prompt)) for text in args.prompt]
    else:
        inputs = [({}, text) for text in args.prompt]
    tc = config.task
    if args.model:
        from mgpt.models import load_pretrained

        model, params, spec, tokenizer = load_pretrained(args.model, task="causal_lm", dtype=config.model.dtype)
        mesh = None
        if tokenizer is None:  # the weights load without one; decoding text needs it
            print(f"mgpt: generate: {spec.load_report.tokenizer_note}", file=sys.stderr)
            return 2
    else:
        from mgpt.train import setup

        run, params, _ = setup.load_for_inference(config, args.checkpoint)
        model, spec, tokenizer, mesh = run.model, run.spec, run.tokenizer, run.mesh
    if spec.task != "causal_lm":
        print(f"mgpt: generate needs a causal-LM model; {args.experiment} has task.kind={tc.kind!r}",
              file=sys.stderr)
        return 2
    if any(not isinstance(prompt, str) for _, prompt in inputs):
        chat.check_template(tokenizer, args.input)
    # A conversation is rendered with add_generation_prompt=True and handed over as ids (its special tokens
    # are in the rendering already); its "prompt" field shows the rendered text.
    prompts = [p if isinstance(p, str) else chat.render_ids(tokenizer, p, add_generation_prompt=True)
               for _, p in inputs]
    shown = [p if isinstance(p, str) else chat.render_text(tokenizer, p, add_generation_prompt=True)
             for _, p in inputs]
    settings = generate.settings_for(
        tokenizer,
        tc.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        tc.temperature if args.temperature is None else args.temperature,
        tc.top_k if args.top_k is None else args.top_k,
        tc.top_p if args.top_p is None else args.top_p,
    )
    texts = generate.generate_text(model, params, tokenizer, prompts, settings,
                                   batch_size=config.train.eval_batch_size, mesh=mesh,
                                   seed=tc.decode_seed if args.seed is None else args.seed)
    lines = [json.dumps(dict(fields, prompt=prompt, generation=text))
             for (fields, _), prompt, text in zip(inputs, shown, texts)]
    if args.output:
        with open(args.output, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        print(f"{len(lines)} generations written to {args.output}")
    else:
        print("\n".join(lines))
    return 0


def _generate_inputs(path: str, data_cfg) -> list[tuple[dict, object]]:
    """``(fields, prompt)`` per line of a JSONL file: the prompt is a conversation (``data.messages_column``,
    a list of messages) or the text of ``data.prompt_template`` / ``data.text_column``."""
    from mgpt.data import DataError, chat, labels, reading, records

    column = data_cfg.messages_column or "messages"
    plain = dataclasses.replace(data_cfg, format="jsonl")  # a line without messages is read as plain JSONL
    fields = (records.template_fields(data_cfg.prompt_template) if data_cfg.prompt_template
              else [data_cfg.text_column])
    inputs = []
    for where, record in reading.read_file(path, data_cfg, fmt="jsonl").rows:
        if column in record:
            inputs.append((record, chat.check_messages(record[column], where, column, need_assistant=False)))
        elif all(name in record for name in fields):
            text = records.example_from_record(record, plain, labels.LABEL_NONE, where, True)["text"]
            # an experiment that trains through the chat template is prompted through it too
            inputs.append((record, chat.prompt_conversation(text, None, data_cfg.system_prompt)
                           if data_cfg.use_chat_template else text))
        else:
            raise DataError(f"{where}: expected {column!r} (a conversation) or {', '.join(map(repr, fields))} "
                            f"(a prompt); the object has keys {sorted(record)}")
    return inputs


def _config(args) -> config_lib.ExperimentConfig:
    """The experiment with its overrides, every field and cross-field rule checked (no file opened yet)."""
    config = config_lib.apply_overrides(config_lib.load_experiment(args.experiment), args.overrides)
    from mgpt.train.validate import validate  # needs the tasks (and jax): imported once the fields passed

    return validate(config)


def _workdir_of(checkpoint: str) -> str:
    path = os.path.abspath(checkpoint).rstrip("/")
    return os.path.dirname(path) if os.path.basename(path) in ("best", "checkpoints") else path


def _eval_output(config, checkpoint: str | None, split: str, where: str) -> str:
    """Default report path of ``mgpt eval``: beside the run's own ``eval_<split>.json``, never over it."""
    if not checkpoint:
        return os.path.join("runs", config.name, f"eval_{split}.pretrained.json")
    return os.path.join(_workdir_of(checkpoint), f"eval_{split}.{_checkpoint_label(where)}.json")


def _checkpoint_label(where: str) -> str:
    """``best`` or ``step_<N>`` from a restore description ``"<dir> step <N>"`` (of ``best/`` or ``checkpoints/``)."""
    directory, _, step = where.rpartition(" step ")
    if os.path.basename(directory) == "best":
        return "best"  # one slot whose step moves as training improves; the report's "params" names it
    return f"step_{step}" if step.isdigit() else "checkpoint"


def main(argv: list[str] | None = None) -> int:
    """Run the ``mgpt`` command line; returns the exit status (see :data:`EXIT_STATUSES`)."""
    args = build_parser().parse_args(argv)
    log_setup.configure(args.log_level)  # before jax and transformers are imported: they read it at import
    if args.command == "convert":  # no experiment file
        return _convert(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "compare":  # reads run directories, no experiment
        return _compare(args)
    try:
        config = _config(args)
    except config_lib.ConfigError as error:
        return _input_error("config error", error, args.debug)
    # Imported after argument parsing so that `mgpt --help` and config errors stay fast.
    from mgpt.data import DataError
    from mgpt.models import CheckpointError
    from mgpt.train.errors import Interrupted, NonFiniteError
    from mgpt.train.workdir import WorkdirLocked

    try:
        return _run(args, config)
    except (DataError, CheckpointError, config_lib.ConfigError, WorkdirLocked, NonFiniteError) as error:
        return _input_error(args.command, error, args.debug)
    except Interrupted as error:  # the step is saved: the same command resumes
        print(f"mgpt: {args.command}: {error}", file=sys.stderr)
        return 3


def _input_error(where: str, error: Exception, debug: bool) -> int:
    """Bad input is the user's to fix, not ours: one line on stderr and status 2, or the traceback with --debug."""
    if debug:
        raise error
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line, always
    print(f"mgpt: {where}: {message}", file=sys.stderr)
    return 2


def _run(args, config) -> int:
    """Carry out a command that reads an experiment (train, eval, predict, generate, serve)."""
    from mgpt.train import evaluation, loop, setup

    if args.command == "train":
        workdir = args.workdir or os.path.join("runs", config.name)
        reports = loop.train(config, workdir)
        for split, report in reports.items():
            print(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in _headline(report).items()))
        print(f"reports and checkpoints in {workdir}")
        return 0
    if args.command == "eval":
        if args.checkpoint:
            run, params, where = setup.load_for_inference(config, args.checkpoint)
        else:  # zero-shot: the weights as model.name_or_path gives them
            run = setup.build_run(config)
            params, where = run.params, f"pretrained {config.model.name_or_path}"
        if args.split not in run.data.splits:
            have = sorted(s for s in run.data.splits if "@" not in s)  # not the perturbed copies
            print(f"mgpt: split {args.split!r} has no file in the config (have: {have})",
                  file=sys.stderr)
            return 2
        # with train.eval_perturbations, also the perturbed copies: <split>@<op>:<rate>/<metric> and its _drop
        report, scalars = evaluation.evaluate_with_perturbations(run, params, args.split)
        report["params"] = where
        output = args.output or _eval_output(config, args.checkpoint, args.split, where)
        evaluation.write_json(output, report)
        clean = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith(f"{args.split}/")}
        print(f"{args.split}: " + ", ".join(f"{k}={v:.4f}" for k, v in clean.items()))
        for name in sorted({k.split("/", 1)[0] for k in scalars} - {args.split}):
            print(f"{name}: " + ", ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in scalars.items()
                                          if k.startswith(f"{name}/")))
        print(f"report written to {output}")
        return 0
    if args.command == "generate":
        return _generate(args, config)
    if args.command == "serve":
        from mgpt.serve import server

        return server.serve(args, config)
    if args.command == "predict":
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, predict_file=args.input))
        run, params, _ = setup.load_for_inference(config, args.checkpoint)
        count = evaluation.write_predictions(run, params, "predict", args.output)
        print(f"{count} predictions written to {args.output}")
        return 0
    if args.command == "monitor":
        return _monitor(args, config)
    if args.command == "rank":
        return _rank(args, config)
    if args.command == "handoff":
        return _handoff(args, config)
    return 2


def _monitor(args, config) -> int:
    """``mgpt monitor``: the report, items and timeline in ``--output``; one line per alert printed."""
    from mgpt.apps import monitor, monitor_run
    from mgpt.train.validate import validate

    if bool(args.topic_experiment) != bool(args.topic_checkpoint):
        print("mgpt: monitor: --topic-experiment and --topic-checkpoint go together", file=sys.stderr)
        return 2
    topic_model = None
    if args.topic_experiment:
        topic_model = (validate(config_lib.load_experiment(args.topic_experiment)), args.topic_checkpoint)
    settings = monitor.MonitorSettings(period=args.period, baseline_periods=args.baseline_periods,
                                       min_baseline_periods=args.min_baseline_periods,
                                       fixed_baseline=args.fixed_baseline, margin=args.margin,
                                       min_items=args.min_items, negative_label=args.negative_label)
    report = monitor_run.run_monitor(config, args.checkpoint, args.input, args.output, settings, topic_model)
    for alert in report["alerts"]:
        print(f"alert: {alert['period']} {alert['topic']}: {settings.negative_label} share {alert['share']:.2f} "
              f"(baseline {alert['baseline']:.2f}, {alert['count']} items)")
    print(f"{report['num_items']} items, {len(report['periods'])} periods, {len(report['alerts'])} alerts; "
          f"written to {args.output}")
    return 0


def _rank(args, config) -> int:
    """``mgpt rank``: rankings (and, with labels, metrics) in ``--output``."""
    from mgpt.apps import rank_run

    metrics = rank_run.run_ranking(config, args.checkpoint, args.input, args.output, user_column=args.user_column,
                                   item_column=args.item_column, positive_label=args.positive_label,
                                   ks=tuple(args.k))
    if metrics is not None:
        print(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"rankings written to {args.output}")
    return 0


def _handoff(args, config) -> int:
    """``mgpt handoff``: the chosen threshold written to the run's handoff.json; its coverage printed."""
    from mgpt.apps import handoff_run

    result = handoff_run.choose_handoff(config, args.checkpoint, args.target_accuracy, args.split, args.output)
    print(f"threshold {result['threshold']:.4f}: answers {result['coverage']:.1%} of the {result['num_questions']} "
          f"{args.split} questions at accuracy {result['accuracy']:.3f} (target {args.target_accuracy}; all "
          f"questions {result['overall_accuracy']:.3f}); written to {result['path']}")
    return 0


def _headline(report: dict) -> dict:
    return {k: v for k, v in report.items() if isinstance(v, float)}


if __name__ == "__main__":
    sys.exit(main())
