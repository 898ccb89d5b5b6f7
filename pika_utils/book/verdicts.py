"""The book's verdicts: each chapter records the paper's claims it tests (our estimate with its 95%
interval, the number of problems or events it rests on, what it is compared with, how its choices
were made, and the rule that decides it), and the closing chapter reads them back into one table.
A verdict is computed from the interval, never written by hand, and so is every sentence that
states one (``sentence``).

One rule, stated here and shown on the verdict page (``rules_markdown``). Each *part* of a claim
(the claim itself and each of its conditions) is read on its own scale, oriented so that the
paper's side is positive, and asked three questions whose "yes" survives any narrowing of the
interval: is it *there* (the low end is above the null), is it *small* (the high end is below the
margin, the smallest effect that matters), is it *ruled out* (the high end is below the margin less
a band, ``BAND`` of it). A *size* part asks: is the interval inside the paper's range widened by the
margin (there), or outside the range widened by the margin and the band (small and ruled out)?
The claim is there when every part is; small when any part is; ruled out when any part is. Then

- **reproduced**: there, and no part small;
- **real but small**: there, but a part below its margin (the effect is real and too small to matter);
- **not reproduced**: not there, and a part ruled out;
- **undecided**: neither.

Why this shape: narrowing an interval can only add answers, so a verdict never improves when its
interval is replaced by one that contains it (a wider interval keeps the verdict, loses "small"
(real but small -> reproduced or not reproduced) or becomes undecided); and "reproduced" and "not
reproduced" sit at least the band apart, so no move of an interval smaller than the band (a
margin times ``BAND``) turns one into the other.

A comparison with a baseline that is constant on the test items says nothing beyond "above
chance", so it is refused (``EmptyComparison``) and recorded as *dropped*, with its reason; a claim
compared with something (``versus``) must pass that baseline's scores, or say why there are none.
A claim whose choices (model, layer, alpha, lambda, threshold, best member, operating point) saw
the test outcomes is refused (``SelectionOnTest``)."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import store
from ..core.metrics import is_constant

VERDICTS = ("reproduced", "real but small", "not reproduced", "undecided")
#: The smallest effect that matters, by kind of claim, where a claim does not state its own.
DEFAULT_MARGIN = {"direction": 0.02, "size": 0.05}
#: The share of the margin that keeps "not reproduced" clear of "reproduced".
BAND = 0.5
#: What the choices behind a claim were made on (``Claim.selection``); "test" is refused.
SELECTIONS = {"none": "nothing was chosen", "train": "chosen on the training split",
              "validation": "chosen on the training and validation splits",
              "cross-fitted": "chosen inside the training folds of a cross-fit", "test": "chosen with test outcomes"}
_TEST_NOTE = re.compile(r"\b(chosen|selected|picked)\b[^.;]*\bon (the )?test\b", re.I)


class EmptyComparison(ValueError):
    """A claim against a baseline that is constant on the test items: it compares with chance."""


class SelectionOnTest(ValueError):
    """A claim whose choices were made with the test outcomes it is judged on."""


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, tested at this book's scale.

    ``direction`` +1: the paper says the quantity exceeds ``null``; -1: that it stays below it.
    ``margin``: the smallest effect that matters (None: ``DEFAULT_MARGIN`` of its kind).
    ``paper_low``/``paper_high`` make it a size claim against the paper's range. ``condition``: a
    second comparison (keys quantity, estimate, low, high and optionally null, direction, margin)
    that must hold too, or a list of them. ``n``: the problems (or events) the interval rests on;
    ``versus``: what it is compared with. ``selection``: what the choices behind it were made on,
    one of ``SELECTIONS`` (required by ``record``: a chapter must say it)."""

    claim_id: str
    chapter: str
    claim: str
    paper: str
    quantity: str
    estimate: float
    low: float
    high: float
    null: float = 0.0
    direction: int = 1
    margin: float | None = None
    n: int | None = None
    note: str = ""
    versus: str = ""
    paper_low: float | None = None
    paper_high: float | None = None
    condition: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = field(default=None, hash=False)
    selection: str | None = None

    @property
    def kind(self) -> str:
        return kind_of(asdict(self))

    @property
    def verdict(self) -> str:
        return verdict_of(asdict(self))


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
               and math.isfinite(v) for v in values)


