"""Chapter 8: the backtracking annotator, token labels, the lag shift, the chain split, and the
probes and baselines on a small real run of the smoke model."""
import numpy as np
import pandas as pd
import pytest

from pika_utils.backtracking import labels as BL
from pika_utils.backtracking import lag_probes as LP

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
    "Wait, that is not correct.",
    "Wait, it's not right: 3 + 4 is 7.",
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
    "Wait, this is correct.",
    "Wait, it's right!",
    "Wait, 630 is indeed equal to 42 multiplied by 15.",
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


def test_a_chains_first_sentence_is_not_backtracking():
    text = "Wait, let's solve this step by step.\nStep 1: 2 + 2 = 5.\nWait, 2 + 2 = 4."
    assert [s.backtracking for s in BL.annotate(text)] == [False, False, True]


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
    from pika_utils.models.registry import load_model

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


def _written_chains(n=30, seed=0):
    """Chains with hand-written sentences: backtracking ones in capitals (letters found nowhere
    else), so the current token's identity separates them at lag 0."""
    rng = np.random.default_rng(seed)
    plain = ["add three and four to get seven.", "so the sum is ten.", "multiply by two.", "the total is nine."]
    back = ["WAIT, WRONG SUM!", "HMM, REDO IT."]
    rows = []
    for i in range(n):
        parts = [plain[j] for j in rng.integers(0, len(plain), 5)]
        if i % 3 != 2:  # two chains in three backtrack once
            parts.insert(int(rng.integers(1, 5)), back[i % 2])
        rows.append({"chain_id": f"c{i:02d}", "prefix": f"q{i}: what is it?\na: ", "text": " ".join(parts)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from pika_utils.backtracking import chains as CH
    from pika_utils.models.registry import load_model
    from pika_utils.activations.tokens import extract_token_activations

    torch.set_num_threads(1)
    lm = load_model("tiny-random-llama", source="offline")
    chains = _written_chains()
    acts = extract_token_activations(chains, lm, [1, 2, 4], dtype="float32", batch_size=7,
                                     out_root=tmp_path_factory.mktemp("tokacts"), progress=False)
    labels = CH.token_labels_for(acts.tokens, chains)
    return lm, chains, acts, labels


def test_token_activations_equal_hidden_states_at_chain_tokens(tiny_run):
    import torch

    lm, chains, acts, _ = tiny_run
    tokens = acts.tokens
    assert acts.meta["n_tokens"] == len(tokens) == len(acts.layer(2))
    for cid in ["c00", "c07"]:
        row = chains.set_index("chain_id").loc[cid]
        ids = lm.tokenizer(row["prefix"] + row["text"], add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            hs = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        rows = np.flatnonzero(tokens["chain_id"].to_numpy() == cid)
        n = len(rows)
        assert n == len(lm.tokenizer(row["text"], add_special_tokens=False)["input_ids"])  # byte-level: one per char
        assert (tokens["pos"].to_numpy()[rows] == np.arange(n)).all()
        for layer in [x for x in acts.layers if x < 4]:  # hidden_states[4] has the final norm applied
            np.testing.assert_allclose(acts.layer(layer)[rows], hs[layer][0, -n:].numpy(), rtol=1e-4, atol=1e-4)
        # the offsets point into the chain's text
        t = tokens.iloc[rows]
        assert "".join(row["text"][a:b] for a, b in zip(t["start"], t["end"])) == row["text"]


def test_labels_cover_exactly_the_backtracking_sentences(tiny_run):
    _, chains, acts, labels = tiny_run
    tokens = acts.tokens
    text = chains.set_index("chain_id")["text"]
    chars = np.array([text[c][a:b] for c, a, b in zip(tokens["chain_id"], tokens["start"], tokens["end"])])
    # every capital letter is inside a backtracking sentence, no lowercase letter is
    assert labels[np.char.isupper(chars)].all()
    assert not labels[np.char.islower(chars)].any()
    per_chain = pd.Series(labels).groupby(tokens["chain_id"].to_numpy()).sum()
    assert ((per_chain > 0) == chains.set_index("chain_id")["text"].str.contains("WAIT|HMM")).all()


def test_probes_and_baselines_on_the_smoke_model(tiny_run):
    _, chains, acts, labels = tiny_run
    split_of = LP.chain_split(chains["chain_id"], (0.5, 0.25, 0.25), seed=0)
    table, fits = LP.lag_sweep(acts, labels, split_of, [-4, 0, 4], Cs=(0.1, 1.0), n_boot=100, progress=False)
    assert set(table["probe"]) == {"layer 1", "layer 2", "layer 4", "token identity", "position"}
    assert len(table) == 5 * 3 and table["auroc"].notna().all()
    assert ((table["auroc_low"] <= table["auroc"]) & (table["auroc"] <= table["auroc_high"])).all()
    # capitals mark the backtracking sentences: the current token separates them at lag 0
    at0 = table[table["lag"] == 0].set_index("probe")
    assert at0.loc["token identity", "auroc"] > 0.9
    assert at0.loc["layer 1", "auroc"] > 0.8
    # the test scores come from test chains only, and shift by the lag inside each chain
    test_chains = {c for c, s in split_of.items() if s == "test"}
    fit = fits[("layer 2", 4)]
    tokens = acts.tokens
    assert set(tokens["chain_id"].to_numpy()[fit.test_rows]) <= test_chains
    assert (tokens["pos"].to_numpy()[fit.test_rows] + 4 < tokens["n_tokens"].to_numpy()[fit.test_rows]).all()
    assert fit.row["n_test"] == len(fit.test_rows) == len(fit.test_score)
    # the lag -4 pairs' labels are the labels 4 tokens back
    n_lab = int(labels[fit.test_rows + 4].sum())
    assert fit.row["pos_test"] == n_lab


def test_chapter_08_runs_on_the_smoke_profile(tmp_path, monkeypatch):
    """papermill runs chapter 8 on the smoke profile with chains the tiny model writes (the
    generated path): chains, labels, activations, probes, the LLM annotator's code path; its figures and tables are in the executed notebook (the whole
    smoke book, rendered, is tests/test_book.py)."""
    import json

    from pika_utils.book import runner as book

    monkeypatch.setenv("PIKA_DATA_DIR", str(tmp_path / "runs"))
    book.stage_book(tmp_path)
    timings = book.execute_chapters("smoke", chapters=["08_backtracking"], root=tmp_path, progress=False,
                                    overrides={"bt_chains": "generated"})  # the book's smoke run reads recorded chains
    assert set(timings) == {"08_backtracking"}
    nb = json.loads((tmp_path / "book" / "chapters" / "08_backtracking.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    data = [o.get("data", {}) for o in outputs]
    assert sum("image/png" in d for d in data) >= 3  # heatmaps, curves, an example chain
    assert sum("text/html" in d for d in data) >= 3  # events, results, seed comparison
    text = json.dumps(data)
    assert "Smoke profile" in text and "kappa" in text
    assert "Too few events for a verdict" in text  # a random model writes no backtracking


def test_recorded_windows_keep_labels_of_sentences_begun_before_them():
    """A window of a recorded chain: its text is the chain's own characters, and a backtracking
    sentence that starts before the window is still labelled inside it (the whole chain is
    annotated, then clipped)."""
    from pika_utils.backtracking import labels as BL
    from pika_utils.backtracking import recorded as BR
    from pika_utils.models.registry import load_model

    lm = load_model("tiny-random-llama", source="offline")  # byte-level: one token per character
    w = BR.recorded_windows(lm.tokenizer, 20, 120, 30, seed=0)
    assert len(w) == 20 and w["chain_id"].is_unique
    for r in w.itertuples():
        assert r.full_text[r.offset:r.offset + len(r.text)] == r.text
        assert r.prefix.endswith(r.full_text[max(0, r.offset - 30):r.offset])
    again = BR.recorded_windows(lm.tokenizer, 20, 120, 30, seed=0)
    assert again["chain_id"].tolist() == w["chain_id"].tolist()  # seeded
    text = "We add the numbers. Wait, that is wrong because the sum is odd. So we redo it. The answer is 4."
    whole = [s for s in BL.annotate(text) if s.backtracking]
    assert len(whole) == 1
    inside = whole[0].start + 10  # the window opens mid-sentence, after the cue word
    clipped = BR.window_sentences(text, inside, 45)
    assert [s.backtracking for s in clipped] == [True, False]
    assert clipped[0].start == 0 and clipped[0].text == text[inside:whole[0].end]


def test_paired_difference_of_lag_fits_is_paired_by_chain(tiny_run):
    _, chains, acts, labels = tiny_run
    split_of = LP.chain_split(chains["chain_id"], (0.5, 0.25, 0.25), seed=0)
    _, fits = LP.lag_sweep(acts, labels, split_of, [0, 4], Cs=(1.0,), n_boot=50, progress=False)
    a, b = fits[("layer 1", 0)], fits[("token identity", 0)]
    d, lo, hi = LP.paired_difference(a, 0, b, 0, labels, acts.tokens, n_boot=300, seed=0)
    assert d == pytest.approx(LP.auroc(labels[a.test_rows], a.test_score) - LP.auroc(labels[b.test_rows], b.test_score))
    assert lo <= d <= hi
    same = LP.paired_difference(a, 0, a, 0, labels, acts.tokens, n_boot=100, seed=0)
    assert same == (0.0, 0.0, 0.0)  # the same draws for both sides: no spread at all
    c = fits[("layer 1", 4)]
    d4 = LP.paired_difference(a, 0, c, 4, labels, acts.tokens, n_boot=100, seed=0)[0]
    assert d4 == pytest.approx(LP.auroc(labels[a.test_rows], a.test_score) - LP.auroc(labels[c.test_rows + 4], c.test_score))


def test_thinning_keeps_every_positive_training_pair(tiny_run):
    _, chains, acts, labels = tiny_run
    split_of = LP.chain_split(chains["chain_id"], (0.5, 0.25, 0.25), seed=0)
    split = acts.tokens["chain_id"].map(split_of).to_numpy()
    full = LP.fit_lag(acts.layer(1), labels, acts.tokens, split, 0, Cs=(1.0,), n_boot=20)
    thin = LP.fit_lag(acts.layer(1), labels, acts.tokens, split, 0, Cs=(1.0,), n_boot=20, max_train_tokens=400)
    assert thin.row["n_train"] == full.row["n_train"]  # the row reports the split, thinned or not
    train = (split == "train")
    kept = LP._thin_train(train, labels, 400, 0)
    assert kept.sum() == 400 and labels[kept].sum() == labels[train].sum()
    assert thin.row["n_test"] == full.row["n_test"] and np.isfinite(thin.row["auroc"])


def test_weighted_metrics_equal_the_plain_metrics_on_the_resampled_tokens():
    """Several draws at once, with tied scores: each draw's AUROC and F1 are those of the table in
    which every chain's tokens appear as often as the draw counts it."""
    rng = np.random.default_rng(3)
    chain = rng.integers(0, 12, 400)
    y = (rng.random(400) < 0.2).astype(int)
    s = np.round(rng.normal(size=400) + y, 1)  # rounding makes ties, across chains too
    counts = rng.integers(0, 3, (6, 12))
    auc, f1 = LP.weighted_metrics(y, s, chain, counts, 0.3)
    for b in range(6):
        rows = np.concatenate([np.flatnonzero(chain == c) for c in range(12) for _ in range(counts[b, c])])
        assert auc[b] == pytest.approx(LP.auroc(y[rows], s[rows]))
        assert f1[b] == pytest.approx(LP.f1_at(y[rows], s[rows], 0.3))
