"""The book's first page, as the runner writes it: the account of the runs (``run_summary.md``: each
executed page's date, wall time and peak memory, from its own metadata) and the findings
(``findings.md``: the verdict counts and the headline results), both included by the intro."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..core import store
from ..core.cpu import cpu_name

REPO_ROOT = store.REPO_ROOT


def chapter_records(root: Path) -> list[dict[str, Any]]:
    """What each executed page of the book at ``root`` says about its own run (its metadata): the
    chapter, the profile, when it ran, its wall time and peak memory, in the order of ``_toc.yml``."""
    from .runner import toc_chapters

    rows = []
    for name in toc_chapters(root if (Path(root) / "_toc.yml").exists() else REPO_ROOT):
        nb = Path(root) / "book" / "chapters" / f"{name}.ipynb"
        if not nb.exists():
            continue
        meta = json.loads(nb.read_text()).get("metadata", {}).get("pika", {})
        rows.append({"chapter": name, "profile": (meta.get("parameters") or {}).get("profile"),
                     "executed": meta.get("executed"), "wall_s": meta.get("wall_s"),
                     "peak_rss_gb": meta.get("peak_rss_gb")})
    return rows


def write_run_summary(root: Path, profile: str | Path | Mapping[str, Any], timings: Mapping[str, float],
                      total_s: float) -> Path:
    """The first page's account of the book's runs (``book/run_summary.md``, included by the
    intro): one row per executed page, read from the page's own metadata, so a partial run
    (``--chapters``) updates its chapters' rows and keeps the others' with the date they ran."""
    name = profile.get("profile", "custom") if isinstance(profile, Mapping) else str(profile)
    records = chapter_records(root) or [{"chapter": n, "profile": name, "executed": store.now_iso(), "wall_s": s,
                                         "peak_rss_gb": None} for n, s in timings.items()]
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = "\n".join(f"| {r['chapter']} | {r['executed'] or '-'}{' (this run)' if r['chapter'] in timings else ''} | "
                     f"{cell(r['wall_s'], '.0f')} | {cell(r['peak_rss_gb'], '.1f')} |" for r in records)
    walls = [r["wall_s"] for r in records if r["wall_s"] is not None]
    peaks = [r["peak_rss_gb"] for r in records if r["peak_rss_gb"] is not None]
    partial = set(timings) != {r["chapter"] for r in records}
    text = (f"This book was built with the **{name}** profile on this machine ({os.cpu_count()} cores, "
            f"{cpu_name()}): its chapters ran in **{sum(walls) / 60:.1f} minutes** of "
            f"wall time" + (f", the largest at **{max(peaks):.1f} GB** of resident memory" if peaks else "")
            + (f". The last run executed {len(timings)} of them in {total_s / 60:.1f} minutes; the other rows are "
               "from earlier runs" if partial else "") + ".\n\n"
            f"| chapter | executed | wall time (s) | peak memory (GB) |\n|---|---|---|---|\n{rows}\n")
    path = Path(root) / "book" / "run_summary.md"
    store.atomic_write_bytes(path, text.encode())
    return path


#: The claims the first page shows first when this run recorded them (the book's main questions:
#: probes against the words, human difficulty, routing models you cannot run, reasoning and
#: predictability, anticipating backtracking) and whether the kept Router holds off its training benchmark.
HEADLINES = ("c3-all-maj_correct-vs-tfidf", "c4-human-decodable", "c6-recorded-beats-best", "c6-offdist-router-vs-best",
             "c7-recorded-reader", "c8-lag8-beats-token")
FINDINGS_PAGE = Path("book") / "findings.md"


def write_findings(root: Path, profile_name: str, chapters: Sequence[str] | None = None) -> Path:
    """The first page's findings, read from the saved verdicts (of ``chapters``, those whose
    executed pages the book holds, e.g. '06_utility_router'): how many claims were reproduced, not reproduced or
    left undecided, and the headline results with their intervals, each linked to its chapter
    (``book/findings.md``, included by the intro)."""
    from . import verdicts

    table, dropped = verdicts.table(profile_name), verdicts.dropped(profile_name)
    if chapters is not None:
        ran = {str(c)[:2] for c in chapters}
        table = table[table["chapter"].astype(str).isin(ran)]
        dropped = dropped[dropped["chapter"].astype(str).isin(ran)]
    path = Path(root) / FINDINGS_PAGE
    if table.empty:
        return store.atomic_write_bytes(path, b"This run recorded no verdict (see the verdicts chapter).\n")
    counts = table["verdict"].value_counts()
    names = {p.stem[:2]: p.stem for p in (Path(root) / "book" / "chapters").glob("*.ipynb")}
    lines = [f"Of **{len(table)} claims** this **{profile_name}** run tested, **{counts.get('reproduced', 0)} were "
             f"reproduced**, **{counts.get('real but small', 0)} real but smaller than the effect that matters**, "
             f"**{counts.get('not reproduced', 0)} were not** and **{counts.get('undecided', 0)} stay "
             f"undecided** at this scale" + (f" ({len(dropped)} more could not be tested, each with its reason)"
                                             if len(dropped) else "") + ". Headline results (95% intervals):", ""]
    by_id = table.set_index("claim_id") if "claim_id" in table else table.set_index("claim")
    for cid in [c for c in HEADLINES if c in by_id.index]:
        r = by_id.loc[cid]
        ch = str(r["chapter"])
        link = f"{{doc}}`chapter {int(ch)} <chapters/{names[ch]}>`" if ch in names else f"chapter {int(ch)}"
        n = "" if pd.isna(r["n"]) else f", n = {int(r['n'])}"
        lines.append(f"- **{r['verdict']}**: {r['claim']}. {r['quantity']}: {r['estimate']:.3f} "
                     f"[{r['low']:.3f}, {r['high']:.3f}]{n} ({link}).")
    return store.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