def _margin(margin, kind: str) -> float:
    return DEFAULT_MARGIN[kind] if margin is None or (isinstance(margin, float) and math.isnan(margin)) else float(margin)


def _direction_answers(low, high, null=0.0, direction=1, margin=None) -> tuple[bool, bool, bool]:
    """(there, small, ruled out) of one direction part; all no when a number is missing."""
    if not _finite(low, high, null):
        return False, False, False
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    m = _margin(margin, "direction")
    lo, hi = (low - null, high - null) if direction == 1 else (null - high, null - low)
    return lo > 0, hi < m, hi < m * (1 - BAND)


def _size_answers(low, high, paper_low, paper_high, margin=None) -> tuple[bool, bool, bool]:
    """(inside the range widened by the margin, outside it widened by margin and band, the same)."""
    if not _finite(low, high):
        return False, False, False
    m = _margin(margin, "size")
    p_lo = -math.inf if paper_low is None else paper_low
    p_hi = math.inf if paper_high is None else paper_high
    inside = low >= p_lo - m and high <= p_hi + m
    outside = high < p_lo - m * (1 + BAND) or low > p_hi + m * (1 + BAND)
    return inside, outside, outside


def _label(parts: Sequence[tuple[bool, bool, bool]]) -> str:
    there = all(p[0] for p in parts)
    if there:
        return "real but small" if any(p[1] for p in parts) else "reproduced"
    return "not reproduced" if any(p[2] for p in parts) else "undecided"


def decide(estimate: float, low: float, high: float, null: float = 0.0, direction: int = 1,
           margin: float | None = None) -> str:
    """A direction part alone: reproduced when the interval lies on the paper's side of ``null``
    and reaches the margin; real but small when it lies on that side below the margin; not
    reproduced when it holds the null and stays below the margin less the band; else undecided
    (and whenever the estimate or interval is missing)."""
    if not _finite(estimate, low, high):
        return "undecided"
    return _label([_direction_answers(low, high, null, direction, margin)])


def decide_size(estimate: float, low: float, high: float, paper_low: float | None, paper_high: float | None,
                margin: float | None = None) -> str:
    """A size part alone: reproduced when the interval lies within the paper's range widened by
    ``margin``; not reproduced when it lies outside the range widened by the margin and the band;
    undecided otherwise (and whenever a number is missing)."""
    if not _finite(estimate, low, high):
        return "undecided"
    return _label([_size_answers(low, high, paper_low, paper_high, margin)])


def _field(row: Mapping[str, Any], key: str, default=None):
    """A stored claim's field, with None or NaN (a column a table filled in) read as missing."""
    v = row.get(key)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else v


def kind_of(row: Mapping[str, Any]) -> str:
    """'size' when the claim names the paper's range, else 'direction'."""
    return "size" if _field(row, "paper_low") is not None or _field(row, "paper_high") is not None else "direction"


