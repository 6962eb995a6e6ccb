"""The ``mgpt`` command: ``train``, ``eval``, ``predict``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from mgpt import config as config_lib


def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment file (experiments/NAME.py) with get_config()")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set optimizer.learning_rate=1e-4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgpt", description="Fine-tune pretrained transformers with JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) an experiment")
    _experiment_args(train)
    train.add_argument("--workdir", help="output directory (default: runs/<experiment name>); reruns resume")

    evaluate = sub.add_parser("eval", help="evaluate a trained checkpoint on a split")
    _experiment_args(evaluate)
    evaluate.add_argument("--checkpoint", required=True, help="a run's workdir, or its best/ or checkpoints/ directory")
    evaluate.add_argument("--split", default="test", help="validation or test (default: test)")
    evaluate.add_argument("--output", help="report path (default: <checkpoint workdir>/eval_<split>.json)")

    predict = sub.add_parser("predict", help="predict labels for a file")
    _experiment_args(predict)
    predict.add_argument("--checkpoint", required=True, help="a run's workdir, or its best/ or checkpoints/ directory")
    predict.add_argument("--input", required=True, help="a file in the experiment's data format; labels optional")
    predict.add_argument("--output", required=True, help="JSONL file to write, one prediction per input example")
    return parser


def _config(args) -> config_lib.ExperimentConfig:
    return config_lib.apply_overrides(config_lib.load_experiment(args.experiment), args.overrides)


def _workdir_of(checkpoint: str) -> str:
    path = os.path.abspath(checkpoint).rstrip("/")
    return os.path.dirname(path) if os.path.basename(path) in ("best", "checkpoints") else path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax narrates every save at INFO
    try:
        config = _config(args)
    except config_lib.ConfigError as error:
        print(f"mgpt: config error: {error}", file=sys.stderr)
        return 2
    # Imported after argument parsing so that `mgpt --help` and config errors stay fast.
    from mgpt.train import evaluation, loop

    if args.command == "train":
        workdir = args.workdir or os.path.join("runs", config.name)
        reports = loop.train(config, workdir)
        for split, report in reports.items():
            print(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in _headline(report).items()))
        print(f"reports and checkpoints in {workdir}")
        return 0
    if args.command == "eval":
        run, params, where = loop.load_for_inference(config, args.checkpoint)
        if args.split not in run.data.splits:
            print(f"mgpt: split {args.split!r} has no file in the config (have: {sorted(run.data.splits)})",
                  file=sys.stderr)
            return 2
        report, scalars = evaluation.evaluate_split(run, params, args.split)
        report["params"] = where
        output = args.output or os.path.join(_workdir_of(args.checkpoint), f"eval_{args.split}.json")
        evaluation.write_json(output, report)
        print(f"{args.split}: " + ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
        print(f"report written to {output}")
        return 0
    if args.command == "predict":
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, predict_file=args.input))
        run, params, _ = loop.load_for_inference(config, args.checkpoint)
        count = evaluation.write_predictions(run, params, "predict", args.output)
        print(f"{count} predictions written to {args.output}")
        return 0
    return 2


def _headline(report: dict) -> dict:
    return {k: v for k, v in report.items() if isinstance(v, float)}


if __name__ == "__main__":
    sys.exit(main())
