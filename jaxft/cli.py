"""`jaxft train | eval | predict | export`: parse arguments, call the library, print results.

A `UserError` is printed as one line (no traceback) and exits with status 2.
"""

import argparse
import json
import logging
import sys


def _split_overrides(extra: list[str]) -> list[tuple[str, str]]:
    """['--config.a.b=1', '--config.c', '2'] -> [('a.b', '1'), ('c', '2')]."""
    from jaxft.errors import UserError

    overrides, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            raise UserError(
                f"unrecognised argument {arg!r}; config overrides look like --config.optim.lr=3e-5"
            )
        key, eq, value = arg[len("--config.") :].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise UserError(f"{arg} needs a value")
            value, i = extra[i + 1], i + 1
        overrides.append((key, value))
        i += 1
    return overrides


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxft", description="Fine-tune BERT-family and T5 models in JAX."
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train", help="train an experiment file; extra --config.KEY=VALUE override it"
    )
    t.add_argument("experiment", help="path/to/experiment.py[:ARG]")
    t.add_argument("--workdir", default=None, help="output folder (default runs/<experiment>)")
    h = t.add_argument_group("multi-host runs (every process runs the same command)")
    h.add_argument("--coordinator", help="HOST:PORT of process 0, which serves it")
    h.add_argument("--num_processes", type=int, help="processes in the run")
    h.add_argument("--process_id", type=int, help="this process: 0 .. num_processes-1")
    h.add_argument(
        "--distributed",
        action="store_true",
        help="find the processes from the cluster (Cloud TPU pod, Slurm, Open MPI)",
    )
    h.add_argument(
        "--init_timeout", type=int, default=300, help="seconds to wait for every process"
    )
    e = sub.add_parser("eval", help="evaluate a trained workdir")
    e.add_argument("--workdir", required=True)
    e.add_argument("--split", action="append", help="split(s) to score (default: test)")
    r = sub.add_parser(
        "predict", help="predict labels (or generate text, seq2seq) with a trained workdir"
    )
    r.add_argument("--workdir", required=True)
    r.add_argument("--input", help="a .jsonl file with 'text' (and optional 'text_pair') fields")
    r.add_argument("--json", action="store_true", help="print one JSON object per text")
    r.add_argument("texts", nargs="*")
    x = sub.add_parser("export", help="export a trained workdir to Hugging Face formats")
    x.add_argument("--workdir", required=True)
    x.add_argument(
        "--format",
        choices=("hf", "peft"),
        default="hf",
        help="hf: merged checkpoint for transformers; peft: LoRA adapter for HF PEFT",
    )
    x.add_argument("--out", required=True, help="output folder")
    return p


def run(argv) -> int:
    args, extra = _parser().parse_known_args(argv)
    from jaxft import config as config_lib
    from jaxft.errors import UserError

    if args.command != "train" and extra:
        raise UserError(f"unrecognised arguments: {' '.join(extra)}")
    if args.command == "train":
        from pathlib import Path

        from jaxft.train import distributed, loop

        distributed.initialize(
            args.coordinator,
            args.num_processes,
            args.process_id,
            args.init_timeout,
            auto=args.distributed,
        )
        config = config_lib.load_experiment(args.experiment)
        config_lib.apply_overrides(config, _split_overrides(extra))
        config_lib.validate(config)
        stem = Path(args.experiment.partition(":")[0]).stem
        arg = args.experiment.partition(":")[2]
        workdir = args.workdir or f"runs/{stem}{'-' + arg if arg else ''}"
        try:
            results = loop.train_and_evaluate(config, workdir)
        except loop.Preempted as e:
            print(f"jaxft: {e}; rerun the same command to resume")
            return 0
        for split, result in results.items():
            print(f"{split}: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))
        print(f"workdir: {workdir}")
    elif args.command == "eval":
        from jaxft.train import inference

        results = inference.evaluate(args.workdir, args.split or ["test"])
        print(json.dumps(results, indent=2))
    elif args.command == "predict":
        from jaxft.train import inference

        texts, pairs = list(args.texts), None
        if args.input:
            texts, pairs = inference.read_jsonl(args.input)
        for row in inference.predict(args.workdir, texts, pairs):
            if args.json:
                print(json.dumps(row))
            elif "question" in row:
                print(f"{row['answer'] or '(no answer)'}\t{row['question']}")
            elif "entities" in row:
                spans = [
                    f"{e['type']}[{e['start']}:{e['end']}]={e['text']}" for e in row["entities"]
                ]
                print(f"{'; '.join(spans) or '-'}\t{row['text']}")
            elif "generated" in row:
                print(f"{row['generated']}\t{row['text']}")
            elif "value" in row:
                print(f"{row['value']:.4f}\t{row['text']}")
            else:
                probs = " ".join(f"{k}={v:.3f}" for k, v in row["probabilities"].items())
                print(f"{row['label']}\t{probs}\t{row['text']}")
    elif args.command == "export":
        from jaxft.train import inference

        out = inference.export(args.workdir, args.format, args.out)
        print(f"exported ({args.format}) to {out}")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from jaxft.errors import UserError

    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"jaxft: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