def conditions_of(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A claim's conditions as a list (none, one mapping, or a list of them)."""
    conds = row.get("condition")
    return [conds] if isinstance(conds, Mapping) else list(conds) if isinstance(conds, (list, tuple)) else []


def _parts(row: Mapping[str, Any]) -> list[tuple[bool, bool, bool]]:
    if kind_of(row) == "size":
        own = _size_answers(row["low"], row["high"], _field(row, "paper_low"), _field(row, "paper_high"),
                            _field(row, "margin"))
    else:
        own = _direction_answers(row["low"], row["high"], float(_field(row, "null", 0.0)),
                                 int(_field(row, "direction", 1)), _field(row, "margin"))
    return [own] + [_direction_answers(c["low"], c["high"], float(_field(c, "null", 0.0)), int(_field(c, "direction", 1)),
                                       _field(c, "margin")) for c in conditions_of(row)]


def verdict_of(row: Mapping[str, Any]) -> str:
    """The verdict of a stored claim (a Claim's fields): the rule of the module docstring over the
    claim and its conditions; undecided whenever the claim's own numbers are missing."""
    if not _finite(row.get("estimate"), row.get("low"), row.get("high")):
        return "undecided"
    return _label(_parts(row))


def rules_markdown() -> str:
    """The rule as the verdict page states it, with this module's margins and band."""
    d, s, b = DEFAULT_MARGIN["direction"], DEFAULT_MARGIN["size"], BAND
    return "\n".join([
        "Every number is read on the claim's own scale, turned so that the paper's side is positive. The "
        f"**margin** is the smallest effect that matters: {d:g} unless a claim states its own (a size claim: "
        f"{s:g} around the paper's range).",
        "",
        "- **reproduced**: the whole interval lies on the paper's side of the null (e.g. the probe minus TF-IDF "
        "above 0), and it reaches the margin;",
        "- **real but small**: the whole interval lies on the paper's side, but below the margin: the effect is "
        "there and too small to matter;",
        f"- **not reproduced**: the interval holds the null and stays below the margin less a band of {b:.0%} of "
        f"it (below {d * (1 - b):g} by default): no effect that matters;",
        "- **undecided**: the interval is too wide to say: the run needs more problems, a better-matched test or "
        "a wider pool, and the row says how wide it is.",
        "",
        f"A *size* claim asks whether ours has the paper's size: reproduced when the interval lies within the "
        f"paper's range give or take the margin, not reproduced when it lies outside the range widened by the "
        f"margin and the band ({s * (1 + b):g} by default), undecided between. A claim with *conditions* (the "
        "comparison that could explain it away, or the accuracy beside the cost) counts as reproduced only when "
        "every part is on its side, real but small when one part is there only below its margin, and not reproduced "
        "when one part is ruled out.",
        "",
        "Two properties follow, and the tests check them: a verdict never improves when its interval is replaced "
        "by a wider one that contains it (it stays, drops *small*, or becomes undecided), and no move of an "
        f"interval smaller than the band ({d * b:g} for the default margin) turns *reproduced* into *not "
        "reproduced*.",
    ])


def _num(x: float) -> str:
    return f"{x:.3g}" if _finite(x) else "n/a"


def _reason(row: Mapping[str, Any], verdict: str) -> str:
    """Why the claim's own interval gives its verdict, in words and numbers."""
    if not _finite(row.get("estimate"), row.get("low"), row.get("high")):
        return "its estimate or interval could not be computed at this scale"
    if kind_of(row) == "size":
        m = _margin(_field(row, "margin"), "size")
        rng = f"the paper's {_num(_field(row, 'paper_low', -math.inf))}-{_num(_field(row, 'paper_high', math.inf))}"
        return {"reproduced": f"the whole interval lies within {rng}, give or take {m:g}",
                "not reproduced": f"the interval lies outside {rng} widened by {m * (1 + BAND):g}",
                }.get(verdict, f"the interval crosses the edge of {rng} give or take {m:g}")
    null, m = float(_field(row, "null", 0.0)), _margin(_field(row, "margin"), "direction")
    side = "above" if int(_field(row, "direction", 1)) == 1 else "below"
    edge = null + m if side == "above" else null - m
    there, small, ruled = _direction_answers(row["low"], row["high"], null, int(_field(row, "direction", 1)), _field(row, "margin"))
    if there and not small:
        return f"the whole interval lies {side} {null:g} and reaches {edge:g}, the smallest effect that matters"
    if there:
        return f"the whole interval lies {side} {null:g} but short of {edge:g}: real, smaller than the margin {m:g}"
    if ruled:
        return (f"the interval holds {null:g} and stays short of {null + (m if side == 'above' else -m) * (1 - BAND):g}: "
                "no effect that matters")
    return f"the interval holds {null:g} and reaches past {edge:g}: it cannot tell"


def sentence(claim: Claim | Mapping[str, Any]) -> str:
    """One Markdown sentence stating a recorded claim's outcome, generated from its verdict and
    interval (the only way a chapter states one): the verdict, the claim, the number with its
    interval and n, what it is compared with, why the rule decides so, each condition, its id."""
    row = asdict(claim) if isinstance(claim, Claim) else dict(claim)
    v = verdict_of(row)
    n = _field(row, "n")
    versus = f", against {row['versus']}" if _field(row, "versus") else ""
    conds = "".join(f" Condition, {c.get('quantity', 'condition')}: {_num(c.get('estimate'))} "
                    f"[{_num(c.get('low'))}, {_num(c.get('high'))}], "
                    f"{decide(c.get('estimate'), c.get('low'), c.get('high'), float(_field(c, 'null', 0.0)), int(_field(c, 'direction', 1)), _field(c, 'margin'))}."
                    for c in conditions_of(row))
    return (f"**{v.capitalize()}**: {row['claim']}. {row['quantity']}: {_num(row.get('estimate'))} "
            f"[{_num(row.get('low'))}, {_num(row.get('high'))}]" + (f", n = {int(n)}" if n is not None else "")
            + f"{versus}; {_reason(row, v)}.{conds} `{row['claim_id']}`")


def dropped_sentence(row: Mapping[str, Any]) -> str:
    """One Markdown sentence for a claim a chapter did not test: the claim, its own reason, its id."""
    return f"**Not tested**: {row['claim']} (chapter {row['chapter']}): {str(row['reason']).rstrip('.')}. `{row['claim_id']}`"


def _folder(profile: str) -> Path:
    return store.data_dir() / "verdicts" / "".join(c if c.isalnum() or c in "-_." else "_" for c in str(profile))


def _check(claim: Claim, baseline_scores, no_baseline: str | None) -> str:
    """Refuse what a referee would refuse; return how the baseline was checked (stored with it)."""
    where = f"claim {claim.claim_id!r} ({claim.claim})"
    if claim.n is None or isinstance(claim.n, bool) or not isinstance(claim.n, (int, np.integer)) or claim.n < 1:
        raise ValueError(f"{where}: n must be the number of problems or events it rests on (a positive integer), "
                         f"got {claim.n!r}")
    for name in ("estimate", "low", "high"):
        v = getattr(claim, name)
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool):
            raise ValueError(f"{where}: {name} must be a number (NaN where it cannot be computed), got {v!r}")
    if claim.selection not in SELECTIONS:
        raise ValueError(f"{where}: selection must say what its choices were made on, one of {sorted(SELECTIONS)}, "
                         f"got {claim.selection!r}")
    if claim.selection == "test" or _TEST_NOTE.search(claim.note or ""):
        raise SelectionOnTest(f"{where}: its choices were made with the test outcomes it is judged on "
                              f"(selection {claim.selection!r}, note {claim.note!r}); choose on training or "
                              "validation data, or cross-fit inside the folds")
    if baseline_scores is None:
        if claim.versus and not (no_baseline or "").strip():
            raise ValueError(f"{where}: it is compared with {claim.versus!r}; pass baseline_scores= (that "
                             "baseline's scores on the test items) or no_baseline= (why there are none, e.g. a fixed number)")
        return f"no baseline scores: {no_baseline}" if no_baseline else "no comparison"
    named = dict(baseline_scores) if isinstance(baseline_scores, Mapping) else {claim.versus or "unnamed": baseline_scores}
    for name, scores in named.items():
        if is_constant(scores):
            raise EmptyComparison(f"{where}: the baseline it is compared with ({name}) gives every test item the "
                                  "same score, so the comparison only says 'above chance'; record it with verdicts.drop instead")
    return "; ".join(f"{name}: {len(np.asarray(s))} scores, not constant" for name, s in named.items())


