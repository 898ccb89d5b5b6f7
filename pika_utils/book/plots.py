"""One figure style for the whole book: seaborn's whitegrid, one palette keyed by model, figure
sizes that read well in Jupyter Book's column."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.metrics import pass_at_k

WIDTH = 7.0


def set_style() -> None:
    """Apply the book's style; every notebook calls this once."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold",
                         "figure.figsize": (WIDTH, 3.8)})


def model_palette(models: Sequence[str]) -> dict[str, tuple]:
    """The same colour for the same model in every figure."""
    colours = sns.color_palette("colorblind", n_colors=max(len(models), 3))
    return {m: colours[i] for i, m in enumerate(sorted(models))}


def success_by_difficulty(summary: pd.DataFrame, ax=None):
    """Mean success rate by designed difficulty level, one line per model, with 95% CIs."""
    data = summary.dropna(subset=["difficulty"])
    ax = ax or plt.subplots()[1]
    sns.pointplot(data=data, x="difficulty", y="success_rate", hue="model",
                  palette=model_palette(data["model"].unique()), errorbar=("ci", 95),
                  dodge=0.3 if data["model"].nunique() > 1 else False, ax=ax)
    ax.set(xlabel="difficulty level", ylabel="success rate", ylim=(-0.02, 1.02),
           title="Success rate by difficulty level")
    return ax


def success_distribution(summary: pd.DataFrame):
    """Histogram of per-problem success rates: the spread the probes need to learn from."""
    g = sns.displot(data=summary, x="success_rate", hue="model", col="source", multiple="dodge",
                    bins=np.linspace(0, 1, 11), palette=model_palette(summary["model"].unique()),
                    height=2.8, aspect=1.0, facet_kws={"sharey": False})
    g.set_axis_labels("success rate over K samples", "problems")
    return g


def pass_at_k_curves(summary: pd.DataFrame, ax=None):
    """Mean unbiased pass@k against k (log scale), one line per model and source."""
    rows = []
    for (model, source), g in summary.groupby(["model", "source"]):
        n = int(g["k"].iloc[0])
        for k in range(1, n + 1):
            rows.append({"model": model, "source": source, "k": k,
                         "pass@k": float(np.mean([pass_at_k(n, c, k) for c in g["n_correct"]]))})
    df = pd.DataFrame(rows)
    ax = ax or plt.subplots()[1]
    sns.lineplot(data=df, x="k", y="pass@k", hue="model", style="source", markers=True,
                 palette=model_palette(df["model"].unique()), ax=ax)
    ax.set(xscale="log", ylim=(-0.02, 1.02), title="pass@k")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
    return ax


def cost_bars(summary: pd.DataFrame, ax=None):
    """Mean dollar cost per rollout and per problem (K rollouts), by model."""
    df = summary.assign(cost_per_problem=summary["cost_per_rollout"] * summary["k"])
    ax = ax or plt.subplots()[1]
    sns.barplot(data=df, x="model", y="cost_per_problem", hue="model",
                palette=model_palette(df["model"].unique()), errorbar=None, ax=ax)
    ax.set(ylabel="$ per problem (K rollouts)", xlabel="", title="Cost per problem")
    return ax


def layer_curves(curves: pd.DataFrame, baselines: pd.DataFrame | None = None):
    """Best validation score per layer (over alpha and EOI position), one panel per target and
    a line per model; surface baselines as dashed horizontal lines."""
    g = sns.relplot(data=curves, x="layer", y="val_score", hue="model", col="target", kind="line",
                    marker="o", markersize=3, palette=model_palette(curves["model"].unique()),
                    facet_kws={"sharex": False, "sharey": False}, height=3.2, aspect=1.25)
    if baselines is not None:
        pal = model_palette(curves["model"].unique())
        for target, ax in g.axes_dict.items():
            for row in baselines[baselines["target"] == target].itertuples():
                ax.axhline(row.val_score, ls="--" if row.method == "tfidf" else ":", lw=1, color=pal.get(row.model))
    g.set_axis_labels("layer (0 = embeddings)", "validation score")
    return g


def reliability_diagram(y, probs: dict[str, np.ndarray], n_bins: int = 10, ax=None):
    """Observed frequency against predicted probability per bin, for each set of probabilities."""
    ax = ax or plt.subplots(figsize=(4.2, 4.0))[1]
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    y = np.asarray(y, dtype=float)
    for name, p in probs.items():
        p = np.asarray(p, dtype=float)
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        xs = [p[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ys = [y[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency")
    ax.legend(fontsize="small")
    return ax


def metric_with_intervals(table: pd.DataFrame, x: str = "test", y: str = "method", hue: str = "model", ax=None):
    """Point estimates with 95% bootstrap intervals as horizontal error bars."""
    ax = ax or plt.subplots(figsize=(WIDTH, 0.5 + 0.35 * len(table)))[1]
    labels = [f"{r[hue]} | {r[y]}" for _, r in table.iterrows()]
    pos = np.arange(len(table))
    pal = model_palette(table[hue].unique())
    ax.errorbar(table[x], pos, xerr=[table[x] - table["ci_low"], table["ci_high"] - table[x]], fmt="none",
                ecolor="grey", capsize=3)
    ax.scatter(table[x], pos, c=[pal[m] for m in table[hue]], zorder=3)
    ax.set_yticks(pos, labels)
    ax.invert_yaxis()
    return ax


def _sparse_log_ticks(axis, n: int = 4) -> None:
    """At most ``n`` labelled ticks on a log axis, in plain notation: a cost range that spans less
    than a decade otherwise gets a crowded label at every minor tick."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=n))
    fmt = ScalarFormatter(useMathText=True)
    fmt.set_powerlimits((-2, 3))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(NullFormatter())


def pareto(ax, sweep: pd.DataFrame, singles: pd.DataFrame, *, cost: str = "cost", oracle: dict | None = None,
           random: pd.DataFrame | None = None, extra: dict[str, pd.DataFrame] | None = None, label: str = "probe router"):
    """Cost against accuracy: the router's sweep (points and its non-decreasing frontier),
    every single member, random routing matched to the router's mix, and the oracle."""
    from ..routing.evaluation import frontier

    pal = model_palette(singles["member"].tolist())
    ax.scatter(sweep[cost], sweep["accuracy"], s=10, alpha=0.35, color="C0")
    f = frontier(sweep, cost=cost)
    ax.step(f[cost], f["accuracy"], where="post", color="C0", label=label)
    for name, df in (extra or {}).items():
        fe = frontier(df, cost=cost)
        ax.step(fe[cost], fe["accuracy"], where="post", ls="--", lw=1, label=name)
    if random is not None and len(random):
        ax.scatter(random[cost], random["accuracy"], marker="x", s=14, color="grey", alpha=0.6, label="random (same mix)")
    for row in singles.itertuples():
        ax.scatter(getattr(row, cost), row.accuracy, s=60, marker="s", color=pal[row.member], edgecolor="k", zorder=4)
        ax.annotate(row.member, (getattr(row, cost), row.accuracy), fontsize=7, xytext=(4, -10), textcoords="offset points")
    if oracle is not None:
        ax.scatter(oracle[cost], oracle["accuracy"], marker="*", s=140, color="gold", edgecolor="k", zorder=5, label="oracle")
    ax.set(xscale="log", xlabel="mean $ per problem" + (" (with routing cost)" if cost != "cost" else ""),
           ylabel="accuracy")
    _sparse_log_ticks(ax.xaxis)
    ax.legend(fontsize="x-small", loc="lower right")
    return ax
