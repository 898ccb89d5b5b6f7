"""Command line: `pika book` runs the book for a profile; `pika rollouts` samples one model;
`pika label` scores new questions with a saved probe; `pika route` routes them with a saved Router.
Every ``--problems`` file may be JSONL, CSV or Parquet (columns ``question``, ``answer``, and
optionally ``id``, ``difficulty``, ``domain``, ``split``), checked with errors that name the file,
the column and the first bad rows; its sha256 is recorded in the output's metadata."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _book(args: argparse.Namespace) -> int:
    from .book.runner import ChapterFailed, make_book

    overrides = {}
    for item in args.param or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"-p {item!r}: write an override as KEY=VALUE (e.g. -p k=8)")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.plan:  # check the profile and estimate the run; nothing heavy runs
        from .book.plan import make_plan, render

        plan = make_plan(args.profile, overrides)
        print(render(plan))
        return 1 if plan.errors else 0
    try:
        make_book(args.profile, chapters=args.chapters, root=Path(args.root) if args.root else None,
                  overrides=overrides, build=not args.no_build, preflight=not args.no_preflight)
    except ChapterFailed as e:
        print(f"[book] FAILED: {e}", file=sys.stderr)
        return 1
    return 0


def _input_record(path: str, table) -> dict:
    """Where a command's input came from: the file, its sha256, its rows."""
    from .core import store

    return {"input": {"path": str(Path(path).resolve()), "sha256": store.file_sha256(path), "rows": len(table)}}


def _problems(path: str):
    """A problem table from a file: one already in the book's schema (a problems.parquet the book
    wrote) is used as it is; any other JSONL/CSV/Parquet file is read as a user's problem file."""
    from .problems.table import PROBLEM_COLUMNS, validate_problems
    from .problems.files import load_file, read_problem_file

    table = read_problem_file(path)
    if set(PROBLEM_COLUMNS) <= set(table.columns):
        return validate_problems(table)
    return load_file(path)


def _questions(args: argparse.Namespace):
    """The questions of ``--problems FILE`` (column ``--column``) or of ``--question TEXT``,
    checked by the one input validator (``problems.files``)."""
    import pandas as pd

    from .problems.files import read_problem_file, validate_questions

    if getattr(args, "question", None):
        if args.problems:
            raise ValueError("give --problems FILE or --question TEXT, not both")
        # object, not text columns: a byte that was not UTF-8 (kept by Python as a surrogate) is
        # named by the check, where a text column would fail on it with no name
        table = validate_questions(pd.DataFrame({"question": args.question}, dtype=object), where="--question",
                                   id_column=None, first_row=1)  # the first --question is row 1
        return table, {"input": {"questions": args.question}}
    if not args.problems:
        raise ValueError("give --problems FILE (JSONL, CSV or Parquet) or --question TEXT")
    table = read_problem_file(args.problems, what="questions", column=args.column, answer_column=None, id_column=None)
    if args.column != "question":
        table = table.rename(columns={"question": "question_original"}).rename(columns={args.column: "question"})
    return table, _input_record(args.problems, table)


def _price_option(args: argparse.Namespace) -> dict | None:
    """The run's price override from ``--price IN OUT`` or ``--size-b B`` (its size tier's price)."""
    from .core import prices

    if args.price is not None and args.size_b is not None:
        raise ValueError("give --price INPUT_PER_M OUTPUT_PER_M or --size-b BILLIONS, not both")
    if args.price is not None:
        try:
            price = prices.check_price(dict(zip(prices.PRICE_KEYS, args.price)), "--price")
        except ValueError:
            raise ValueError(f"--price {args.price[0]} {args.price[1]}: $ per million input and output tokens "
                             "must be numbers >= 0") from None
    elif args.size_b is not None:
        price = dict(zip(prices.PRICE_KEYS, prices.price_for_size(args.size_b, where="--size-b")))
    else:
        return None
    return {args.model: price}


def _rollouts(args: argparse.Namespace) -> int:
    from .book.params import check_params
    from .core.prices import get_price
    from .generation.rollouts import run_rollouts
    from .generation.sampling import SamplingConfig
    from .models.registry import resolve_spec
    from .problems.files import check_prompts_fit, file_rows

    check_params({"k": args.k, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                  "max_new_tokens": args.max_new_tokens, "chunk_size": args.chunk_size})
    price = _price_option(args)
    resolve_spec(args.model)  # an unknown name, or a .gguf path that is no GGUF file, before anything is read
    get_price(args.model, price)  # a model the price table lacks needs --price or --size-b
    problems = _problems(args.problems)
    cfg = SamplingConfig(k=args.k, temperature=args.temperature, top_p=args.top_p,
                         max_new_tokens=args.max_new_tokens, prompt_suffix=args.prompt_suffix,
                         seed=args.seed, chunk_size=args.chunk_size)
    if args.backend == "transformers":  # every prompt fits the context, before the weights load
        check_prompts_fit(problems["question"].tolist(), args.model, max_new_tokens=cfg.max_new_tokens,
                          prompt_suffix=cfg.prompt_suffix, system_prompt=cfg.system_prompt, source=args.source,
                          where=f"problems file {args.problems}", ids=problems["problem_id"].tolist(),
                          rows=file_rows(problems))
    run = run_rollouts(problems, args.model, cfg, backend=args.backend, source=args.source, price_overrides=price,
                       out_root=Path(args.out) if args.out else None, progress=not args.quiet)
    print(json.dumps({"dir": str(run.dir), "rollouts": len(run.rollouts),
                      "success_rate": float(run.summary["success_rate"].mean())}))
    return 0