def chapter_files(profile: str, chapter: str) -> list[Path]:
    """The files of every claim (and dropped claim) ``chapter`` ("06") recorded for ``profile``."""
    folder = _folder(profile)
    return [f for f in [*folder.glob("*.json"), *(folder / "dropped").glob("*.json")]
            if str(store.read_json(f).get("chapter")) == chapter]


def start_chapter(profile: str, chapter: str) -> None:
    """Forget what ``chapter`` recorded in an earlier run (claims and dropped ones alike), so a
    claim it no longer makes, or now drops, does not linger in the verdict table."""
    for f in chapter_files(profile, chapter):
        f.unlink()


def record(profile: str, claim: Claim, baseline_scores: Sequence[float] | np.ndarray | Mapping[str, Any] | None = None,
           *, no_baseline: str | None = None) -> Path:
    """Store one tested claim for ``profile`` (the last run of a chapter replaces its claims).
    Refused without ``n``, without ``selection`` or with a selection on test (``SelectionOnTest``),
    for a comparison (``versus``) with neither ``baseline_scores`` (the compared method's scores on
    the test items; a mapping name -> scores for several) nor ``no_baseline`` (why there are none),
    and (``EmptyComparison``) when a baseline's scores are constant."""
    checked = _check(claim, baseline_scores, no_baseline)
    folder = _folder(profile)
    (folder / "dropped" / f"{claim.claim_id}.json").unlink(missing_ok=True)
    row = {k: (float(v) if isinstance(v, (np.floating, np.integer)) and k != "n" else v) for k, v in asdict(claim).items()}
    row["n"] = int(claim.n)
    return store.write_json(folder / f"{claim.claim_id}.json",
                            {**row, "kind": claim.kind, "verdict": claim.verdict, "baseline_check": checked,
                             "recorded": store.now_iso(), "versions": store.versions()})


