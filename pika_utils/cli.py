"""Command line: `pika book` runs the book for a profile; `pika rollouts` samples one model;
`pika label` scores new questions with a saved probe."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _book(args: argparse.Namespace) -> int:
    from .book import ChapterFailed, make_book

    overrides = {}
    for item in args.param or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"-p {item!r}: write an override as KEY=VALUE (e.g. -p k=8)")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    try:
        make_book(args.profile, chapters=args.chapters, root=Path(args.root), overrides=overrides,
                  build=not args.no_build)
    except ChapterFailed as e:
        print(f"[book] FAILED: {e}", file=sys.stderr)
        return 1
    return 0


def _rollouts(args: argparse.Namespace) -> int:
    from .inputs import read_problem_file
    from .params import check_params
    from .rollouts import SamplingConfig, run_rollouts

    check_params({"k": args.k, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                  "max_new_tokens": args.max_new_tokens, "chunk_size": args.chunk_size})
    problems = read_problem_file(args.problems)
    cfg = SamplingConfig(k=args.k, temperature=args.temperature, top_p=args.top_p,
                         max_new_tokens=args.max_new_tokens, prompt_suffix=args.prompt_suffix,
                         seed=args.seed, chunk_size=args.chunk_size)
    run = run_rollouts(problems, args.model, cfg, backend=args.backend, source=args.source,
                       out_root=Path(args.out) if args.out else None, progress=not args.quiet)
    print(json.dumps({"dir": str(run.dir), "rollouts": len(run.rollouts),
                      "success_rate": float(run.summary["success_rate"].mean())}))
    return 0


def _label(args: argparse.Namespace) -> int:
    """Score a table of questions with a saved probe (the paper's label-with-probe script)."""
    from . import store
    from .inputs import read_table, validate_questions
    from .probe_protocol import predict_texts
    from .probes import validate_probe_dir

    validate_probe_dir(args.probe)  # the whole probe, before the table and the model
    out_path = Path(args.out)
    if out_path.suffix != ".parquet":
        raise ValueError(f"--out {args.out}: the output must be a .parquet file")
    table = read_table(args.problems, what="questions")
    table = validate_questions(table, where=f"questions file {args.problems}", column=args.column, id_column=None)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size={args.batch_size}: must be >= 1")
    scored = predict_texts(args.probe, table[args.column].tolist(), batch_size=args.batch_size)
    out = table.assign(**{f"probe_{c}": scored[c].to_numpy() for c in scored.columns if c != "question"})
    path = store.write_if_absent(args.out, out)
    print(f"wrote {len(out)} rows to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pika", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("book", help="execute the chapters for a profile and render the book")
    b.add_argument("--profile", default="workshop", help="smoke, workshop, paper, or a YAML file")
    b.add_argument("--chapters", nargs="*", help="only these chapters (default: all in _toc.yml)")
    b.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="book root")
    b.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="override one parameter (VALUE parsed as JSON when it can be)")
    b.add_argument("--no-build", action="store_true", help="execute notebooks only")
    b.set_defaults(func=_book)

    r = sub.add_parser("rollouts", help="sample and grade K rollouts per problem (resumable)")
    r.add_argument("--problems", required=True, help="Parquet file with problem_id, question, answer")
    r.add_argument("--model", required=True)
    r.add_argument("--k", type=int, default=8)
    r.add_argument("--temperature", type=float, default=0.7)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--max-new-tokens", type=int, default=16)
    r.add_argument("--prompt-suffix", default="")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--chunk-size", type=int, default=16)
    r.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    r.add_argument("--source", default="auto", choices=["auto", "hub", "offline"])
    r.add_argument("--out", help="folder for runs (default: data/runs/rollouts)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_rollouts)

    lab = sub.add_parser("label", help="score questions with a saved probe (writes a new file)")
    lab.add_argument("--probe", required=True, help="folder with probe.safetensors + probe.json")
    lab.add_argument("--problems", required=True, help="Parquet, JSON or JSONL table of questions")
    lab.add_argument("--column", default="question")
    lab.add_argument("--out", required=True, help="output Parquet file (never overwritten)")
    lab.add_argument("--batch-size", type=int, default=16)
    lab.set_defaults(func=_label)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        import os

        if os.environ.get("PIKA_TRACEBACK"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pika {args.cmd}: error: {msg}\n(set PIKA_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
