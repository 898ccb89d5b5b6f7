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
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.plan:  # check the profile and estimate the run; nothing heavy runs
        from .plan import make_plan, render

        plan = make_plan(args.profile, overrides)
        print(render(plan))
        return 1 if plan.errors else 0
    try:
        make_book(args.profile, chapters=args.chapters, root=Path(args.root), overrides=overrides,
                  build=not args.no_build)
    except ChapterFailed as e:
        print(f"[book] FAILED: {e}", file=sys.stderr)
        return 1
    return 0


def _rollouts(args: argparse.Namespace) -> int:
    from . import store
    from .rollouts import SamplingConfig, run_rollouts

    problems = store.read_parquet(args.problems)
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
    from .probe_protocol import predict_texts

    table = store.read_parquet(args.problems) if args.problems.endswith(".parquet") else None
    if table is None:
        import pandas as pd
        table = pd.read_json(args.problems, lines=args.problems.endswith(".jsonl"))
    if args.column not in table:
        raise SystemExit(f"{args.problems} has no column {args.column!r}; columns: {list(table.columns)}")
    scored = predict_texts(args.probe, table[args.column].astype(str).tolist(), batch_size=args.batch_size)
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
    b.add_argument("--plan", action="store_true", help="check the profile and print what it would run; run nothing")
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
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
