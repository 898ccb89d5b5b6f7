"""Plan mode: every profile checks out in seconds, and a typo fails it before anything runs."""
import pytest

from pika_utils.book import runner as book
from pika_utils import cli
from pika_utils.generation import pipeline
from pika_utils.book import plan as P


@pytest.mark.parametrize("profile", book.list_profiles())
def test_every_profile_plans_cleanly(profile, capsys, monkeypatch):
    from pika_utils.models import registry as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("plan mode loaded a model"))
    plan = P.make_plan(profile)
    assert plan.errors == []
    params = book.load_profile(profile)
    assert [m["name"] for m in plan.models] == list(dict.fromkeys(params["models"] + params.get("budget_models", [])))
    for m in plan.models:
        assert m["layers"] > 0 and m["d_model"] > 0 and m["weights_gib"] > 0 and m["source"]
        assert m["revision"]
    assert plan.n_problems > 0 and {d["count"] for d in plan.datasets} <= {"loaded", "expected"}
    assert sum(r["rollouts"] for r in plan.rollouts) >= plan.n_problems * params["k"] * len(params["models"])
    assert cli.main(["book", "--profile", profile, "--plan"]) == 0
    out = capsys.readouterr().out
    for section in ("models:", "datasets:", "rollouts:", "activation storage:", "plan: OK"):
        assert section in out


def test_paper_plan_numbers():
    plan = P.make_plan("paper")
    q7 = next(m for m in plan.models if m["name"] == "qwen2.5-math-7b")
    assert (q7["layers"], q7["d_model"], q7["hub_id"]) == (28, 3584, "Qwen/Qwen2.5-Math-7B-Instruct")
    assert q7["weights_gib"] == pytest.approx(7.62e9 * 2 / 2**30)
    sizes = {d["source"]: d["n"] for d in plan.datasets}
    assert sizes["hub:math-lighteval"] == 5000 and sizes["hub:gsm8k"] == 1319 and sizes["hub:aime-2025"] == 30
    a = next(a for a in plan.activations if a["model"] == "qwen2.5-math-7b" and a["prompt"] == "direct prompt")
    # problems x (layers + 1) x EOI positions x d_model x 2 bytes (float16)
    assert a["eoi_gib"] == pytest.approx(plan.n_problems * 29 * 5 * 3584 * 2 / 2**30)


def test_plan_reports_every_mistake_at_once(capsys):
    bad = {**book.load_profile("smoke"), "modles": ["x"], "models": ["tiny-random-llama", "no-such-model"],
           "problem_sources": {"ladder": {"n_per_lvl": 3}, "hub:gsm8k": {"split": "test", "limit": 50}},
           "split_fractions": [0.5, 0.5, 0.5], "extract_dtype": "int8"}
    plan = P.make_plan(bad)
    text = " | ".join(plan.errors)
    for needle in ("['modles']", "no-such-model", "n_per_lvl", "split_fractions", "extract_dtype"):
        assert needle in text
    assert next(d for d in plan.datasets if d["source"] == "hub:gsm8k")["n"] == 50
    assert cli.main(["book", "--profile", "smoke", "--plan", "-p", "kk=1"]) == 1
    assert "ERROR: profile key(s) ['kk']" in capsys.readouterr().out


def test_vllm_parallelism_is_passed_through_only_where_it_applies():
    assert pipeline.vllm_engine_args({"backend": "vllm"}) == {}
    assert pipeline.vllm_engine_args({"backend": "vllm", "vllm_tensor_parallel_size": 1}) == {}
    assert pipeline.vllm_engine_args({"backend": "vllm", "vllm_tensor_parallel_size": 4, "vllm_data_parallel_size": 2}) \
        == {"tensor_parallel_size": 4, "data_parallel_size": 2}
    with pytest.raises(ValueError, match="backend 'vllm' only"):
        pipeline.vllm_engine_args({"backend": "transformers", "vllm_tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="positive"):
        pipeline.vllm_engine_args({"backend": "vllm", "vllm_data_parallel_size": 0})
    assert pipeline._backend_for("qwen2.5-math-7b", "transformers", "hub", {}) == "transformers"
    assert pipeline._backend_for("qwen2.5-math-7b", "vllm", "hub", {}) == "vllm"  # as before: a name


def test_vllm_engine_args_reach_the_engine(monkeypatch):
    from pika_utils.generation import rollouts as R

    seen = {}
    monkeypatch.setattr(R, "make_backend", lambda model, backend, **kw: seen.update(model=model, backend=backend, **kw) or "engine")
    assert pipeline._backend_for("qwen2.5-math-7b", "vllm", "hub", {"tensor_parallel_size": 2}) == "engine"
    assert seen == {"model": "qwen2.5-math-7b", "backend": "vllm", "source": "hub", "tensor_parallel_size": 2}
