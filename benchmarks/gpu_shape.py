"""``bench_extraction.py --gpu-shape``: our extraction at the paper's model shapes on a GPU,
against the floor (the bare decoder stack on the same batches) and against the paper code's way
(a full forward with ``output_hidden_states``, dataset order, fixed batch size).

Random-weight Qwen2.5-1.5B and -7B shapes are built from their configs (no download). It needs
only torch, transformers and nnsight, plus ``pika_utils.activations`` from this repository:
where nnsight is not installed (the GPU image), pure-Python and binary wheels carried in
``--wheels`` (see ``benchmarks/gpu_wheels.sh``) are unpacked and put on the path. The prompts and
the tokenizer come from ``--inputs`` (written here by ``--export-inputs``), or from the full
environment's data packages when those are installed.
"""
from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import torch

PAPER_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
HERE = Path(__file__).resolve().parent


def qwen_config(shape: str):
    """Qwen2.5 shapes as in their hub configs (written by hand: no hub access); 'tiny' for CPUs."""
    from transformers import Qwen2Config

    common = dict(rope_theta=1e6, max_position_embeddings=32768, rms_norm_eps=1e-6)
    if shape == "tiny":
        return Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, vocab_size=49152, tie_word_embeddings=True, **common)
    if shape == "1.5b":
        return Qwen2Config(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                           intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, **common)
    if shape == "7b":
        return Qwen2Config(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                           intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, **common)
    raise ValueError(f"unknown shape {shape!r}: tiny, 1.5b or 7b")


def ensure_nnsight(wheels: Path) -> str:
    """Import nnsight; where it is missing, unpack the carried wheels and append them to the path
    (packages the image already has keep precedence)."""
    try:
        import nnsight
        return f"installed {nnsight.__version__}"
    except ImportError:
        found = sorted(Path(wheels).glob("*.whl"))
        if not found:
            raise SystemExit(f"nnsight is not installed and {wheels} holds no wheels: run benchmarks/gpu_wheels.sh "
                             "on a machine with PyPI access and carry the folder") from None
        target = Path(tempfile.mkdtemp(prefix="pika-wheels-"))
        for whl in found:
            zipfile.ZipFile(whl).extractall(target)
        sys.path.append(str(target))
        import nnsight
        return f"from carried wheels {nnsight.__version__} ({len(found)} wheels)"


def export_inputs(out: Path, n: int) -> None:
    """Write the prompts' questions and SmolLM2's tokenizer for a machine without the data packages."""
    from pika_utils.models.registry import load_model
    from pika_utils.problems.tasks import load_mmath

    out.mkdir(parents=True, exist_ok=True)
    questions = load_mmath(["math500"])["question"].tolist()
    (out / "questions.json").write_text(json.dumps(questions))
    load_model("smollm2-135m", source="offline", device="cpu").tokenizer.save_pretrained(out / "tokenizer")
    print(f"wrote {len(questions)} MATH-500 questions and the smollm2-135m tokenizer to {out}")


def load_inputs(inputs: Path, n: int) -> tuple[list[str], object, str]:
    """``n`` MATH-500 questions (cycled when fewer) and SmolLM2's tokenizer (ids < 49152 fit Qwen's vocab)."""
    if (Path(inputs) / "questions.json").exists():
        from transformers import AutoTokenizer

        questions = json.loads((Path(inputs) / "questions.json").read_text())
        tok, where = AutoTokenizer.from_pretrained(str(Path(inputs) / "tokenizer")), f"{inputs}"
    else:
        try:
            from pika_utils.models.registry import load_model
            from pika_utils.problems.tasks import load_mmath
        except ImportError as e:
            raise SystemExit(f"no {inputs}/questions.json and no data packages ({e}): run "
                             "'bench_extraction.py --gpu-shape --export-inputs DIR' where they are, and carry DIR") from None
        questions = load_mmath(["math500"])["question"].tolist()
        tok, where = load_model("smollm2-135m", source="offline", device="cpu").tokenizer, "data packages"
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return [questions[i % len(questions)] for i in range(n)], tok, f"smollm2-135m tokenizer, MATH-500 ({where})"


