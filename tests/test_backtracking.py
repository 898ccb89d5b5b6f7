"""Chapter 8: the backtracking annotator, token labels, the lag shift, the chain split, and the
probes and baselines on a small real run of the smoke model."""
import numpy as np
import pandas as pd
import pytest

from pika_utils import backtrack_labels as BL
from pika_utils import lag_probes as LP

BACKTRACKING = [
    "Wait, that is not right.",
    "wait I added the wrong numbers",
    "Hmm, let me think about this differently.",
    "Actually, the area is 12, not 10.",
    "Alternatively, we can factor the quadratic.",
    "But wait, the problem says at least two.",
    "No, 7 times 8 is 56.",
    "Let me re-check the second step.",
    "Let me recheck: 3 + 4 = 7.",
    "Let me double-check the sum.",
    "Oops, I dropped a sign.",
    "Hold on, the units are wrong.",
    "**Wait**, the total should include tax.",
    "2. Actually the answer is 5.",
    "So I made a mistake in step 2.",
    "That's incorrect; the remainder is 1.",
    "Let me redo this step.",
]
NOT_BACKTRACKING = [
    "First, compute 3 + 4 = 7.",
    "Check: 7 - 4 = 3, which is correct.",
    "Let me check the answer by substitution.",
    "The answer is \\boxed{7}.",
    "Now we wait for the train to arrive.",
    "Nothing changes after step two.",
    "Notice that 12 is even.",
    "She actually bought 3 apples.",
    "Step 1: Multiply 6 by 7 to get 42.",
    "Known values: a = 2, b = 3.",
]


@pytest.mark.parametrize("s", BACKTRACKING)
def test_annotator_marks_backtracking(s):
    assert BL.is_backtracking(s)


@pytest.mark.parametrize("s", NOT_BACKTRACKING)
def test_annotator_leaves_other_sentences(s):
    assert not BL.is_backtracking(s)


def test_sentences_split_at_ends_and_lines_not_decimals():
    text = "The price is 3.5 dollars. Wait, it is 4.\nSo the total is 8!  Done?"
    sents = BL.split_sentences(text)
    assert [s.text for s in sents] == ["The price is 3.5 dollars.", "Wait, it is 4.", "So the total is 8!", "Done?"]
    for s in sents:
        assert text[s.start:s.end] == s.text
    assert [s.backtracking for s in BL.annotate(text)] == [False, True, False, False]


def test_token_labels_follow_sentence_offsets():
    text = "Add 2 and 3. Wait, no. It is 6."
    sents = BL.annotate(text)
    w = text.index("Wait")
    wend = text.index("no.") + 3
    # tokens: hand-made offsets, one straddling nothing, one the special token (empty span)
    offsets = [(0, 3), (3, 5), (5, 12), (12, 17), (17, 18), (18, 22), (22, 25), (25, 31), (0, 0)]
    labels = BL.token_labels(offsets, sents)
    expect = [int(a < wend and b > w and b > a) for a, b in offsets]
    assert labels.tolist() == expect == [0, 0, 0, 1, 1, 1, 0, 0, 0]


def test_token_labels_with_a_real_tokenizer():
    from pika_utils.models import load_model

    tok = load_model("tiny-random-llama", source="offline").tokenizer
    text = "Three apples. Wait, four apples.\nHence 4."
    out = BL.label_chain(tok, text)
    lab, offs = out["labels"], out["offsets"]
    assert len(lab) == len(out["input_ids"]) == len(offs)
    span = (text.index("Wait"), text.index("\nHence"))
    for (a, b), y in zip(offs, lab):
        inside = b > a and a < span[1] and b > span[0]
        assert y == int(inside), (a, b, text[a:b])
    assert lab.sum() > 0 and lab.sum() < len(lab)


def test_cohen_kappa():
    assert BL.cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert BL.cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # sklearn's value on a mixed case
    a, b = [0, 1, 1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 1, 0, 1]
    from sklearn.metrics import cohen_kappa_score
    assert BL.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_lag_shift_stays_inside_each_chain():
    # two chains of lengths 5 and 3, stored contiguously
    pos = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    n = np.array([5, 5, 5, 5, 5, 3, 3, 3])
    src, tgt = LP.lag_pairs(pos, n, 2)
    assert src.tolist() == [0, 1, 2, 5] and tgt.tolist() == [2, 3, 4, 7]
    src, tgt = LP.lag_pairs(pos, n, -1)
    assert src.tolist() == [1, 2, 3, 4, 6, 7] and tgt.tolist() == [0, 1, 2, 3, 5, 6]
    src, tgt = LP.lag_pairs(pos, n, 0)
    assert (src == tgt).all() and len(src) == 8
    src, tgt = LP.lag_pairs(pos, n, 5)  # longer than every chain: nothing, nothing wraps
    assert len(src) == 0
    chain = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    for lag in range(-6, 7):
        s, t = LP.lag_pairs(pos, n, lag)
        assert (chain[s] == chain[t]).all() and (pos[t] - pos[s] == lag).all()


def test_chain_split_is_by_chain_and_seeded():
    ids = [f"c{i}" for i in range(20)]
    sp = LP.chain_split(ids, (0.6, 0.2, 0.2), seed=3)
    assert sorted(sp) == sorted(ids)
    assert pd.Series(sp).value_counts().to_dict() == {"train": 12, "val": 4, "test": 4}
    assert sp == LP.chain_split(list(reversed(ids)), (0.6, 0.2, 0.2), seed=3)
    assert sp != LP.chain_split(ids, (0.6, 0.2, 0.2), seed=4)


def test_chain_bootstrap_matches_plain_metrics_without_resampling():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    s = y + rng.normal(size=300)
    s[:10] = s[10]  # ties
    chain = np.repeat(np.arange(30), 10)
    ci = LP.chain_bootstrap(y, s, chain, 0.5, n_boot=300, seed=0)
    a, f = LP.auroc(y, s), LP.f1_at(y, s, 0.5)
    assert ci["auroc_low"] < a < ci["auroc_high"] and ci["f1_low"] < f < ci["f1_high"]
    # the weighted formula: weights 1 are the plain metrics; weights 2 on some chains are the
    # plain metrics on a table where those chains' tokens appear twice
    cidx = chain
    auc, f1 = LP.weighted_metrics(y, s, cidx, np.ones((1, 30)), 0.5)
    assert auc[0] == pytest.approx(a) and f1[0] == pytest.approx(f)
    counts = np.zeros((1, 30))
    counts[0, [1, 4, 4, 7, 20]] = [1, 2, 0, 1, 3]
    counts[0, 4] = 2
    rows = np.concatenate([np.flatnonzero(chain == c).repeat(1) for c in range(30) for _ in range(int(counts[0, c]))])
    auc, f1 = LP.weighted_metrics(y, s, cidx, counts, 0.5)
    assert auc[0] == pytest.approx(LP.auroc(y[rows], s[rows])) and f1[0] == pytest.approx(LP.f1_at(y[rows], s[rows], 0.5))