def _label(args: argparse.Namespace) -> int:
    """Score a table of questions with a saved probe (the paper's label-with-probe script)."""
    from .core import store
    from .models.registry import check_weights
    from .probes.protocol import predict_texts
    from .probes.files import validate_probe_dir

    _, info = validate_probe_dir(args.probe)  # the whole probe, before the table and the model
    _fresh_output(args.out)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size={args.batch_size}: must be >= 1")
    table, record = _questions(args)
    # the weights the probe was trained on, from probe.json, before they load
    check_weights(info["model"], info["weights_sha256"], what=f"the probe in {args.probe}")
    scored = predict_texts(args.probe, table["question"].astype(str).tolist(), batch_size=args.batch_size)
    out = table.assign(**{f"probe_{c}": scored[c].to_numpy() for c in scored.columns if c != "question"})
    if args.column != "question":
        out = out.rename(columns={"question": args.column, "question_original": "question"})
    meta = {**record, "probe": str(Path(args.probe).resolve()),
            "probe_sha256": store.file_sha256(Path(args.probe) / "probe.safetensors"), "versions": store.versions()}
    path = store.write_if_absent(args.out, out, meta)
    print(f"wrote {len(out)} rows to {path}")
    print(label_columns_note(info))
    return 0


def label_columns_note(info: dict) -> str:
    """What the columns ``pika label`` writes mean, for the probe it used (``probe.json``)."""
    target = info.get("target", "the target")
    if info.get("task") == "classification":
        return (f"probe_score: the probe's linear score w.x at layer {info.get('layer')} (log-odds of {target} before "
                "Platt scaling; higher means more likely to succeed); probe_prob: the calibrated probability of "
                f"{target}. Compare scores only between questions scored by the same probe.")
    return (f"probe_score: the probe's prediction of {target} (a ridge fit without an intercept at layer "
            f"{info.get('layer')}: about the rate itself, which a linear probe may put a little outside [0, 1], "
            "e.g. -0.01 for a question it expects the model to fail every time). Higher means more likely to "
            "succeed; compare scores only between questions scored by the same probe.")


def _fresh_output(path: str | None, option: str = "--out") -> None:
    """An output table is a new .parquet file: refused before any model loads when it exists
    (outputs are never overwritten) or has another suffix."""
    if path is None:
        return
    if Path(path).suffix != ".parquet":
        raise ValueError(f"{option} {path}: the output must be a .parquet file")
    if Path(path).exists():
        raise FileExistsError(f"{option} {path} already exists; refusing to overwrite it (outputs are never "
                              "overwritten): choose another path or move the file aside")