def build_model(shape: str, device: str, dtype: torch.dtype):
    """Random weights (the default init, seeded) created directly on the device, in ``dtype``."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(qwen_config(shape))
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def best_pass(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each method's best wall time over ``repeats`` whole passes, the order flipped every repeat."""
    best = {k: float("inf") for k in fns}
    for r in range(repeats):
        for name in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            t0 = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def run(args) -> None:
    """Print, per shape and batching, ours / bare forward and the speed-up over the paper's way."""
    if args.export_inputs:
        return export_inputs(Path(args.export_inputs), args.n_prompts)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu-shape needs a CUDA GPU and none is visible (torch.cuda.is_available() is False). "
                         "Run it on a GPU machine, or check that it runs with '--device cpu --tiny'.")
    nn_from = ensure_nnsight(Path(args.wheels))
    from pika_utils.activations.eoi import (ExtractionConfig, NNsightExtractor, eoi_token_count, padded_from_ids,
                                        tokenize_prompts)
    from pika_utils.core.prompts import chat_prompts

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    questions, tok, tok_name = load_inputs(Path(args.inputs), args.n_prompts)
    prompts = chat_prompts(tok, questions, PAPER_SUFFIX)
    n_pos = eoi_token_count(tok, PAPER_SUFFIX)
    shapes = ["tiny"] if args.tiny else args.shapes
    settings = [("b", b) for b in args.batches] + [("t", t) for t in args.token_budgets]
    print(f"device: {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), dtype: {dtype}, "
          f"torch {torch.__version__}, nnsight {nn_from}, threads: {torch.get_num_threads()}, prompts: {len(prompts)} "
          f"({tok_name}), eoi positions: {n_pos}, storage dtype: float16", flush=True)
    results: dict[str, float] = {}
    for shape in shapes:
        model = build_model(shape, args.device, dtype)
        # nnsight instruments the modules it wraps (a forward that checks for a trace, inert
        # outside one but not free): the floor and the paper's way run on an uninstrumented twin
        # that shares every weight, built before the wrapping
        twin = copy.deepcopy(model, memo={id(t): t for t in [*model.parameters(), *model.buffers()]})
        lm = SimpleNamespace(model=model, tokenizer=tok, name=f"qwen2.5-{shape}-shape-random")
        ex = NNsightExtractor(lm)
        layers = list(range(ex.n_layers + 1))
        t0 = time.perf_counter()
        ids = tokenize_prompts(tok, prompts)  # once per run: part of ours
        t_tok = time.perf_counter() - t0
        lengths = [len(x) for x in ids]

        def on_device(batch: dict) -> dict:
            return {k: v.to(args.device, non_blocking=True) for k, v in batch.items()}

        def bare(plan: Sequence) -> None:
            with torch.inference_mode():
                for idx in plan:  # the floor: the decoder stack alone on the same batches
                    twin.model(**on_device(padded_from_ids([ids[i] for i in idx], tok.pad_token_id)))
            sync()

        def ours(plan: Sequence) -> None:
            for idx in plan:
                ex.extract_ids([ids[i] for i in idx], layers, n_pos, out_dtype=torch.float16)
            sync()

        def paper(size: int) -> None:
            with torch.inference_mode():
                for i in range(0, len(prompts), size):  # dataset order, tokenised per batch
                    batch = padded_from_ids(tokenize_prompts(tok, prompts[i:i + size]), tok.pad_token_id)
                    out = twin(**on_device(batch), output_hidden_states=True)
                    torch.stack([h[:, -n_pos:, :] for h in out.hidden_states], dim=1).to(torch.float16).cpu()
            sync()

        paper_s: dict[int, float] = {}
        for b in args.batches:  # the paper's way at each batch size
            paper(b)  # warm-up
            paper_s[b] = best_pass({"paper": lambda b=b: paper(b)}, args.repeats)["paper"]
        for kind, value in settings:
            cfg = ExtractionConfig(batch_size=value) if kind == "b" else ExtractionConfig(token_budget=value)
            plan = cfg.batches(lengths)
            check_equal(twin, ex, [ids[i] for i in plan[0][:4]], tok.pad_token_id, layers, n_pos, args.device)
            bare(plan), ours(plan)  # warm-up: kernels, allocator, first trace
            t = best_pass({"bare": lambda: bare(plan), "ours": lambda: ours(plan)}, args.repeats)
            ours_s = t["ours"] + t_tok
            ref = paper_s[value] if kind == "b" else min(paper_s.values())  # token budgets: vs the best paper batch
            tag = f"{shape},{kind}{value}"
            results[f"extraction_vs_bare_forward[{tag}]"] = ours_s / t["bare"]
            results[f"speedup_vs_paper_way[{tag}]"] = ref / ours_s
            padded = sum(len(idx) * max(lengths[i] for i in idx) for idx in plan)
            print(f"[{tag}] batches: {len(plan)}, padded/real tokens: {padded / sum(lengths):.3f}, bare {t['bare']:.3f} s, "
                  f"ours {ours_s:.3f} s (tokenise once {t_tok:.3f} s), paper way {ref:.3f} s", flush=True)
        del model, twin, ex, lm
        if args.device == "cuda":
            torch.cuda.empty_cache()
    for k, v in results.items():
        print(f"{k}: {v:.3f}")
    print(f"extraction_vs_bare_forward_worst: {max(v for k, v in results.items() if 'bare' in k):.3f}")
    print(f"speedup_vs_paper_way_worst: {min(v for k, v in results.items() if 'paper' in k):.3f}")


def check_equal(model, ex, ids, pad_id, layers, n_pos, device) -> None:
    """Ours against ``output_hidden_states`` on one identical batch (the widest batch's first
    rows, so the same padded width; layers 0..L-1, as the last hidden state is taken after the
    final norm): stop if they differ."""
    from pika_utils.activations.eoi import padded_from_ids

    mine = ex.extract_ids(ids, layers, n_pos, out_dtype=torch.float32)["eoi"]
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in padded_from_ids(ids, pad_id).items()}, output_hidden_states=True)
    ref = torch.stack([h[:, -n_pos:, :].float().cpu() for h in out.hidden_states[:-1]], dim=1)
    diff = (mine[:, :-1] - ref).abs().max().item()
    if diff > 1e-5 * max(1.0, ref.abs().max().item()):
        raise SystemExit(f"FAIL: our activations differ from output_hidden_states by {diff:.3g} on the same batch")


def add_arguments(ap) -> None:
    g = ap.add_argument_group("--gpu-shape")
    g.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    g.add_argument("--tiny", action="store_true", help="a tiny shape (CPU smoke check of this code path)")
    g.add_argument("--shapes", nargs="+", default=["1.5b", "7b"], choices=["1.5b", "7b"])
    g.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="fixed batch sizes (ours and paper way)")
    g.add_argument("--token-budgets", type=int, nargs="*", default=[8192, 32768, 131072])
    g.add_argument("--n-prompts", type=int, default=512)
    g.add_argument("--inputs", default=str(HERE / "gpu_inputs"), help="questions.json + tokenizer/ (see --export-inputs)")
    g.add_argument("--export-inputs", metavar="DIR", help="write the prompts and tokenizer to DIR, then exit")
    g.add_argument("--wheels", default=str(HERE / "wheels"), help="carried wheels, used where nnsight is missing")
