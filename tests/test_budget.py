"""Budget forcing, for real, on the smoke profile's tiny local model."""
import pandas as pd
import pytest

from pika_utils.generation.budget import check_budget
from pika_utils.models.registry import load_model
from pika_utils.generation.rollouts import run_rollouts
from pika_utils.generation.sampling import SamplingConfig

MODEL = "tiny-random-llama"


def problems(n=6):
    return pd.DataFrame({"problem_id": [f"b{i}" for i in range(n)],
                         "question": [f"What is {i} + {i}?" for i in range(n)], "answer": [str(2 * i) for i in range(n)]})


@pytest.mark.parametrize("budget", [0, 5, 12])
def test_budget_caps_thinking_and_always_yields_a_graded_answer(tmp_path, budget):
    cfg = SamplingConfig(k=3, temperature=1.0, chunk_size=4, seed=3, budget=budget, answer_tokens=4,
                         prompt_suffix="Think, then answer.")
    run = run_rollouts(problems(), MODEL, cfg, source="offline", out_root=tmp_path, progress=False)
    r = run.rollouts
    assert len(r) == 18
    assert r["thinking_tokens"].between(0, budget).all()
    if budget == 0:
        assert (r["thinking_tokens"] == 0).all() and not r["budget_hit"].any()
    else:  # a random model rarely stops early: most thoughts run into the budget
        assert (r.loc[r["budget_hit"], "thinking_tokens"] == budget).all() and r["budget_hit"].any()
    assert r["answer_tokens"].between(1, 4).all()
    assert r["grade_reason"].notna().all() and r["correct"].isin([True, False]).all()
    assert r["text"].str.contains("Final answer: ", regex=False).all()  # the cue was forced every time
    assert (r["output_tokens"] >= r["thinking_tokens"] + r["answer_tokens"]).all()


def test_budget_changes_the_key_but_no_budget_keeps_it(tmp_path):
    base = SamplingConfig(k=2, temperature=1.0, chunk_size=4)
    assert "budget" not in base.key() and "answer_cue" not in base.key()
    assert SamplingConfig(k=2, temperature=1.0, chunk_size=4, budget=8).key()["budget"] == 8


def test_bad_budgets_and_cues_are_explained(tmp_path):
    with pytest.raises(ValueError, match="budget must be >= 0"):
        SamplingConfig(k=2, budget=-1)
    lm = load_model(MODEL, source="offline")
    ctx = lm.model.config.max_position_embeddings
    with pytest.raises(ValueError, match=f"exceeds the model's context of {ctx}"):
        run_rollouts(problems(2), MODEL, SamplingConfig(k=2, temperature=1.0, budget=ctx + 1),
                     source="offline", out_root=tmp_path)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word = Tokenizer(models.WordLevel({"Final": 0, "answer:": 1, "[UNK]": 2}, unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word, unk_token="[UNK]")
    check_budget(4, "Final answer:", tok)  # encodable: fine
    with pytest.raises(ValueError, match="cannot encode the answer cue 'Réponse finale :'"):
        check_budget(4, "Réponse finale :", tok)