def drop(profile: str, claim_id: str, chapter: str, claim: str, reason: str) -> Path:
    """Record that a claim was not tested, and why (a constant baseline, too few events...):
    chapter 11 counts these beside the verdicts, so nothing disappears without a word."""
    folder = _folder(profile)
    (folder / f"{claim_id}.json").unlink(missing_ok=True)
    return store.write_json(folder / "dropped" / f"{claim_id}.json",
                            {"claim_id": claim_id, "chapter": chapter, "claim": claim, "reason": reason,
                             "recorded": store.now_iso()})


def table(profile: str) -> pd.DataFrame:
    """Every claim recorded for ``profile``, in chapter order, with its kind and verdict (computed
    again with this module's rule, whatever the stored file says)."""
    rows = [store.read_json(f) for f in sorted(_folder(profile).glob("*.json"))]
    if not rows:
        return pd.DataFrame(columns=["chapter", "claim", "paper", "estimate", "low", "high", "n", "kind", "verdict"])
    df = pd.DataFrame(rows)
    for col, default in (("versus", ""), ("paper_low", None), ("paper_high", None), ("condition", None),
                         ("selection", None), ("margin", None)):
        if col not in df:
            df[col] = default
    records = df.to_dict("records")
    df["kind"] = [kind_of(r) for r in records]
    df["verdict"] = [verdict_of(r) for r in records]
    return df.sort_values(["chapter", "claim_id"]).reset_index(drop=True)


def dropped(profile: str) -> pd.DataFrame:
    """The claims a chapter did not test, with its reason."""
    rows = [store.read_json(f) for f in sorted((_folder(profile) / "dropped").glob("*.json"))]
    return (pd.DataFrame(rows).sort_values(["chapter", "claim_id"]).reset_index(drop=True) if rows
            else pd.DataFrame(columns=["claim_id", "chapter", "claim", "reason"]))