def _route(args: argparse.Namespace) -> int:
    """Route new questions with a saved Router: the chosen member and every member's p(success)."""
    import pandas as pd

    from .core import store
    from .routing.router import Router

    path = Path(args.router)
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        found = [f for f in found if store.read_json(f).get("kind", "").endswith(".Router")] if found else []
        if len(found) != 1:
            raise SystemExit(f"{path}: expected one saved router JSON (Router.save) in the folder, found "
                             f"{[f.name for f in found] or 'none'}; pass the JSON file itself")
        path = found[0]
    router = Router.load(path)
    _fresh_output(args.out)
    if args.evaluate:
        return _evaluate(args, router, path)
    table, record = _questions(args)
    routed = router.route(table["question"].astype(str).tolist(), source=args.source, batch_size=args.batch_size,
                          progress=True)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(routed.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        out = table.reset_index(drop=True).assign(**{c: routed[c].to_numpy() for c in routed.columns if c != "question"})
        meta = {**record, "router": str(path.resolve()), "router_sha256": store.file_sha256(path),
                "order": router.order, "lam": router.lam, "thresholds": router.thresholds, "versions": store.versions()}
        written = store.write_if_absent(args.out, out, meta)
        print(f"wrote {len(out)} rows to {written}")
    return 0


def _evaluate(args: argparse.Namespace, router, path: Path) -> int:
    """``pika route --evaluate LOG``: the router judged on a labelled outcome log (routing.judge)."""
    from .core import store
    from .problems.recorded import read_outcome_log
    from .routing.judge import as_mapping, judge, judge_table_text

    if args.problems or args.question:
        raise ValueError("--evaluate reads the questions from the outcome log; drop --problems/--question")
    if args.n_boot < 10 or args.batch_size < 1:
        raise ValueError(f"--n-boot {args.n_boot} / --batch-size {args.batch_size}: give at least 10 bootstrap draws "
                         "and a batch of at least 1")
    log, problems = read_outcome_log(args.evaluate)
    j = judge(router, log, problems, source=args.source, batch_size=args.batch_size, n_boot=args.n_boot, seed=0,
              progress=True)
    print(judge_table_text(j))
    if args.out:
        meta = {**as_mapping(j), "router": str(path.resolve()), "router_sha256": store.file_sha256(path),
                "log": str(Path(args.evaluate).resolve()), "log_sha256": store.file_sha256(Path(args.evaluate)),
                "versions": store.versions()}
        written = store.write_if_absent(args.out, j.routed, meta)
        print(f"wrote {len(j.routed)} rows to {written}")
    return 0


def _question_arguments(parser: argparse.ArgumentParser) -> None:
    """Where questions come from, the same for `label` and `route`."""
    parser.add_argument("--problems", help="JSONL, CSV or Parquet table of questions")
    parser.add_argument("--question", action="append", help="one question (repeat for several)")
    parser.add_argument("--column", default="question")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pika", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("book", help="execute the chapters for a profile and render the book")
    b.add_argument("--profile", default="workshop", help="smoke, workshop, paper, or a YAML file")
    b.add_argument("--chapters", nargs="*", help="only these chapters (default: all in _toc.yml)")
    b.add_argument("--root", default=None, help="book root (default: books/<profile>, one folder per profile)")
    b.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="override one parameter (VALUE parsed as JSON when it can be)")
    b.add_argument("--no-build", action="store_true", help="execute notebooks only")
    b.add_argument("--plan", action="store_true", help="check the profile and print what it would run; run nothing")
    b.add_argument("--no-preflight", action="store_true",
                   help="skip the checks of the machine (sandbox, memory, disk, models, recorded members) before chapter 1")
    b.set_defaults(func=_book)

    r = sub.add_parser("rollouts", help="sample and grade K rollouts per problem (resumable)")
    r.add_argument("--problems", required=True, help="JSONL, CSV or Parquet file with question, answer (id, ...)")
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
    r.add_argument("--price", nargs=2, type=float, metavar=("INPUT_PER_M", "OUTPUT_PER_M"),
                   help="$ per million input and output tokens (needed for a model the price table lacks, e.g. a .gguf file)")
    r.add_argument("--size-b", type=float, metavar="BILLIONS",
                   help="the model's size in billions of parameters: priced by its size tier (instead of --price)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_rollouts)

    lab = sub.add_parser("label", help="score questions with a saved probe (writes a new file)",
                         description="Score questions with a saved probe. The output adds probe_score (the probe's "
                                     "linear score: a predicted success rate for a ridge probe, log-odds for a binary "
                                     "one) and, for binary probes, probe_prob (the calibrated probability).")
    lab.add_argument("--probe", required=True, help="folder with probe.safetensors + probe.json")
    _question_arguments(lab)
    lab.add_argument("--out", required=True, help="output Parquet file (never overwritten)")
    lab.add_argument("--batch-size", type=int, default=16)
    lab.set_defaults(func=_label)

    ro = sub.add_parser("route", help="route questions with a saved Router (prints the chosen member)")
    ro.add_argument("--router", required=True, help="a saved router JSON (Router.save) or its folder")
    _question_arguments(ro)
    ro.add_argument("--out", help="output Parquet file (never overwritten)")
    ro.add_argument("--source", default="auto", choices=["auto", "hub", "offline"], help="where the members' models load from")
    ro.add_argument("--batch-size", type=int, default=16)
    ro.add_argument("--evaluate", metavar="OUTCOMES",
                    help="judge the router on a labelled outcome log (JSONL, CSV, Parquet: member, problem_id or "
                         "question, correct, response or output_tokens): accuracy and cost against each member, the "
                         "oracle and random routing, with intervals")
    ro.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws of --evaluate's intervals")
    ro.set_defaults(func=_route)

    args = p.parse_args(argv)
    import logging
    import os

    from .problems.files import InputError

    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    logging.getLogger("pika_utils").setLevel(logging.INFO)  # e.g. which source a model came from

    try:
        return args.func(args)
    except (InputError, ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if os.environ.get("PIKA_TRACEBACK"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pika {args.cmd}: error: {msg}\n(set PIKA_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
