"""The GPU benchmark's code path, at a tiny scale on the CPU, so it is not dead code where no GPU is."""
import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_shape  # noqa: E402


def test_gpu_shape_runs_tiny_on_cpu(tmp_path, capsys):
    from pika_utils.models.tiny import tiny_tokenizer

    (tmp_path / "questions.json").write_text(json.dumps([f"What is {i} + {i * 7}?" + " Think." * i for i in range(6)]))
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    ap = argparse.ArgumentParser()
    gpu_shape.add_arguments(ap)
    args = ap.parse_args(["--device", "cpu", "--tiny", "--n-prompts", "10", "--batches", "4",
                          "--token-budgets", "256", "--inputs", str(tmp_path)])
    args.repeats = 1
    gpu_shape.run(args)
    lines = capsys.readouterr().out.strip().splitlines()
    values = dict(line.rsplit(": ", 1) for line in lines[-6:])
    for key in ("extraction_vs_bare_forward[tiny,b4]", "speedup_vs_paper_way[tiny,b4]",
                "extraction_vs_bare_forward[tiny,t256]", "speedup_vs_paper_way[tiny,t256]",
                "extraction_vs_bare_forward_worst", "speedup_vs_paper_way_worst"):
        assert float(values[key]) > 0


def test_gpu_shape_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ap = argparse.ArgumentParser()
    gpu_shape.add_arguments(ap)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu_shape.run(ap.parse_args([]))
