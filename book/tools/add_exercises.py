"""Append each chapter's provenance note and exercises (sphinx-exercise directives) to the end of
its notebook. Run once; re-running replaces the cells it added (they carry metadata pika=...)."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def md(src, tag):
    return {"cell_type": "markdown", "metadata": {"pika": tag}, "source": src}


def code(src, tag, tags=()):
    return {"cell_type": "code", "execution_count": None, "metadata": {"pika": tag, "tags": list(tags)},
            "outputs": [], "source": src}


PROVENANCE = ("from pika_utils import provenance\n"
              "display(provenance.note(problems if 'problems' in globals() else None))")


def exercise(label, title, text, solution_intro, solution_code):
    return [
        md(f":::{{exercise}} {title}\n:label: {label}\n\n{text}\n:::", "exercise"),
        md(f":::{{solution-start}} {label}\n:class: dropdown\n:::\n\n{solution_intro}", "exercise"),
        code(solution_code, "exercise"),
        md(":::{solution-end}\n:::", "exercise"),
    ]


EXERCISES = {
    "01_rollouts": [
        ("ex-rollouts-k1", "One sample against all K",
         "The success rate of a problem is the mean over $K$ samples. Compute it from the **first "
         "sample only** ($K=1$) and compare it with the $K$-sample rate: how often does the one-sample "
         "label (0 or 1) disagree with the majority vote? What does that say about training a probe on "
         "$K=1$ labels?",
         "Keep each problem's first sample and compare its grade with the majority vote over all $K$.",
         "first = rollouts[rollouts[\"sample\"] == 0].set_index([\"model\", \"problem_id\"])[\"correct\"]\n"
         "vote = summary.set_index([\"model\", \"problem_id\"])[\"maj_correct\"].astype(bool)\n"
         "disagree = (first != vote.reindex(first.index)).groupby(\"model\").mean()\n"
         "disagree.rename(\"K=1 label disagrees with the majority vote\").to_frame().round(3)"),
        ("ex-rollouts-tokens", "Where do the tokens go?",
         "Which source costs each model the most output tokens per problem, and is it the one it fails "
         "most? Group `summary` by model and source.",
         "Mean output tokens and success rate per model and source, side by side.",
         "summary.groupby([\"model\", \"source\"])[[\"mean_output_tokens\", \"success_rate\"]].mean().round(3)"),
    ],
    "02_activations": [
        ("ex-activations-source", "Which problems look alike inside?",
         "Take the last end-of-instruction token at the middle layer and compute, for each source, the mean "
         "cosine similarity between its problems' activations and those of every other source. Do the "
         "activations already separate the sources before a word is written?",
         "Normalise the rows, average the cosine similarities within and across sources.",
         "m = models[0]\n"
         "lm, acts = extracted[m]\n"
         "mid = acts.layers[len(acts.layers) // 2]\n"
         "X = acts.layer(mid, -1)\n"
         "X = X / np.linalg.norm(X, axis=1, keepdims=True)\n"
         "src = problems.set_index(\"problem_id\").loc[acts.problem_ids, \"source\"].to_numpy()\n"
         "S = X @ X.T\n"
         "names = sorted(set(src))\n"
         "pd.DataFrame([[S[np.ix_(src == a, src == b)].mean() for b in names] for a in names], index=names, columns=names).round(3)"),
        ("ex-activations-positions", "Do the end-of-instruction tokens say the same thing?",
         "The probes choose one of the end-of-instruction positions. How alike are the positions? For a few "
         "layers, compute the mean cosine similarity between each position's activation and the last "
         "token's, problem by problem. Where do they agree, and where would the choice of position matter?",
         "Normalise each position's rows and average the row-wise dot products with position -1.",
         "m = models[0]\n"
         "lm, acts = extracted[m]\n"
         "def unit(X):\n"
         "    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)\n"
         "rows = []\n"
         "for layer in acts.layers[::max(1, len(acts.layers) // 6)]:\n"
         "    last = unit(acts.layer(layer, -1))\n"
         "    for pos in acts.meta[\"positions\"][:-1]:\n"
         "        rows.append({\"layer\": layer, \"position\": pos, \"cosine\": float((unit(acts.layer(layer, pos)) * last).sum(1).mean())})\n"
         "pd.DataFrame(rows).pivot(index=\"layer\", columns=\"position\", values=\"cosine\").round(2)"),
    ],
    "06_utility_router": [
        ("ex-utility-lambda", "The price of caution",
         "Sweep lambda from 0 to 1 on the test split and find the smallest lambda at which the router "
         "sends no problem to the most expensive member. What accuracy does it keep there?",
         "Read the share of the most expensive member along the sweep.",
         "last = pool.members[-1]\n"
         "s = sweep[sweep[f\"share:{last}\"] == 0].sort_values(\"lam\")\n"
         "s[[\"lam\", \"accuracy\", \"cost\", \"cost_with_routing\"]].head(1).round(4) if len(s) else \"every lambda still uses it\""),
        ("ex-utility-random", "Is the probe doing the work?",
         "Replace every member's probability by a random number (seeded) and sweep lambda again. How far "
         "below the probe router's frontier does it fall?",
         "Shuffle the probabilities within each member and rerun the sweep.",
         "rng = np.random.default_rng(seed)\n"
         "shuffled = pool.probs.assign(p=pool.probs.groupby(\"member\")[\"p\"].transform(lambda p: rng.permutation(p.to_numpy())))\n"
         "noise = R.utility_sweep(shuffled, pool.outcomes, split=\"test\")\n"
         "pd.DataFrame({\"router\": [\"probe\", \"shuffled probe\"], \"best accuracy\": [sweep[\"accuracy\"].max(), noise[\"accuracy\"].max()]}).round(3)"),
    ],
    "07_reasoning_budget": [
        ("ex-budget-tokens", "Does thinking longer mean hitting the budget?",
         "For each budget, what share of rollouts used the whole budget, and were those more or less often "
         "correct than the ones that stopped early?",
         "Group the rollouts by budget and whether the budget was hit.",
         "rows = []\n"
         "for m in budget_models:\n"
         "    for b, r in runs[m].items():\n"
         "        g = r.rollouts.groupby(\"budget_hit\")[\"correct\"].agg([\"size\", \"mean\"])\n"
         "        rows += [{\"model\": m, \"budget\": b, \"budget hit\": bool(k), \"rollouts\": int(v[\"size\"]), \"accuracy\": v[\"mean\"]} for k, v in g.iterrows()]\n"
         "pd.DataFrame(rows).round(3)"),
        ("ex-budget-gain", "Which problems does thinking help?",
         "Compare each problem's success rate at the smallest and the largest budget. How many problems "
         "gain, how many lose and how many stay the same? With $K$ samples per problem, how much of that "
         "could sampling noise alone produce?",
         "Join the two budgets' per-problem success rates and count the signs of the difference.",
         "rows = []\n"
         "for m in budget_models:\n"
         "    lo, hi = min(runs[m]), max(runs[m])\n"
         "    a = runs[m][lo].summary.set_index(\"problem_id\")[\"success_rate\"]\n"
         "    b = runs[m][hi].summary.set_index(\"problem_id\")[\"success_rate\"]\n"
         "    d = (b - a.reindex(b.index)).dropna()\n"
         "    rows.append({\"model\": m, \"budgets\": f\"{lo} -> {hi}\", \"gain\": int((d > 0).sum()),\n"
         "                 \"same\": int((d == 0).sum()), \"loss\": int((d < 0).sum())})\n"
         "pd.DataFrame(rows)"),
    ],
    "08_backtracking": [
        ("ex-bt-onset", "The onset or the whole passage?",
         "The labels mark every token of a backtracking sentence. Label only each sentence's first token "
         "(its *onset*) and fit the probes again at lag 0 and lag +8 on the best layer. Is the signal "
         "about the onset, or about being inside a long backtracking passage?",
         "A token is an onset when it is labelled and the token before it, in the same chain, is not.",
         "cid = tok[\"chain_id\"].to_numpy()\n"
         "same_chain = np.r_[False, cid[1:] == cid[:-1]]\n"
         "prev = np.r_[0, labels[:-1]] * same_chain\n"
         "onset = ((labels == 1) & (prev == 0)).astype(np.int8)\n"
         "rows = []\n"
         "for name, y in ((\"every token of the sentence\", labels), (\"onset token only\", onset)):\n"
         "    t, _ = LP.lag_sweep(acts, y, split_of, [0, 8], Cs=bt_Cs, n_boot=200, seed=seed, baselines=False, progress=False)\n"
         "    t = t[t[\"layer\"] == best_layer]\n"
         "    rows += [{\"labels\": name, \"positives\": int(y.sum()), \"lag\": int(r.lag), \"test AUROC\": r.auroc} for r in t.itertuples()]\n"
         "pd.DataFrame(rows).round(3)"),
        ("ex-bt-fixed-c", "What does choosing C buy?",
         "Each probe picks its regularisation C on validation. Fix C = 1 for every layer and compare the "
         "test AUROC at the shortest and the longest lag with the chosen-C probes above.",
         "One sweep with a single C, merged with the chapter's table.",
         "lags = [min(bt_lags, key=abs), max(bt_lags)]\n"
         "fixed, _ = LP.lag_sweep(acts, labels, split_of, lags, Cs=[1.0], n_boot=200, seed=seed, baselines=False, progress=False)\n"
         "chosen = probes[probes[\"lag\"].isin(lags)][[\"layer\", \"lag\", \"auroc\", \"C\"]]\n"
         "fixed[[\"layer\", \"lag\", \"auroc\"]].merge(chosen, on=[\"layer\", \"lag\"], suffixes=(\" (C = 1)\", \" (C chosen)\")).round(3)"),
    ],
    "09_recoverability": [
        ("ex-recover-fallback", "How often does the rule fall back?",
         "The rule takes the intervention of the largest z-score, and the random-position sparse steer when "
         "every z-score is at most 0. How many problems get each pick, how many fall back, and how often "
         "does each pick rescue compared with a retry of the same problems?",
         "Group the results table by the rule's pick.",
         "if len(df):\n"
         "    z = df[[f\"z_{f}\" for f in rf.FEATURES]]\n"
         "    show = df.assign(fallback=(z <= 0).all(axis=1)).groupby(\"rule\").agg(\n"
         "        problems=(\"rule\", \"size\"), fallback=(\"fallback\", \"sum\"),\n"
         "        rescued_by_pick=(\"rescue_rule\", \"mean\"), rescued_by_retry=(\"rescue_retry\", \"mean\"))\n"
         "else:\n"
         "    show = \"no failed problems in this run\"\n"
         "show"),
        ("ex-recover-success", "A rule from the success rate alone",
         "A simpler router needs no log-probabilities: retry the problems chapter 1 sometimes solved "
         "(success rate above 0) and apply the best single intervention to the rest. How does it compare "
         "with the feature rule and with always-retry?",
         "Pick per problem from its success rate and read the rescue column of that pick.",
         "if len(df):\n"
         "    best = df.attrs.get(\"best_single\", \"dense_steer\")\n"
         "    pick = np.where(df[\"success_rate\"] > 0, \"retry\", best)\n"
         "    by_rate = np.mean([bool(df.loc[i, f\"rescue_{p}\"]) for i, p in zip(df.index, pick)])\n"
         "    show = pd.DataFrame({\"router\": [\"feature rule\", \"success rate alone\", \"always retry\"],\n"
         "                         \"rescued\": [df[\"rescue_rule\"].mean(), by_rate, df[\"rescue_retry\"].mean()]}).round(3)\n"
         "else:\n"
         "    show = \"no failed problems in this run\"\n"
         "show"),
    ],
    "10_code": [
        ("ex-code-truncation", "The logic or the token limit?",
         "Programs cut at `code_max_new_tokens` cannot pass. Split each model's problems by whether most of "
         "their rollouts were truncated and compare success rates. Then raise `code_max_new_tokens` and "
         "rerun: how much of the failure was the limit?",
         "Group the summary by model and by a truncation flag.",
         "summary.assign(mostly_truncated=summary[\"truncated_rate\"] >= 0.5).groupby([\"model\", \"mostly_truncated\"])[\"success_rate\"].agg([\"size\", \"mean\"]).round(3)"),
        ("ex-code-sandbox", "Try to break out",
         "Write programs the sandbox should refuse: open a network connection, start a shell, allocate far "
         "more memory than the limit. Which ones are stopped, and by which layer (limits, namespace, audit "
         "hook)?",
         "Run each attempt through `sandbox.run_program` and read its status and detail.",
         "attempts = {\n"
         "    \"open a socket\": \"import socket\\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\",\n"
         "    \"start a shell\": \"import subprocess\\nsubprocess.run(['sh', '-c', 'echo hi'])\",\n"
         "    \"allocate 8 GB\": \"x = bytearray(8 * 1024 ** 3)\",\n"
         "    \"read the home folder\": \"import os\\nprint(os.listdir(os.path.expanduser('~')))\",\n"
         "}\n"
         "results = {k: sandbox.run_program(v) for k, v in attempts.items()}\n"
         "pd.DataFrame([{\"attempt\": k, \"status\": r.status, \"detail\": r.detail[:90]} for k, r in results.items()])"),
    ],
    "03_probes": [
        ("ex-probes-shuffled", "A probe on shuffled labels",
         "A probe can look good by chance on a small test split. Shuffle one target's labels (seeded), "
         "fit the same probe and compare its test score with the real one. A real signal should vanish.",
         "Permute the labels within the table, keep the splits, and fit again with the same settings.",
         "rows = []\n"
         "for (m, t), reps in list(reports.items())[:2]:\n"
         "    shuffled = labels[m].copy()\n"
         "    shuffled[t] = np.random.default_rng(seed).permutation(shuffled[t].to_numpy())\n"
         "    try:\n"
         "        ctrl = P.eoi_probe(acts[m], shuffled, t, model=m, **kw)\n"
         "    except ValueError as e:  # e.g. a single class on a split\n"
         "        rows.append({\"model\": m, \"target\": t, \"real\": reps[0].metrics[\"test\"], \"shuffled\": None, \"note\": str(e)[:60]})\n"
         "        continue\n"
         "    rows.append({\"model\": m, \"target\": t, \"real\": reps[0].metrics[\"test\"], \"shuffled\": ctrl.metrics[\"test\"], \"note\": \"\"})\n"
         "pd.DataFrame(rows).round(3)"),
        ("ex-probes-layer", "One layer for all",
         "The probe picks its layer on validation. Fix the layer to the middle of the network instead "
         "and compare the test score: how much does choosing the layer buy?",
         "Refit at the middle layer only (one entry in `layers`).",
         "rows = []\n"
         "for (m, t), reps in list(reports.items())[:2]:\n"
         "    mid = acts[m].layers[len(acts[m].layers) // 2]\n"
         "    lab = labels[m].dropna(subset=[t]).reset_index(drop=True)  # e.g. difficulty: only where there is one\n"
         "    fixed = P.eoi_probe(acts[m], lab, t, model=m, layers=[mid], **kw)\n"
         "    rows.append({\"model\": m, \"target\": t, \"chosen layer\": reps[0].best[\"layer\"], \"test (chosen)\": reps[0].metrics[\"test\"],\n"
         "                 \"middle layer\": mid, \"test (middle)\": fixed.metrics[\"test\"]})\n"
         "pd.DataFrame(rows).round(3)"),
    ],
    "05_cascade": [
        ("ex-cascade-test", "Choosing the threshold on test",
         "The chapter picks the cascade's threshold on **validation**. Pick it on **test** instead and "
         "report the test accuracy and cost: how much better does it look, and why is that number not "
         "one to publish?",
         "Sweep on test, pick with the same rule, and compare with the validation-chosen row of `ops`.",
         "members = cascades[\"2 members\"]\n"
         "on_test = R.cascade_sweep(pool.probs, pool.outcomes, grid, order=members, prefill_cost=pool.prefill, split=\"test\")\n"
         "cheat = M.cost_reduction_at_best_accuracy(on_test, M.single_members(pool.outcomes, split=\"test\"))\n"
         "if not np.isfinite(cheat.get(\"accuracy\", np.nan)):\n"
         "    cheat = on_test.sort_values([\"accuracy\", \"cost\"], ascending=[False, True]).iloc[0]\n"
         "honest = ops[ops[\"router\"] == \"2 members\"].iloc[0]\n"
         "pd.DataFrame({\"chosen on val (honest)\": honest[[\"accuracy\", \"cost\"]], \"chosen on test (optimistic)\": pd.Series(cheat)[[\"accuracy\", \"cost\"]]}).T"),
        ("ex-cascade-coarse", "A coarser grid",
         "With only three thresholds (0, 0.5, 1), how close does the validation-chosen cascade come to "
         "the fine grid's?",
         "Sweep on validation with three thresholds and replay the pick on test.",
         "coarse = R.cascade_sweep(pool.probs, pool.outcomes, np.array([0.0, 0.5, 1.0]), order=cascades[\"2 members\"],\n"
         "                         prefill_cost=pool.prefill, split=\"val\")\n"
         "coarse.round(4)"),
    ],
}


def main(names):
    for name in names:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = json.loads(path.read_text())
        nb["cells"] = [c for c in nb["cells"] if c.get("metadata", {}).get("pika") not in ("exercise", "provenance")]
        nb["cells"].append(code(PROVENANCE, "provenance", ["remove-input"]))
        if EXERCISES.get(name):
            nb["cells"].append(md("## Exercises", "exercise"))
            for ex in EXERCISES[name]:
                nb["cells"].extend(exercise(*ex))
        for i, c in enumerate(nb["cells"]):
            c.setdefault("id", f"pika-{c['metadata'].get('pika', 'cell')}-{i}")
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print(f"{path}: {len(EXERCISES.get(name, []))} exercise(s)")


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(p.stem for p in (ROOT / "notebooks").glob("0*.ipynb")))
