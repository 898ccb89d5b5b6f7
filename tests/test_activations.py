"""nnsight extraction, for real, on the smoke profile's tiny local model."""
import numpy as np
import pandas as pd
import pytest
import torch

from pika_utils.activations import eoi as A
from pika_utils.models.registry import load_model
from pika_utils.core.prompts import chat_prompts

SUFFIX = "Reply with just the number."


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny-random-llama", source="offline")


def test_eoi_tokens_are_the_template_tokens_after_the_user_text(lm):
    toks = A.eoi_tokens(lm.tokenizer, SUFFIX)
    assert "<|assistant|>" in toks and "<|end|>" in toks
    prompt = chat_prompts(lm.tokenizer, ["What is 1 + 1?"], SUFFIX)[0]
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    n = A.eoi_token_count(lm.tokenizer, SUFFIX)
    assert lm.tokenizer.decode(ids[-n:]) == prompt[prompt.rfind(SUFFIX) + len(SUFFIX):]


def test_extraction_equals_output_hidden_states(lm):
    ex = A.NNsightExtractor(lm)
    L = ex.n_layers
    prompts = chat_prompts(lm.tokenizer, ["What is 2 + 2?", "A much longer question about 17 * 3 - 4 and more?", "Hi"], SUFFIX)
    n = A.eoi_token_count(lm.tokenizer, SUFFIX)
    ours = ex.extract(prompts, list(range(L + 1)), n)["eoi"]
    ref = A.hidden_states_reference(lm, prompts, list(range(L + 1)), n)
    assert ours.shape == (3, L + 1, n, lm.model.config.hidden_size)
    # embeddings and every block's output but the last are equal
    torch.testing.assert_close(ours[:, :L], ref[:, :L], rtol=0, atol=1e-6)
    # hidden_states[L] is after the final norm; ours is the residual stream before it
    assert not torch.allclose(ours[:, L], ref[:, L])
    with torch.inference_mode():
        torch.testing.assert_close(lm.model.model.norm(ours[:, L]), ref[:, L], rtol=1e-5, atol=1e-5)


def test_left_padding_does_not_change_the_vectors(lm):
    ex = A.NNsightExtractor(lm)
    layers = list(range(ex.n_layers + 1))
    target = chat_prompts(lm.tokenizer, ["What is 12 + 30?"], SUFFIX)
    others = chat_prompts(lm.tokenizer, ["Hi", "A considerably longer prompt, with many more tokens than the target has, so it pads."], SUFFIX)
    alone = ex.extract(target, layers, 4)["eoi"][0]
    for batch in (others[:1] + target, target + others, others + target):
        inside = ex.extract(batch, layers, 4)["eoi"][batch.index(target[0])]
        torch.testing.assert_close(inside, alone, rtol=1e-4, atol=1e-5)


def test_trace_stops_before_the_final_norm_and_lm_head(lm):
    calls = []
    hooks = [lm.model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")),
             lm.model.model.norm.register_forward_hook(lambda *a: calls.append("norm"))]
    try:
        A.NNsightExtractor(lm).extract(chat_prompts(lm.tokenizer, ["2+2?"]), [0, 1, 2], 2)
    finally:
        for h in hooks:
            h.remove()
    assert calls == []


def test_extract_activations_store_cache_and_alignment(lm, tmp_path):
    problems = pd.DataFrame({"problem_id": [f"p{i}" for i in range(7)],
                             "question": [f"What is {i} * {i + 3}?" + " and" * (6 - i) for i in range(7)]})
    cfg = A.ExtractionConfig(batch_size=3, token_layers=(1,))
    s = A.extract_activations(problems, lm, prompt_suffix=SUFFIX, cfg=cfg, out_root=tmp_path, progress=False)
    assert s.meta["n_chunks"] == 3 and s.meta["shape"][0] == 7 and s.meta["dtype"] == "float32"
    assert s.meta["model_info"]["weights_sha256"] == lm.weights_sha256 and s.meta["versions"]["nnsight"]
    X = s.layer(2, -1)[s.rows_for(problems["problem_id"].tolist())]  # rows are stored by prompt length
    assert X.shape == (7, lm.model.config.hidden_size) and np.isfinite(X).all()
    ref = A.hidden_states_reference(lm, chat_prompts(lm.tokenizer, problems["question"], SUFFIX), [2], 1)
    np.testing.assert_allclose(X, ref[:, 0, -1].numpy(), atol=1e-5)
    assert s.problem_ids[-1] == "p0"  # stored by prompt length: the longest question (p0) comes last
    T, M = s.tokens(1)
    assert T.shape[:2] == M.shape and M.sum(1).min() > 0
    mtime = (s.dir / "meta.json").stat().st_mtime_ns
    again = A.extract_activations(problems.iloc[::-1], lm, prompt_suffix=SUFFIX, cfg=cfg, out_root=tmp_path, progress=False)
    assert again.dir == s.dir and (again.dir / "meta.json").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(s.rows_for(["p3", "p0"], model=lm.name), [s.problem_ids.index("p3"), s.problem_ids.index("p0")])
    with pytest.raises(ValueError, match="from model 'tiny-random-llama', but the labels are for 'other'"):
        s.rows_for(["p0"], model="other")
    with pytest.raises(ValueError, match="no activations.*another prompt set"):
        s.rows_for(["p0", "zzz"])


def test_prompt_longer_than_the_context_is_an_error(lm):
    ctx = lm.model.config.max_position_embeddings
    with pytest.raises(ValueError, match=f"longer .* than the model's context of {ctx} tokens"):
        A.left_padded_batch(lm.tokenizer, ["x " * (ctx + 10)], ctx)


# ------------------------------------------------------------------ token-budget batching

QUESTIONS = [f"What is {i} * {i + 3}?" + " and more" * ((7 * i) % 5) for i in range(11)]


def test_token_budget_batches_take_every_prompt_once_within_the_budget():
    lengths = [5, 17, 3, 17, 9, 40, 1, 8, 8, 2, 30]
    for budget in (1, 16, 40, 41, 64, 1000):
        plan = A.token_budget_batches(lengths, budget)
        flat = np.concatenate(plan)
        assert sorted(flat.tolist()) == list(range(len(lengths)))  # every prompt exactly once
        for b in plan:
            width = max(lengths[i] for i in b)
            assert len(b) == 1 or len(b) * width <= budget
        assert lengths[plan[0][0]] == max(lengths)  # the widest batch first: an OOM shows at once
    assert len(A.token_budget_batches(lengths, 1000)) == 1
    with pytest.raises(ValueError, match="positive"):
        A.token_budget_batches(lengths, 0)
    fixed = A.ExtractionConfig(batch_size=4).batches(lengths)
    assert [len(b) for b in fixed] == [4, 4, 3] and sorted(np.concatenate(fixed).tolist()) == list(range(11))


def test_token_budget_extraction_restores_order_and_equals_the_fixed_batches(lm):
    ex = A.NNsightExtractor(lm)
    layers = list(range(ex.n_layers + 1))
    prompts = chat_prompts(lm.tokenizer, QUESTIONS, SUFFIX)
    n = A.eoi_token_count(lm.tokenizer, SUFFIX)
    ids = A.tokenize_prompts(lm.tokenizer, prompts)
    budget = 3 * max(len(x) for x in ids)  # several batches of different sizes
    assert len(A.ExtractionConfig(token_budget=budget).batches([len(x) for x in ids])) > 2
    packed = A.extract_in_order(ex, prompts, layers, n, A.ExtractionConfig(token_budget=budget))
    fixed = A.extract_in_order(ex, prompts, layers, n, A.ExtractionConfig(batch_size=4))
    one_each = torch.cat([ex.extract([p], layers, n)["eoi"] for p in prompts])  # the order of the prompts
    torch.testing.assert_close(packed, fixed, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed, one_each, rtol=1e-4, atol=1e-5)
    ref = A.hidden_states_reference(lm, prompts, layers, n)
    torch.testing.assert_close(packed[:, :-1], ref[:, :-1], rtol=1e-4, atol=1e-5)


def test_extract_activations_with_a_token_budget(lm, tmp_path):
    problems = pd.DataFrame({"problem_id": [f"q{i:02d}" for i in range(len(QUESTIONS))], "question": QUESTIONS})
    fixed = A.extract_activations(problems, lm, prompt_suffix=SUFFIX, cfg=A.ExtractionConfig(batch_size=4, token_layers=(2,)),
                                  out_root=tmp_path, progress=False)
    cfg = A.ExtractionConfig(token_budget=120, token_layers=(2,))
    s = A.extract_activations(problems, lm, prompt_suffix=SUFFIX, cfg=cfg, out_root=tmp_path, progress=False)
    assert s.dir != fixed.dir and s.meta["token_budget"] == 120 and "batch_size" not in s.meta
    assert "token_budget" not in fixed.meta  # the fixed-batch key is the one it always was
    assert sum(s.meta["chunk_rows"]) == len(problems) == len(set(s.problem_ids))
    assert s.meta["n_chunks"] == len(s.meta["chunk_rows"]) > 1
    pids = problems["problem_id"].tolist()
    for layer in s.layers:
        np.testing.assert_allclose(s.layer(layer)[s.rows_for(pids)], fixed.layer(layer)[fixed.rows_for(pids)],
                                   rtol=1e-4, atol=1e-5)
    T, M = s.tokens(2)
    T0, M0 = fixed.tokens(2)
    r, r0 = s.rows_for(pids), fixed.rows_for(pids)
    np.testing.assert_array_equal(M[r].sum(1), M0[r0].sum(1))
    np.testing.assert_allclose(T[r][M[r]], T0[r0][M0[r0]], rtol=1e-4, atol=1e-5)
    again = A.extract_activations(problems.iloc[::-1], lm, prompt_suffix=SUFFIX, cfg=cfg, out_root=tmp_path, progress=False)
    assert again.dir == s.dir


def test_ndif_remote_wraps_the_hub_id_not_the_local_copy(lm, monkeypatch):
    import nnsight

    with pytest.raises(ValueError, match="NDIF runs hub models only"):
        A.NNsightExtractor(lm, remote=True)  # the tiny model is built locally
    seen = {}
    monkeypatch.setattr(nnsight, "TransformersModel", lambda repo, **kw: seen.setdefault("repo", repo))
    hub = type(lm)(**{**lm.__dict__, "source": "hub:Qwen/Qwen2.5-Math-1.5B-Instruct"})
    A.NNsightExtractor(hub, remote=True)
    assert seen["repo"] == "Qwen/Qwen2.5-Math-1.5B-Instruct"
